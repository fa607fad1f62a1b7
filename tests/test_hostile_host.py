"""A crafted host (tests/hostile_host.py): comm, cgroup, unit, pod, namespace, container and
device names that are not UTF-8, hold escape sequences and Markdown, and a cgroup path of 10 kB.
Every command and sink keeps working, reports them exactly, and no terminal or Markdown reader
obeys them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from markdown_it import MarkdownIt
from prometheus_client.parser import text_string_to_metric_families

from tests.hostile_host import HostileHost
from tests.kstat_process import KstatProcess, run_kstat
from tests.listings import command_path, lean_path, listing_columns, reported, written
from tests.names import KT, TOKEN
from tests.statsd_daemon import StatsdDaemon, free_port, running_statsd
from tests.test_top import REPO, Tmux

pytestmark = pytest.mark.kernel

# What kstat must report, written out (not computed with kstat's own decoding): each byte that
# is not UTF-8 is U+FFFD, every other character kept.
TITLE_COMMAND = "kpr-\ufffd\x1b]0;pw\x07"
CLEAR_COMMAND = "\x1b[2J\ufffd|<!--"
UNIT = f"kt{TOKEN}-\ufffd\x1b]0;unit\x07.service"
POD = "web-\ufffd\x1b[2J"
NAMESPACE = "team\x1b]0;ns\x07"
CONTAINER = "c|`x`<!--\n**"
DEVICE = f"kt{TOKEN}\x1b[2J\ufffd"
SELECTED = f"^{KT}h"
# What no terminal may receive from a name: ESC, BEL, a newline inside a line, CSI.
_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileHost]:
    with HostileHost(tmp_path_factory.mktemp("hostile")) as built:
        yield built


@pytest.fixture
def top_in_tmux(tmp_path: Path) -> Iterator[Callable[[str], Tmux]]:
    """`kstat top ARGUMENTS` in a tmux terminal; its report, stderr and status kept beside."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (Debian's tmux package); run `make deps`")
    sessions: list[Tmux] = []

    def start(arguments: str) -> Tmux:
        script = (
            f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m kstat top {arguments}"
            f' > {tmp_path}/report.json 2> {tmp_path}/stderr; echo "exit $?" > {tmp_path}/status;'
            " echo KSTAT-DONE; sleep 60"
        )
        session = Tmux(f"kstat-hostile-{os.getpid()}", f"bash -c {shlex.quote(script)}", width=250)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()


@pytest.fixture
def statsd(tmp_path: Path) -> Iterator[StatsdDaemon]:
    with running_statsd(tmp_path) as daemon:
        yield daemon


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {line["name"]: line for line in report["program_stats"].values()}


def assert_names_exact(programs: dict[str, dict[str, Any]], host: HostileHost) -> None:
    """The names a hostile tenant chose, as it chose them, where the report puts them."""
    (unit_owner,) = programs[f"{KT}hunit"]["owners"]
    assert (unit_owner["pid"], unit_owner["command"], unit_owner["unit"]) == (
        host.holders[0].pid,
        TITLE_COMMAND,
        UNIT,
    )
    (pod_owner,) = programs[f"{KT}hpod"]["owners"]
    assert pod_owner | {} == {
        "pid": host.holders[1].pid,
        "command": CLEAR_COMMAND,
        "container_id": host.container_id,
        "container_name": CONTAINER,
        "pod_uid": host.pod_uid,
        "pod": POD,
        "namespace": NAMESPACE,
        "qos_class": "BestEffort",
    }
    assert programs[f"{KT}hdeep"]["attachments"] == [f"cgroup/egress:{host.deep_path}"]
    assert len(host.deep_path.encode()) > 10_000
    (xdp_place,) = programs[f"{KT}hxdp"]["attachments"]
    assert xdp_place.startswith("xdp") and xdp_place.endswith(f":{DEVICE}")


