"""The report math over hand-made snapshots: expected values are worked out by hand here."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstat.core import report as core_report
from kstat.core.counters import Counters
from kstat.core.model import ProgramFootprint, ProgramStats
from kstat.core.report import ProgramReport, line_row, line_rows
from kstat.formats import report_json
from kstat.formats.report_json import program_to_dict, report_from_dict, report_to_dict, report_to_json
from tests.builders import program, report_of, snapshot

SEED_REPORT_FIELDS = [
    "timestamp",
    "program_stats",
    "total_runtime_ns",
    "total_run_count",
    "total_events_per_sec",
    "total_estimated_cpu_percent",
    "num_programs",
]
SEED_PROGRAM_FIELDS = [
    "name",
    "type",
    "id",
    "runtime_ns",
    "run_count",
    "events_per_sec",
    "avg_runtime_ns",
    "estimated_cpu_percent",
    "recursion_misses",
]


def test_rates_over_the_measured_elapsed_time() -> None:
    report = report_of(
        snapshot(0, 0.0, program(7, 5_000, 10, name="flow_parse", recursion_misses=1)),
        snapshot(1, 1.0, program(7, 505_000, 2_010, name="flow_parse", recursion_misses=2)),
        # 2.5 s after the first snapshot, though 2 s were asked for: rates use the 2.5 s.
        snapshot(2, 2.5, program(7, 1_005_000, 4_010, name="flow_parse", recursion_misses=4)),
    )
    line = report.program_stats["flow_parse"]
    assert line.runtime_ns == 1_000_000
    assert line.run_count == 4_000
    assert line.events_per_sec == pytest.approx(1_600.0)
    assert line.avg_runtime_ns == 250
    assert line.mean_runtime_ns == 250.0
    assert line.estimated_cpu_percent == pytest.approx(0.04)
    assert line.estimated_cpu_percent_of_all_cpus == pytest.approx(0.02)
    assert line.recursion_misses == 3
    assert report.collection_duration_ns == 2_500_000_000
    assert report.total_events_per_sec == pytest.approx(1_600.0)
    assert report.snapshots == 3
    assert report.timestamp == "2023-11-14T22:13:22.5Z"
    assert report.start_time == "2023-11-14T22:13:20Z"


def test_average_runtime_truncates_like_the_seed_and_the_mean_does_not() -> None:
    report = report_of(snapshot(0, 0.0, program(1, 0, 0)), snapshot(1, 1.0, program(1, 1_000, 3)))
    assert report.program_stats["prog1"].avg_runtime_ns == 333
    assert report.program_stats["prog1"].mean_runtime_ns == pytest.approx(333.3333333)


def test_program_without_runs_appears_with_zeros() -> None:
    report = report_of(snapshot(0, 0.0, program(3, 700, 9)), snapshot(1, 1.0, program(3, 700, 9)))
    line = report.program_stats["prog3"]
    assert (line.runtime_ns, line.run_count, line.avg_runtime_ns) == (0, 0, 0)
    assert (line.events_per_sec, line.estimated_cpu_percent) == (0.0, 0.0)
    assert report.num_programs == 1


def test_duplicate_names_are_keyed_by_name_and_id() -> None:
    first = snapshot(
        0,
        0.0,
        program(4, 0, 0, name="tc_ingress"),
        program(9, 0, 0, name="tc_ingress"),
        program(5, 0, 0, name="xdp"),
    )
    last = snapshot(
        1,
        1.0,
        program(4, 10, 1, name="tc_ingress"),
        program(9, 40, 2, name="tc_ingress"),
        program(5, 0, 0, name="xdp"),
    )
    report = report_of(first, last)
    assert sorted(report.program_stats) == ["tc_ingress#4", "tc_ingress#9", "xdp"]
    assert report.program_stats["tc_ingress#9"].run_count == 2
    assert report.total_run_count == 3
    assert report.total_runtime_ns == 50
    assert report.num_programs == 3


def test_a_counter_the_kernel_lacks_is_said_and_its_seed_field_stays_a_number() -> None:
    # Before Linux 5.12 bpf_prog_info has no recursion_misses: unknown, not zero.
    before, after = program(5, 100, 1, recursion_misses=None), program(5, 400, 4, recursion_misses=None)
    report = report_of(snapshot(0, 0.0, before), snapshot(1, 1.0, after))
    assert report.unavailable_counters == ("recursion_misses",)
    assert report.program("prog5").value("recursion_misses") is None
    data = report_to_dict(report)
    # The Go tool's shape requires the field: it says 0, and the report says why.
    assert data["program_stats"]["prog5"]["recursion_misses"] == 0
    assert data["total_recursion_misses"] == 0
    assert data["unavailable_counters"] == ["recursion_misses"]
    assert data["program_stats"]["prog5"]["run_count"] == 3
    assert report_from_dict(json.loads(json.dumps(data))).unavailable_counters == ("recursion_misses",)


def test_unnamed_programs_are_keyed_by_id() -> None:
    unnamed = ProgramStats.described(
        id=12,
        type="Kprobe",
        name="",
        tag="ff",
        load_time_ns=1,
        counters=Counters(0, 0, 0),
    )
    report = report_of(snapshot(0, 0.0, unnamed), snapshot(1, 1.0, unnamed))
    assert list(report.program_stats) == ["#12"]


def test_program_loaded_during_the_window_counts_from_zero() -> None:
    # Loaded 0.5 s into the window (boot time 10.5 s); first seen a whole interval later.
    late = program(8, 3_000, 30, load_time_ns=10_500_000_000)
    later = program(8, 6_000, 60, load_time_ns=10_500_000_000)
    report = report_of(snapshot(0, 0.0), snapshot(1, 1.0, late), snapshot(2, 2.0, later))
    line = report.program_stats["prog8"]
    assert line.run_count == 60
    assert line.runtime_ns == 6_000
    assert line.loaded_during_window
    assert not line.unloaded_during_window


def test_program_unloaded_during_the_window_reports_up_to_its_last_sighting() -> None:
    report = report_of(
        snapshot(0, 0.0, program(2, 0, 0), program(3, 0, 0)),
        snapshot(1, 1.0, program(2, 100, 10), program(3, 100, 10)),
        snapshot(2, 2.0, program(3, 200, 20)),
    )
    gone = report.program_stats["prog2"]
    assert gone.run_count == 10
    assert gone.unloaded_during_window
    assert not report.program_stats["prog3"].unloaded_during_window
    assert report.total_run_count == 30


def test_a_reused_id_is_never_merged_with_the_old_program() -> None:
    old = program(6, 0, 0, load_time_ns=500, tag="aa")
    old_later = program(6, 100, 10, load_time_ns=500, tag="aa")
    new = program(6, 7, 1, load_time_ns=10_800_000_000, tag="bb")
    report = report_of(snapshot(0, 0.0, old), snapshot(1, 1.0, old_later), snapshot(2, 2.0, new))
    assert sorted(report.program_stats) == ["prog6#6@10800000000", "prog6#6@500"]
    assert report.program_stats["prog6#6@500"].run_count == 10
    assert report.program_stats["prog6#6@500"].unloaded_during_window
    assert report.program_stats["prog6#6@10800000000"].run_count == 1
    assert report.total_run_count == 11


def test_json_keeps_the_seed_fields_first_and_round_trips() -> None:
    report = report_of(snapshot(0, 0.0, program(1, 0, 0)), snapshot(1, 1.0, program(1, 10, 1)))
    data = json.loads(report_to_json(report))
    assert list(data)[: len(SEED_REPORT_FIELDS)] == SEED_REPORT_FIELDS
    assert list(data["program_stats"]["prog1"])[: len(SEED_PROGRAM_FIELDS)] == SEED_PROGRAM_FIELDS
    assert report_from_dict(data) == report
    assert report_to_dict(report) == data


counters = st.integers(min_value=0, max_value=2**40)


@given(
    increments=st.lists(
        st.lists(st.tuples(counters, counters), min_size=3, max_size=3), min_size=1, max_size=12
    ),
    gaps_ms=st.lists(st.integers(min_value=1, max_value=10_000), min_size=12, max_size=12),
)
def test_deltas_add_up_whatever_the_snapshots(
    increments: list[list[tuple[int, int]]], gaps_ms: list[int]
) -> None:
    """Per program, the report's delta is the sum of what happened between snapshots."""
    totals = [(0, 0)] * 3
    at_s = 0.0
    snapshots = [snapshot(0, at_s, *(program(i + 1, 0, 0) for i in range(3)))]
    for sequence, step in enumerate(increments, start=1):
        totals = [
            (runtime + add_runtime, runs + add_runs)
            for (runtime, runs), (add_runtime, add_runs) in zip(totals, step, strict=True)
        ]
        at_s += gaps_ms[sequence - 1] / 1000
        snapshots.append(
            snapshot(
                sequence, at_s, *(program(i + 1, runtime, runs) for i, (runtime, runs) in enumerate(totals))
            )
        )
    report = report_of(*snapshots)
    for index, (runtime, runs) in enumerate(totals):
        line = report.program_stats[f"prog{index + 1}"]
        assert (line.runtime_ns, line.run_count) == (runtime, runs)
        assert line.avg_runtime_ns * runs <= runtime
    assert report.total_run_count == sum(runs for _, runs in totals)
    assert report.total_runtime_ns == sum(runtime for runtime, _ in totals)


