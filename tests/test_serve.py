"""Continuous collection: `kstat serve` until a signal, its memory bounded under churn, the same
stream in the library, and its NDJSON followed by a real log shipper (rsyslog) across a
rotation."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import kstat
from kstat.sink import RECORD_KEYS
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.kstat_process import KstatProcess, line_of
from tests.names import KT
from tests.statsd_daemon import free_port
from tests.windows import LoadFilter

pytestmark = pytest.mark.kernel


def serve(*arguments: str) -> KstatProcess:
    # An endpoint of its own, so that tests never meet a kstat someone left on the default port.
    port = free_port(1)
    process = KstatProcess(
        ["serve", "--interval", "100ms", "--sink", f"prometheus://127.0.0.1:{port}", *arguments]
    )
    process.wait_for_window()
    return process


@pytest.mark.parametrize("ending", [signal.SIGINT, signal.SIGTERM])
def test_serve_runs_until_a_signal_then_reports_the_whole_run(
    load_filter: LoadFilter, tmp_path: Path, ending: signal.Signals
) -> None:
    target = load_filter(f"{KT}serve")
    report_path = tmp_path / "run.json"
    kstat = serve("-o", str(report_path))
    for _ in range(3):
        target.send(300)
        time.sleep(0.3)
    kstat.signal(ending)
    returncode, stdout = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert stdout == ""  # a daemon: the report goes where it was asked to, not to stdout
    report = kstat_report(report_path)
    assert line_of(report, target.program.id)["run_count"] == 900
    assert report["stopped_by"] == ending.name
    assert report["requested_duration_ns"] is None


def kstat_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_under_churn_the_report_keeps_its_totals_and_forgets_old_programs(tmp_path: Path) -> None:
    """Programs load, run and unload for the whole run: only the last few unloaded ones are
    listed, but every run is in the totals."""
    report_path = tmp_path / "run.json"
    kstat = serve("-o", str(report_path), "--keep-unloaded", "5", "--name", f"^{KT}churn$")
    sent = 0
    for _ in range(40):
        with SocketFilter(f"{KT}churn") as program, LoopbackTarget(program) as target:
            target.send(7)
            sent += 7
            time.sleep(0.25)  # seen by at least one pass while loaded
    time.sleep(0.3)
    kstat.signal(signal.SIGTERM)
    returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    report = kstat_report(report_path)
    assert report["num_programs"] == 5
    assert report["programs_left_out"] == 35
    assert report["total_run_count"] == sent
    assert all(line["unloaded_during_window"] for line in report["program_stats"].values())


async def test_the_library_streams_intervals_that_add_up(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}stream")
    counted = 0
    async with kstat.stream(interval="50ms", select=kstat.ProgramFilter(name=f"^{KT}stream$")) as intervals:
        await trio.to_thread.run_sync(target.send, 123)
        async for interval in intervals:
            line = interval.delta.lines.get(f"{KT}stream")
            counted += line.run_count if line is not None else 0
            if counted >= 123:
                intervals.stop()
        so_far = intervals.session
    assert counted == 123
    assert so_far.report.program(f"{KT}stream").run_count == 123


RSYSLOG_CONFIG = """
global(workDirectory="{work}" maxMessageSize="4m")
module(load="imfile" mode="inotify")
module(load="mmjsonparse")
template(name="parsed" type="list") {{ property(name="$!all-json") constant(value="\\n") }}
ruleset(name="kstat") {{
  action(type="mmjsonparse" cookie="")
  if $parsesuccess == "OK" then {{
    action(type="omfile" file="{parsed}" template="parsed")
  }} else {{
    action(type="omfile" file="{unparsed}")
  }}
}}
input(type="imfile" file="{stream}" tag="kstat" ruleset="kstat" addMetadata="off" freshStartTail="off")
"""


@pytest.mark.parametrize("layout", ["nested", "records"])
def test_rsyslog_ships_every_interval_parsed_in_order_across_a_rotation(
    load_filter: LoadFilter, tmp_path: Path, layout: str
) -> None:
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not Path(rsyslogd).exists():
        pytest.skip("rsyslog is not installed (Debian's rsyslog package); run `make deps`")
    stream, parsed, unparsed = (
        tmp_path / "kstat.ndjson",
        tmp_path / "parsed.ndjson",
        tmp_path / "unparsed.log",
    )
    (tmp_path / "work").mkdir()
    config = tmp_path / "rsyslog.conf"
    config.write_text(
        RSYSLOG_CONFIG.format(work=tmp_path / "work", parsed=parsed, unparsed=unparsed, stream=stream)
    )
    shipper = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(config), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = load_filter(f"{KT}ship")
    try:
        # Its own program alone: another tenant's 10,000 would make the summary a line longer
        # than the shipper takes (rsyslog's message size), which is not what this is about.
        kstat = serve("--name", f"^{KT}ship$", "--sink", f"ndjson:{stream}?layout={layout}")
        for round_ in range(6):
            target.send(50)
            time.sleep(0.3)
            if round_ == 2:
                # logrotate's way: rename, then SIGHUP, and kstat writes a new file.
                stream.rename(tmp_path / "kstat.ndjson.1")
                kstat.signal(signal.SIGHUP)
        kstat.signal(signal.SIGTERM)
        returncode, _ = kstat.finish()
        assert returncode == 0, kstat.stderr_lines
        written = [
            json.loads(line)
            for path in (tmp_path / "kstat.ndjson.1", stream)
            for line in path.read_text().splitlines()
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_lines(parsed)) < len(written):
            time.sleep(0.2)
    finally:
        shipper.terminate()
        shipper.wait(20)
    shipped = _lines(parsed)
    assert any(entry["event"] == "reopened" for entry in kstat.log)
    assert (tmp_path / "kstat.ndjson.1").stat().st_size > 0 and stream.stat().st_size > 0
    assert shipped == written  # every line, parsed, in order, none lost or repeated
    if layout == "nested":
        intervals = [line for line in shipped if line["kind"] == "interval"]
        shipped_runs = sum(
            line["program_stats"].get(f"{KT}ship", {}).get("run_count", 0) for line in intervals
        )
    else:
        assert all(list(line) == list(RECORD_KEYS) for line in shipped)  # nulls and order kept too
        intervals = [line for line in shipped if line["kind"] == "total"]
        shipped_runs = sum(
            line["run_count"] for line in shipped if line["kind"] == "program" and line["name"] == f"{KT}ship"
        )
        summary = [line for line in shipped if line["kind"] == "summary" and line["name"] == f"{KT}ship"]
        assert [line["run_count"] for line in summary] == [300]
    assert [line["sequence"] for line in intervals] == list(range(1, len(intervals) + 1))
    assert shipped_runs == 300
    assert not unparsed.exists()


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
