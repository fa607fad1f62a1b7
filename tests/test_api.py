"""The library API, used only through `import kstat`, as an embedding test harness would."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import kstat
from tests.names import KT
from tests.windows import LoadFilter


@pytest.mark.kernel
async def test_collect_around_a_block(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}api")
    async with kstat.collect(interval="50ms") as session:
        await trio.to_thread.run_sync(target.send, 3_000)
        so_far = await session.report_so_far()
        assert so_far.program(f"{KT}api").run_count == 3_000
        await trio.to_thread.run_sync(target.send, 1_000)
    report = session.report
    line = report.program(f"{KT}api")
    assert line.run_count == 4_000
    assert report.program(line.id) == line
    assert line in report.programs
    assert report.stopped_by == "block ended"
    assert report.total_run_count >= 4_000


@pytest.mark.kernel
async def test_report_is_not_there_before_the_block_ends() -> None:
    async with kstat.collect(interval=0.05) as session:
        with pytest.raises(RuntimeError, match="still open"):
            _ = session.report


@pytest.mark.kernel
async def test_duration_can_end_the_window_before_the_block(load_filter: LoadFilter) -> None:
    load_filter(f"{KT}api_dur")
    # The test's own program only: a pass over a busy host's every program (another suite's
    # 10,000 among them) could take longer than the window.
    select = kstat.ProgramFilter(name=f"^{KT}api_dur$")
    async with kstat.collect(interval="50ms", duration="200ms", select=select) as session:
        await trio.sleep(0.6)
    assert 200_000_000 <= session.report.collection_duration_ns < 500_000_000


@pytest.mark.kernel
async def test_an_exception_in_the_block_is_the_callers_own() -> None:
    with pytest.raises(ZeroDivisionError):
        async with kstat.collect(interval="50ms"):
            _ = 1 / 0


@pytest.mark.kernel
def test_collect_sync_for_plain_code(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}sync")
    with kstat.collect_sync(interval="50ms") as session:
        target.send(250)
        assert session.report_so_far().program(f"{KT}sync").run_count == 250
        target.send(250)
    assert session.report.program(f"{KT}sync").run_count == 500


@pytest.mark.kernel
def test_read_programs_once(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}read")
    by_id = {program.id: program for program in kstat.read_programs()}
    assert by_id[target.program.id].name == f"{KT}read"
    assert by_id[target.program.id].type == "SocketFilter"


@pytest.mark.kernel
def test_reports_round_trip_through_files(load_filter: LoadFilter, tmp_path: Path) -> None:
    target = load_filter(f"{KT}save")
    with kstat.collect_sync(interval="50ms") as session:
        target.send(12)
    path = tmp_path / "saved.json"
    kstat.save_report(session.report, path)
    loaded = kstat.load_report(path)
    assert loaded == session.report
    assert kstat.report_to_dict(loaded) == json.loads(path.read_text())
    assert kstat.report_from_dict(kstat.report_to_dict(loaded)) == loaded
    with pytest.deprecated_call():
        assert kstat.Report.from_dict(loaded.to_dict()) == loaded


def test_loading_something_else_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-report.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(kstat.ReportFormatError, match="is not a report: no program_stats"):
        kstat.load_report(path)
    with pytest.raises(kstat.OutputError, match="cannot read"):
        kstat.load_report(tmp_path / "missing.json")


@pytest.mark.kernel
def test_budgets_read_naturally_and_fail_with_numbers(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}budget", 256)
    with kstat.collect_sync(interval="50ms") as session:
        target.send(2_000)
    report = session.report
    line = report.program(f"{KT}budget")
    average = line.mean_runtime_ns
    assert average == line.runtime_ns / 2_000
    assert line.avg_runtime_ns == line.runtime_ns // 2_000
    kstat.expect_program(report, f"{KT}budget").ran_at_least(2_000).avg_runtime_ns_at_most(average)
    with pytest.raises(kstat.BudgetExceeded) as caught:
        kstat.expect_program(report, f"{KT}budget").avg_runtime_ns_at_most(1)
    message = str(caught.value)
    assert f"avg_runtime_ns measured {average:.6f}".rstrip("0").rstrip(".") + " > limit 1" in message
    assert f"'{KT}budget'" in message
    assert "runs" in message
    with pytest.raises(kstat.BudgetExceeded, match="run_count measured 2000 < expected at least 2001"):
        kstat.expect_program(report, f"{KT}budget").ran_at_least(2_001)
    with pytest.raises(kstat.BudgetExceeded, match="no program 'nope'"):
        kstat.expect_program(report, "nope")


@pytest.mark.kernel
def test_a_program_that_never_ran_cannot_pass_an_average_budget(load_filter: LoadFilter) -> None:
    load_filter(f"{KT}idle_b")
    with kstat.collect_sync(interval="50ms") as session:
        pass
    with pytest.raises(kstat.BudgetExceeded, match="no runs in the window"):
        kstat.expect_program(session.report, f"{KT}idle_b").avg_runtime_ns_at_most(10**9)


@pytest.mark.kernel
def test_without_privileges_the_error_is_typed() -> None:
    script = (
        "import kstat\n"
        "try:\n"
        "    with kstat.collect_sync(interval='50ms'):\n"
        "        pass\n"
        "except kstat.PermissionDenied as error:\n"
        "    print('typed:', error)\n"
    )
    shown = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.startswith("typed: permission denied"), shown.stderr


PUBLIC_API = (
    *("collect", "collect_sync", "stream", "read_programs", "Session", "SyncSession", "IntervalStream"),
    *("Report", "ProgramReport", "ProgramStats", "Snapshot", "ProgramFilter", "METRICS", "Metric"),
    *("load_report", "save_report", "report_to_dict", "report_from_dict", "ReportFormatError"),
    *("Sink", "Event", "WindowStarted", "IntervalEnded", "WindowEnded"),
    *("KstatError", "BpfError", "PermissionDenied", "UnsupportedKernel", "UsageError", "SinkError"),
    *("OutputError", "OutputClosed", "BudgetExceeded", "ProgramBudget", "expect_program", "__version__"),
)


def test_every_public_name_is_a_re_export_listed_once() -> None:
    source = ast.parse(Path(kstat.__file__).read_text())
    exported = [
        alias.asname
        for node in ast.walk(source)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname is not None
    ]
    assert len(exported) == len(set(exported))  # each public name once
    for name in exported:
        assert getattr(kstat, name) is not None, name
    # The library's public API, written out: a name added or lost is a decision, not an accident.
    assert sorted(exported) == sorted(PUBLIC_API)
    assert dir(kstat) == sorted(PUBLIC_API)
    with pytest.raises(AttributeError):
        getattr(kstat, "no_such_thing")  # noqa: B009 - the attribute's absence is what is tested


@pytest.mark.kernel
def test_a_window_can_select_programs(load_filter: LoadFilter) -> None:
    chosen = load_filter(f"{KT}sel")
    load_filter(f"{KT}other")
    with kstat.collect_sync(interval="50ms", select=kstat.ProgramFilter(name=f"^{KT}sel$")) as session:
        chosen.send(5)
    report = session.report
    assert list(report.program_stats) == [f"{KT}sel"]
    assert report.total_run_count == 5
    assert report.filter == {"name": f"^{KT}sel$"}