def test_a_program_loaded_as_the_first_pass_ran_keeps_that_reading_as_baseline() -> None:
    # Loaded after the first pass began (boot time 10 s) but read by it: the reading is the
    # baseline, so consecutive windows never count its early runs twice.
    early = program(5, 100, 10, load_time_ns=10_000_000_001)
    report = report_of(
        snapshot(0, 0.0, early), snapshot(1, 1.0, program(5, 300, 30, load_time_ns=10_000_000_001))
    )
    line = report.program_stats["prog5"]
    assert line.run_count == 20
    assert line.loaded_during_window


def test_a_program_idle_since_the_first_snapshot_counts_its_idle_intervals_once_it_runs() -> None:
    # The summary keeps no values for a program of the first snapshot until it runs: its idle
    # first interval must still count, as a zero, in its distribution.
    idle, ran = program(1, 100, 1), program(1, 900, 9)
    report = report_of(snapshot(0, 0.0, idle), snapshot(1, 1.0, idle), snapshot(2, 2.0, ran))
    line = report.program("prog1")
    assert line.value("p50_cpu_percent") == 0
    assert line.value("max_events_per_sec") == pytest.approx(8.0)


def test_idle_programs_lacking_a_counter_leave_it_unavailable_beside_busy_ones() -> None:
    # Idle programs share one "nothing grew", added to the totals once: its None still counts.
    idle = program(1, 100, 1, recursion_misses=None)
    busy_before, busy_after = program(2, 100, 1), program(2, 300, 3)
    report = report_of(snapshot(0, 0.0, idle, busy_before), snapshot(1, 1.0, idle, busy_after))
    assert report.unavailable_counters == ("recursion_misses",)
    assert report.totals["run_count"] == 2


