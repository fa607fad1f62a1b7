"""Which program, of which process: full BTF names, owners, attachments, churn and filters."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kstat
from kstat.testing.loader import LoopbackTarget, SocketFilter, XdpPass
from tests.holders import HolderProcess, program_holder
from tests.kstat_process import KstatProcess, run_kstat
from tests.names import KT, TOKEN, host_name
from tests.windows import LoadFilter

REPO = Path(__file__).parents[1]
# Full (BTF) names are names on the host too: they carry the suite's token.
LONG_NAME = f"flow_exporter_parse_ipv6_extension_headers_{TOKEN}"
SECOND_NAME = f"flow_exporter_second_program_long_name_{TOKEN}"


@pytest.fixture
def holders() -> Iterator[list[HolderProcess]]:
    started: list[HolderProcess] = []
    yield started
    for holder in started:
        holder.close()


def lines_by_id(report: dict[str, Any]) -> dict[int, tuple[str, dict[str, Any]]]:
    return {line["id"]: (key, line) for key, line in report["program_stats"].items()}


@pytest.mark.kernel
def test_the_full_btf_name_is_reported_and_the_kernels_kept(load_filter: LoadFilter) -> None:
    with SocketFilter(f"{KT}btf", function_name=LONG_NAME) as program, LoopbackTarget(program) as target:
        with kstat.collect_sync(interval="50ms") as session:
            target.send(10)
        line = session.report.program(LONG_NAME)
        assert (line.kernel_name, line.run_count) == (f"{KT}btf", 10)
        assert [p.name for p in kstat.read_programs() if p.id == program.stats().id] == [LONG_NAME]


@pytest.mark.kernel
def test_two_agents_with_the_same_names_one_leaving_mid_window(
    holders: list[HolderProcess], tmp_path: Path
) -> None:
    """The issue's acceptance run: nothing merged, nothing lost, every line attributed."""
    specs = (f"{KT}agent:{LONG_NAME}", f"{KT}agent2:{SECOND_NAME}")
    staying, leaving = program_holder(*specs), program_holder(*specs)
    holders += [staying, leaving]
    output = tmp_path / "r.json"
    kstat_run = KstatProcess(["-duration", "3s", "--interval", "250ms", "-output", str(output)])
    kstat_run.wait_for_window()
    staying.tell("send 0 100")
    staying.tell("send 1 200")
    leaving.tell("send 0 300")
    leaving.tell("send 1 400")
    time.sleep(1.0)
    leaving.tell("unload 0")
    leaving.tell("unload 1")
    returncode, _ = kstat_run.finish()
    assert returncode == 0, kstat_run.stderr_lines
    report = json.loads(output.read_text())
    lines = lines_by_id(report)
    expected_runs = {staying.ids[0]: 100, staying.ids[1]: 200, leaving.ids[0]: 300, leaving.ids[1]: 400}
    for holder in (staying, leaving):
        for index, program_id in enumerate(holder.ids):
            key, line = lines[program_id]
            full_name = LONG_NAME if index == 0 else SECOND_NAME
            assert key == f"{full_name}#{program_id}"
            assert line["name"] == full_name
            assert line["run_count"] == expected_runs[program_id]
            assert [owner["pid"] for owner in line["owners"]] == [holder.pid]
            assert line["unloaded_during_window"] is (holder is leaving)
    left = lines[leaving.ids[0]][1]
    assert 20 < left["window_coverage_percent"] < 80
    assert lines[staying.ids[0]][1]["window_coverage_percent"] == 100


@pytest.mark.kernel
def test_filters_select_programs_and_totals_follow(holders: list[HolderProcess], tmp_path: Path) -> None:
    first, second = program_holder(f"{KT}fa", f"{KT}fb"), program_holder(f"{KT}fc")
    holders += [first, second]

    def collect(*filters: str) -> dict[str, Any]:
        run = KstatProcess(["-duration", "800ms", "--interval", "200ms", *filters])
        run.wait_for_window()
        first.tell("send 0 10")
        first.tell("send 1 20")
        second.tell("send 0 40")
        returncode, stdout = run.finish()
        assert returncode == 0, run.stderr_lines
        report: dict[str, Any] = json.loads(stdout)
        return report

    by_pid = collect("--pid", str(first.pid))
    assert sorted(by_pid["program_stats"]) == [f"{KT}fa", f"{KT}fb"]
    assert by_pid["total_run_count"] == 30
    assert by_pid["filter"] == {"pids": [first.pid]}

    by_name = collect("--name", f"^{KT}f[bc]$")
    assert sorted(by_name["program_stats"]) == [f"{KT}fb", f"{KT}fc"]
    assert by_name["total_run_count"] == 60

    by_id_and_type = collect("--id", str(second.ids[0]), "--type", "socket_filter")
    assert list(by_id_and_type["program_stats"]) == [f"{KT}fc"]
    assert by_id_and_type["filter"] == {"ids": [second.ids[0]], "types": ["SocketFilter"]}

    by_command = collect("--comm", first.command, "--name", f"{KT}f")
    assert sorted(by_command["program_stats"]) == [f"{KT}fa", f"{KT}fb", f"{KT}fc"]

    nothing = collect("--type", "XDP", "--name", f"{KT}f")
    assert (nothing["num_programs"], nothing["total_run_count"]) == (0, 0)


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [(["--type", "teapot"], "unknown program type 'teapot'"), (["--name", "("], "bad name pattern")],
)
def test_bad_filters_are_usage_errors(arguments: list[str], complaint: str) -> None:
    for command in ([], ["list"]):
        completed = run_kstat([*command, *arguments])
        assert completed.returncode == 2
        assert complaint in completed.stderr
        assert "Traceback" not in completed.stderr


@pytest.mark.kernel
def test_list_shows_owners_and_attachments(holders: list[HolderProcess]) -> None:
    holder = program_holder(f"{KT}list:{LONG_NAME}")
    holders.append(holder)
    device = host_name("a")
    subprocess.run(["ip", "link", "add", device, "type", "veth", "peer", "name", host_name("b")], check=True)
    try:
        with XdpPass(f"{KT}xdp", device):
            compact = run_kstat(["list", "--json", "--name", f"{KT}"]).stdout
            pretty = run_kstat(["list", "--pretty", "--name", f"{KT}"]).stdout
            table = run_kstat(["list", "--name", f"{KT}"]).stdout
    finally:
        subprocess.run(["ip", "link", "del", device], check=True)
    listed = json.loads(compact)
    assert compact.count("\n") == 1 and pretty.count("\n") > len(listed) * 10  # one line; indented
    # The same programs (the load time's wall clock may differ by nanoseconds between runs).
    assert [{**program, "loaded_at": ""} for program in json.loads(pretty)] == [
        {**program, "loaded_at": ""} for program in listed
    ]
    by_name = {program["kernel_name"]: program for program in listed}
    assert by_name[f"{KT}list"]["name"] == LONG_NAME
    assert by_name[f"{KT}list"]["owners"] == [{"pid": holder.pid, "command": holder.command}]
    assert by_name[f"{KT}xdp"]["type"] == "XDP"
    assert by_name[f"{KT}xdp"]["attachments"] == [f"xdp/native:{device}"]  # a link; netlink says the mode
    header, *rows = table.splitlines()
    assert header.split() == [
        *("ID", "TYPE", "NAME", "RUN_CNT", "RUN_TIME_NS"),
        *("OWNERS", "RUNS", "IN", "ATTACHED"),
    ]
    assert any(LONG_NAME in row and f"{holder.pid}/{holder.command}" in row for row in rows)
    assert any(f"xdp/native:{device}" in row for row in rows)
