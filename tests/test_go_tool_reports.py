"""Drop-in where scripts depend on the Go tool: its real reports compared exactly, and kstat's
report keyed as the Go tool keys it (`--keys kernel-name`) without dropping a program.

The golden files `go-collect-kernel-stats-45b25342-*.json` and `...-v1-45b25342-*.json` were
written by the real Go tool, built from the netobserv agent's commit 45b25342, on this kernel
(shared/peers/go-collect-kernel-stats/README.md says with which programs).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from kstat.api import load_report
from kstat.cli import main
from kstat.core.report import KERNEL_NAME_KEYS, kernel_name_keys, keyed_by_kernel_name
from kstat.formats.report_json import report_from_dict, report_to_dict
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.kstat_process import KstatProcess
from tests.names import KT

GOLDEN = Path(__file__).parent / "golden"
# Five programs: tc_flow_0..2 (4,000 runs each) and two named dup_counter (1,000 and 2,500
# runs); the Go tool listed one dup_counter and counted both in its totals.
COLLISION = GOLDEN / "go-collect-kernel-stats-45b25342-name-collision.json"
# The first version: collection_duration_sec written as 0, xdp_cnt_0..1 with 3,000 runs each.
ZERO_WINDOW = GOLDEN / "go-collect-kernel-stats-v1-45b25342-zero-duration.json"
CURRENT = GOLDEN / "kstat-0.2-report.json"
# Set to a built collect-kernel-stats (BENCHMARKS.md says how) to run it beside kstat.
GO_TOOL = os.environ.get("KSTAT_GO_TOOL", "")


def raw(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def compared(capsys: pytest.CaptureFixture[str], *arguments: str, status: int = 0) -> dict[str, Any]:
    assert main(["compare", "--format", "json", *arguments]) == status
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_the_go_tools_report_reads_as_it_wrote_it() -> None:
    report = load_report(COLLISION)
    assert report.written_by_go_tool and report.window_known
    assert report.collection_duration_ns == 3_000_000_000
    assert sorted(report.program_stats) == ["dup_counter", "tc_flow_0", "tc_flow_1", "tc_flow_2"]
    # Its own totals, not its rows' sum (14,500 runs).
    assert (report.total_run_count, report.total_runtime_ns, report.num_programs) == (15_500, 776_001, 4)
    assert sum(line.run_count for line in report.programs) == 14_500
    first = load_report(ZERO_WINDOW)
    assert first.written_by_go_tool and not first.window_known
    assert first.collection_duration_ns == 0
    assert first.program("xdp_cnt_0").tag == "08d5b25bbe3ff765"
    for path in (CURRENT, GOLDEN / "kstat-0.1-7103066-core.json"):
        assert not load_report(path).written_by_go_tool


def test_compare_takes_the_go_tools_totals_and_says_what_its_rows_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = raw(COLLISION)
    found = compared(capsys, str(COLLISION), str(COLLISION))
    total = found["total"]["baseline"]
    assert (total["run_count"], total["runtime_ns"]) == (15_500, 776_001)
    assert total["events_per_sec"] == pytest.approx(data["total_events_per_sec"], rel=1e-12)
    assert total["estimated_cpu_percent"] == pytest.approx(data["total_estimated_cpu_percent"], rel=1e-12)
    rows = {row["name"]: row["baseline"] for row in found["programs"]}
    for key, line in data["program_stats"].items():
        for name in ("run_count", "runtime_ns", "avg_runtime_ns", "recursion_misses"):
            assert rows[key][name] == line[name], (key, name)
        for name in ("events_per_sec", "estimated_cpu_percent"):
            assert rows[key][name] == pytest.approx(line[name], rel=1e-12), (key, name)
    # 1,000 runs of the dup_counter it dropped: 15,500 - 14,500; runtime 776,001 - 727,921.
    expected = {"programs": None, "run_count": 1_000, "runtime_ns": 48_080, "recursion_misses": 0}
    for side in ("baseline_reports", "current_reports"):
        facts = {"go_tool": True, "window_known": True, "collection_duration_ns": 3_000_000_000}
        assert found[side] == [{**facts, "unlisted": expected}]
    notes = found["notes"]
    assert any("1,000 runs (48,080 ns of runtime) that no row has" in note for note in notes)
    assert any("the duration it was asked for (3.00 s)" in note for note in notes)


def test_the_notes_are_under_the_table_and_in_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    for output_format in ("table", "markdown"):
        assert main(["compare", str(COLLISION), str(CURRENT), "--format", output_format]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert "The baseline is the Go collect-kernel-stats tool's: its rates divide by the duration" in shown
        assert "The baseline's totals count 1,000 runs (48,080 ns of runtime) that no row has" in shown
        assert "15,500 → 9,099" in shown  # the total's runs: the Go tool's own total


def test_a_report_without_a_window_compares_runs_and_average_runtimes_not_rates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = raw(ZERO_WINDOW)
    found = compared(capsys, str(ZERO_WINDOW), str(COLLISION))
    total = found["total"]
    assert total["baseline"]["run_count"] == 6_000
    assert total["baseline"]["avg_runtime_ns"] == 234_022 // 6_000
    for rate in ("events_per_sec", "estimated_cpu_percent", "estimated_cpu_percent_of_all_cpus"):
        assert rate not in total["baseline"]
        assert total["change_percent"][rate] is None
    rows = {row["name"]: row["baseline"] for row in found["programs"]}
    for key, line in data["program_stats"].items():
        for name in ("run_count", "avg_runtime_ns"):
            assert rows[key][name] == line[name], (key, name)
        assert "events_per_sec" not in rows[key]
    assert found["baseline_reports"][0]["window_known"] is False
    assert any(note.startswith("Rates unknown for the baseline") for note in found["notes"])
    # A threshold on a rate cannot be checked against it; one on the average runtime is
    # (39 -> 50 ns is +28 %).
    found = compared(capsys, "--fail-on", "events_per_sec:-5%", str(ZERO_WINDOW), str(COLLISION))
    assert found["unchecked"] == ["events_per_sec:-5%: the baseline's rates are unknown"]
    assert found["violations"] == []
    found = compared(capsys, "--fail-on", "avg_runtime_ns:+10%", str(ZERO_WINDOW), str(COLLISION), status=1)
    assert found["unchecked"] == [] and len(found["violations"]) == 1


def test_a_report_with_no_window_at_all_reads_with_rates_unknown(tmp_path: Path) -> None:
    data = raw(COLLISION)
    del data["collection_duration_ns"]
    report = report_from_dict(data)
    assert (report.collection_duration_ns, report.window_known) == (0, False)
    assert report.total_run_count == 15_500


def test_several_go_runs_per_side_say_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    found = compared(capsys, str(COLLISION), str(ZERO_WINDOW), "--", str(CURRENT))
    assert [report["go_tool"] for report in found["baseline_reports"]] == [True, True]
    notes = found["notes"]
    assert any(note.startswith("Rates unknown for 1 of the baseline's 2 reports") for note in notes)
    assert any("1,000 runs" in note and "(in 1 of its 2 reports)" in note for note in notes)


def test_kernel_name_keys_give_the_bare_name_to_the_first_and_keep_the_others() -> None:
    keys, colliding = kernel_name_keys([("dup", 9, 1), ("flow", 3, 1), ("dup", 4, 1), ("dup", 12, 1)])
    assert keys == ["dup#9", "flow", "dup", "dup#12"]
    assert colliding == ["dup#12", "dup#9"]
    # The kernel reused an id inside the window: its load time tells the two apart.
    keys, colliding = kernel_name_keys([("a", 5, 10), ("a", 5, 20), ("a", 6, 1)])
    assert keys == ["a", "a#5", "a#6"]
    keys, _ = kernel_name_keys([("a", 5, 10), ("a", 5, 20), ("a", 5, 30)])
    assert keys == ["a", "a#5@20", "a#5@30"]


def test_a_read_report_rekeyed_by_kernel_name_round_trips() -> None:
    report = keyed_by_kernel_name(load_report(CURRENT))
    assert sorted(report.program_stats) == ["kstat_heavy", "kstat_lite", "kstat_mid"]
    assert report.program_stats["kstat_heavy"].name == "kstat_demo_heavy_socket_filter"
    data = report_to_dict(report)
    assert (data["program_keys"], data["colliding_keys"]) == (KERNEL_NAME_KEYS, [])
    assert report_from_dict(data) == report
    assert "program_keys" not in report_to_dict(load_report(CURRENT))


def _two_of_a_name_and_one_long() -> tuple[list[SocketFilter], list[LoopbackTarget]]:
    programs = [
        SocketFilter(f"{KT}go_dup"),
        SocketFilter(f"{KT}go_dup", function_name=f"{KT}go_dup_second_program"),
        SocketFilter(f"{KT}go_flow", function_name=f"{KT}go_flow_with_a_long_btf_name"),
    ]
    return programs, [LoopbackTarget(program) for program in programs]


@pytest.mark.kernel
def test_a_report_keyed_by_kernel_name_has_the_go_tools_keys_and_drops_nothing(tmp_path: Path) -> None:
    runs = (100, 250, 40)
    programs, targets = _two_of_a_name_and_one_long()
    try:
        output = tmp_path / "r.json"
        kstat_run = KstatProcess(
            ["-duration", "1500ms", "--keys", "kernel-name", "-output", str(output)], whole_host=True
        )
        kstat_run.wait_for_window()
        for target, count in zip(targets, runs, strict=True):
            target.send(count)
        returncode, _ = kstat_run.finish()
        assert returncode == 0, "\n".join(kstat_run.stderr_lines)
        ids = [program.id for program in programs]
    finally:
        for target in targets:
            target.close()
        for program in programs:
            program.close()
    report = json.loads(output.read_text())
    ours = {key: line for key, line in report["program_stats"].items() if line["id"] in ids}
    first, second = sorted(ids[:2])
    assert sorted(ours) == sorted([f"{KT}go_dup", f"{KT}go_dup#{second}", f"{KT}go_flow"])
    assert ours[f"{KT}go_dup"]["id"] == first
    assert ours[f"{KT}go_flow"]["name"] == f"{KT}go_flow_with_a_long_btf_name"
    assert {line["id"]: line["run_count"] for line in ours.values()} == dict(zip(ids, runs, strict=True))
    assert report["program_keys"] == "kernel_name"
    assert f"{KT}go_dup#{second}" in report["colliding_keys"]
    # Nothing dropped: the rows add up to the totals, and every program is counted.
    assert report["num_programs"] == len(report["program_stats"])
    assert sum(line["run_count"] for line in report["program_stats"].values()) == report["total_run_count"]


@pytest.mark.kernel
@pytest.mark.skipif(not GO_TOOL, reason="KSTAT_GO_TOOL names no built collect-kernel-stats")
def test_beside_the_real_go_tool_the_keys_are_its_keys_and_its_drop_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = (100, 250, 40)
    programs, targets = _two_of_a_name_and_one_long()
    go_output, kstat_output = tmp_path / "go.json", tmp_path / "kstat.json"
    try:
        go = subprocess.Popen(
            [GO_TOOL, "-duration", "3s", "-output", str(go_output)], stderr=subprocess.PIPE, text=True
        )
        assert go.stderr is not None
        baseline_read = threading.Event()
        go_log: list[str] = []

        def follow_go_log() -> None:
            assert go.stderr is not None
            for line in go.stderr:
                go_log.append(line)
                if "collecting stats for" in line:  # its log line after the baseline pass
                    baseline_read.set()

        follower = threading.Thread(target=follow_go_log, daemon=True)
        follower.start()
        kstat_run = KstatProcess(
            ["-duration", "2s", "--keys", "kernel-name", "-output", str(kstat_output)], whole_host=True
        )
        kstat_run.wait_for_window()
        assert baseline_read.wait(30), go_log
        for target, count in zip(targets, runs, strict=True):
            target.send(count)
        assert kstat_run.finish()[0] == 0, kstat_run.stderr_lines
        assert go.wait(30) == 0, go_log
        follower.join(10)
        ids = [program.id for program in programs]
    finally:
        for target in targets:
            target.close()
        for program in programs:
            program.close()
    go_report, kstat_report = raw(go_output), raw(kstat_output)
    go_keys = {key for key, line in go_report["program_stats"].items() if line["id"] in ids}
    kstat_keys = {key for key, line in kstat_report["program_stats"].items() if line["id"] in ids}
    assert go_keys == {f"{KT}go_dup", f"{KT}go_flow"}
    assert kstat_keys - go_keys == {
        key for key in kstat_report["colliding_keys"] if key.startswith(f"{KT}go_")
    }
    # The Go tool kept one kt_go_dup (its map's order decides which); compare says how many
    # runs its totals hold beyond its rows: at least the other one's.
    kept = go_report["program_stats"][f"{KT}go_dup"]["run_count"]
    dropped = sum(runs[:2]) - kept
    assert kept in runs[:2]
    found = compared(capsys, str(go_output), str(kstat_output))
    unlisted = found["baseline_reports"][0]["unlisted"]
    assert unlisted is not None and unlisted["run_count"] >= dropped