def test_a_windows_lines_read_as_rows_are_its_program_reports_fields() -> None:
    # The report's writer reads a window's lines as rows, straight from what the window saw;
    # a library reads them as ProgramReports. Idle, busy, loaded and unloaded lines alike.
    idle = program(1, 100, 1)
    busy_before, busy_after = program(2, 100, 1), program(2, 300, 3)
    gone, loaded = program(3, 50, 5), program(4, 70, 7, load_time_ns=10_500_000_000)
    report = report_of(
        snapshot(0, 0.0, idle, busy_before, gone),
        snapshot(1, 1.0, idle, busy_after, loaded),
        snapshot(2, 2.0, idle, busy_after, loaded),
    )
    rows = dict(line_rows(report.program_stats))
    assert list(rows) == list(report.program_stats)
    assert rows == {key: line_row(line) for key, line in report.program_stats.items()}
    assert {key: ProgramReport(*row) for key, row in rows.items()} == dict(report.program_stats)
    encoded = json.loads(report_to_json(report))["program_stats"]
    assert encoded == {key: program_to_dict(line) for key, line in report.program_stats.items()}
    assert {line.unloaded_during_window for line in report.program_stats.values()} == {True, False}
    assert {line.loaded_during_window for line in report.program_stats.values()} == {True, False}


def test_a_report_whose_lines_share_nothing_reads_the_same_when_the_encoder_keeps_few(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Idle programs whose footprints all differ share no figures: the report and its encoder
    # keep only a few to share (their memory, not the bytes written, is what that changes).
    programs = [
        program(index, 100, 1, footprint=ProgramFootprint(20 + index, 24 + index, 3, 4096 + index))
        for index in range(1, 12)
    ]
    programs.append(program(12, 100, 1, footprint=ProgramFootprint(21, 25, 3, 4097)))  # as 1's

    def written() -> str:
        return report_to_json(report_of(snapshot(0, 0.0, *programs), snapshot(1, 1.0, *programs)))

    unbounded = written()
    monkeypatch.setattr(report_json, "_SHARED_KEPT", 2)
    monkeypatch.setattr(core_report, "_SHARED_FIGURES_KEPT", 2)
    assert written() == unbounded
    assert len(json.loads(unbounded)["program_stats"]) == len(programs)