def scrape(port: int, showing: str = f"{KT}hpod", timeout_s: float = 20) -> str:
    """The endpoint's exposition, once it shows `showing` (the first pass may still be due)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text: str = response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:  # 503: no pass exposed yet
                raise
            text = ""
        if showing in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_the_report_and_every_sink_carry_the_names_exactly(
    host: HostileHost, tmp_path: Path, statsd: StatsdDaemon
) -> None:
    report, nested, records = tmp_path / "r.json", tmp_path / "s.ndjson", tmp_path / "records.ndjson"
    port = free_port(1)
    kstat = KstatProcess(
        [
            "-duration",
            "3s",
            "--interval",
            "250ms",
            "--host-root",
            str(host.host_root),
            "--name",
            SELECTED,
            "-o",
            str(report),
            "--sink",
            f"ndjson:{nested}",
            "--sink",
            f"ndjson:{records}?layout=records",
            "--sink",
            f"statsd://127.0.0.1:{statsd.udp_port}?prefix=kt&tags=dogstatsd",
            "--sink",
            f"prometheus://127.0.0.1:{port}",
        ]
    )
    kstat.wait_for_window()
    host.holders[0].send(300)
    host.holders[1].send(200)
    exposition = scrape(port)
    returncode, stdout = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert stdout == ""
    assert not kstat.errors()
    data = json.loads(report.read_text(encoding="utf-8"))
    programs = by_name(data)
    assert sorted(programs) == [f"{KT}hdeep", f"{KT}hpod", f"{KT}hunit", f"{KT}hxdp"]
    assert (programs[f"{KT}hunit"]["run_count"], programs[f"{KT}hpod"]["run_count"]) == (300, 200)
    assert_names_exact(programs, host)
    # NDJSON, nested: the last line is the same report.
    lines = [json.loads(line) for line in nested.read_text(encoding="utf-8").splitlines()]
    assert_names_exact(by_name(lines[-1]), host)
    # NDJSON records: the owner and the places on each of the program's records.
    found = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines()]
    commands = {record["owner_command"] for record in found if record["name"] == f"{KT}hpod"}
    assert commands == {CLEAR_COMMAND}
    places = {record["attachment"] for record in found if record["name"] == f"{KT}hdeep"}
    assert places == {f"cgroup/egress:{host.deep_path}"}
    # StatsD: the tags made safe, the counts exact, nothing the server could not read.
    counters = statsd.counters()
    assert counters["statsd.bad_lines_seen"] == 0
    tagged = [key for key in counters if key.startswith(f"kt.program.run_count;program={KT}hpod;")]
    assert [counters[key] for key in tagged] == [200]
    assert ";pod=web-___2J;namespace=team__0_ns_;container=c__x___--___" in tagged[0]
    # Prometheus: the info series holds the names exactly (the exposition escapes what it must).
    info = {
        sample.labels["name"]: sample.labels
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "kstat_program_info"
    }
    assert (info[f"{KT}hpod"]["pod"], info[f"{KT}hpod"]["container"]) == (POD, CONTAINER)
    assert info[f"{KT}hunit"]["unit"] == UNIT
    assert f"{host.holders[0].pid}/{TITLE_COMMAND}" in info[f"{KT}hunit"]["owners"]
    promtool = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True, check=False
    )
    assert "error" not in promtool.stdout + promtool.stderr, promtool.stdout + promtool.stderr


def assert_terminal_safe(text: str) -> None:
    assert not _TERMINAL_CONTROL.findall(text), ascii(text)


def test_list_shows_the_names_and_obeys_none_of_them(host: HostileHost) -> None:
    listed = run_kstat(["list", "--json", "--host-root", str(host.host_root), "--name", SELECTED])
    assert listed.returncode == 0, listed.stderr
    programs = {program["name"]: program for program in json.loads(listed.stdout)}
    assert_names_exact(programs, host)
    table = run_kstat(["list", "--host-root", str(host.host_root), "--name", SELECTED])
    assert table.returncode == 0, table.stderr
    assert_terminal_safe(table.stdout)
    rows = table.stdout.splitlines()
    assert len(rows) == 5  # the heading and the four programs: no name added a line
    unit_row = next(row for row in rows if f"{KT}hunit" in row)
    assert (
        "kpr-\ufffd\\x1b]0;pw\\x07" in unit_row and f"kt{TOKEN}-\ufffd\\x1b]0;unit\\x07.service" in unit_row
    )
    pod_row = next(row for row in rows if f"{KT}hpod" in row)
    assert "team\\x1b]0;ns\\x07/web-\ufffd\\x1b[2J/c|`x`<!--\\x0a**" in pod_row


def test_lists_lean_path_writes_every_name_as_the_command_does(host: HostileHost) -> None:
    """kstat list without a filter (its lean path: names decoded, escaped and laid out by its
    own code) against the command's (kstat's program values): the same bytes in each form."""
    ids = {*host.holders[0].ids, *host.holders[1].ids, host.deep_program_id, host.xdp_program_id}
    lean, boot_to_wall_ns = lean_path(ids, host.host_root)
    assert len(lean) == len(ids) == 4
    command = command_path(ids, boot_to_wall_ns, host.host_root)
    assert written(lean) == written(listing_columns(command))
    # As kstat list wrote them before its lean path: orjson's escaping of every name.
    compact, pretty, _ = written(lean)
    assert compact.encode() == orjson.dumps(reported(command), option=orjson.OPT_APPEND_NEWLINE)
    option = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    assert pretty.encode() == orjson.dumps(reported(command), option=option)
    assert_names_exact({entry["name"]: entry for entry in json.loads(compact)}, host)


def test_run_and_serve_report_the_names(host: HostileHost, tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    completed = run_kstat(
        [
            "run",
            "--scope",
            "host",
            "--host-root",
            str(host.host_root),
            "--name",
            SELECTED,
            "-o",
            str(report),
            "--",
            "true",
        ]
    )
    assert completed.returncode == 0, completed.stderr
    assert_names_exact(by_name(json.loads(report.read_text())), host)
    served = tmp_path / "serve.json"
    port = free_port(1)
    kstat = KstatProcess(
        [
            "serve",
            "--interval",
            "100ms",
            "--host-root",
            str(host.host_root),
            "--name",
            SELECTED,
            "--sink",
            f"prometheus://127.0.0.1:{port}",
            "-o",
            str(served),
        ]
    )
    kstat.wait_for_window()
    assert f'pod="{POD}"' in scrape(port)
    kstat.signal(signal.SIGTERM)
    assert kstat.finish()[0] == 0, kstat.stderr_lines
    assert_names_exact(by_name(json.loads(served.read_text())), host)


def test_compare_by_pod_and_unit_keeps_markdown_and_tables_whole(host: HostileHost, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    completed = run_kstat(
        ["-duration", "300ms", "--host-root", str(host.host_root), "--name", SELECTED, "-o", str(report)]
    )
    assert completed.returncode == 0, completed.stderr
    for by, expected in (("pod", f"{NAMESPACE}/{POD}"), ("unit", UNIT)):
        both = [str(report), str(report)]
        markdown = run_kstat(["compare", "--show-idle", "--by", by, "--format", "markdown", *both])
        assert markdown.returncode == 0, markdown.stderr
        tokens = MarkdownIt("commonmark").enable("table").parse(markdown.stdout)
        assert not [token for token in tokens if token.type.startswith("html")]
        # The programs' table (the owners' whole cost follows in a table of its own).
        first_table = tokens[
            : next(index for index, token in enumerate(tokens) if token.type == "table_close")
        ]
        rows = [token for token in first_table if token.type == "tr_open"]
        assert len(rows) == 1 + 2 + 1  # heading, the group, the rest, (total)
        cells = [
            "".join(child.content for child in token.children or [] if child.type == "text")
            for token in tokens
            if token.type == "inline"
        ]
        shown = expected.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
        assert any(cell.startswith(shown) for cell in cells), cells
        table = run_kstat(["compare", "--show-idle", "--by", by, str(report), str(report)])
        assert table.returncode == 0, table.stderr
        assert_terminal_safe(table.stdout)
        assert shown in table.stdout


def test_top_shows_the_names_and_keeps_its_screen_and_title(
    host: HostileHost, top_in_tmux: Callable[[str], Tmux], tmp_path: Path
) -> None:
    top = top_in_tmux(f"--interval 200ms --host-root {host.host_root} --name '{SELECTED}'")
    screen = top.wait_for(lambda screen: f"{KT}hunit" in screen and f"{KT}hpod" in screen)
    assert "kpr-\ufffd\\x1b]0;pw\\x07" in screen  # shown, spelt out
    assert "kstat top" in screen.splitlines()[0]  # the header was not cleared away
    title = subprocess.run(
        ["tmux", "display", "-p", "-t", top.name, "#{pane_title}"], capture_output=True, text=True, check=True
    ).stdout
    assert "pw" not in title and "ns" not in title.replace(os.uname().nodename, "")
    top.keys("/", "h", "p", "o", "d", "Enter", "Enter")  # the pod's program, its detail
    screen = top.wait_for(lambda screen: "owners:" in screen)
    assert "\\x1b[2J\ufffd|<!--" in screen and "attached: nowhere" in screen
    top.keys("Escape", "q")
    top.wait_for(lambda screen: "KSTAT-DONE" in screen)
    assert (tmp_path / "status").read_text().strip() == "exit 0"
    assert_names_exact(by_name(json.loads((tmp_path / "report.json").read_text())), host)
