"""What the average hides: per-interval percentiles and the peak, in bounded memory; then a
burst on the real kernel, checked against the NDJSON intervals."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kstat
from kstat.analysis.compare import compare, parse_threshold
from kstat.core.model import Snapshot
from kstat.core.sketch import MAX_BUCKETS, RELATIVE_ACCURACY, QuantileSketch
from kstat.core.timestamps import format_timestamp
from kstat.formats.report_json import report_from_json, report_to_json
from kstat.testing.budget import BudgetExceeded
from tests.builders import program, report_of, snapshot
from tests.names import KT
from tests.windows import LoadFilter

KSTAT = [sys.executable, "-m", "kstat"]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e9, allow_nan=False)),
        min_size=1,
        max_size=400,
    ),
    q=st.sampled_from([0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_a_quantile_is_within_the_relative_accuracy(values: list[float], q: float) -> None:
    sketch = QuantileSketch()
    for value in values:
        sketch.add(value)
    exact = nearest_rank(values, q)
    found = sketch.quantile(q)
    assert found is not None
    assert abs(found - exact) <= RELATIVE_ACCURACY * exact + 1e-12
    assert sketch.quantile(1.0) == max(values)  # the maximum is exact


def test_idle_intervals_count_as_zeros_without_being_added() -> None:
    sketch = QuantileSketch()
    sketch.add(40.0)
    assert sketch.quantile(0.5, extra_zeros=9) == 0.0
    assert sketch.quantile(0.95, extra_zeros=9) == 40.0  # rank 10 of 10
    assert sketch.quantile(0.5) == 40.0 and sketch.count == 1


def test_memory_does_not_grow_with_the_window() -> None:
    """A million values over fifteen orders of magnitude: at most MAX_BUCKETS buckets, and the
    high quantiles, which a peak is read from, still within the accuracy."""
    chance = random.Random(1)
    sketch = QuantileSketch()
    values = [10 ** chance.uniform(-6, 9) for _ in range(200_000)]
    for value in values:
        sketch.add(value)
    assert sketch.buckets <= MAX_BUCKETS
    for q in (0.95, 0.99):
        exact = nearest_rank(values, q)
        found = sketch.quantile(q)
        assert found is not None and abs(found - exact) <= RELATIVE_ACCURACY * exact


def bursty_window(burst_in: int = 6, intervals: int = 10) -> tuple[list[Snapshot], list[float]]:
    """`burst` runs 10 times per interval, and 2,000 times in one; `steady` 100 every time."""
    snapshots = []
    burst_runs = steady_runs = 0
    cpu = []
    for sequence in range(intervals + 1):
        if sequence:
            burst = 2_000 if sequence == burst_in else 10
            burst_runs += burst
            steady_runs += 100
            cpu.append(burst * 1_000 / 1e9 * 100)  # 1,000 ns a run over a 1 s interval
        snapshots.append(
            snapshot(
                sequence,
                float(sequence),
                program(1, burst_runs * 1_000, burst_runs, name="burst"),
                program(2, steady_runs * 500, steady_runs, name="steady"),
                program(3, 0, 0, name="idle"),
            )
        )
    return snapshots, cpu


def test_the_report_names_the_peak_interval_that_the_average_hides() -> None:
    snapshots, cpu = bursty_window()
    report = report_of(*snapshots)
    burst = report.program("burst")
    assert burst.estimated_cpu_percent == pytest.approx(sum(cpu) / 10)  # 0.0209 %: it looks fine
    assert burst.value("max_cpu_percent") == pytest.approx(0.2)  # 2,000 runs of 1 µs in 1 s
    assert burst.value("p99_cpu_percent") == pytest.approx(0.2, rel=RELATIVE_ACCURACY)
    assert burst.value("p50_cpu_percent") == pytest.approx(0.001, rel=RELATIVE_ACCURACY)
    assert burst.value("max_events_per_sec") == pytest.approx(2_000)
    assert burst.value("p50_avg_runtime_ns") == pytest.approx(1_000, rel=RELATIVE_ACCURACY)
    assert burst.peak_cpu_percent_at == format_timestamp(1_700_000_000_000_000_000 + 6 * 10**9)
    steady = report.program("steady")
    for name in ("p50_cpu_percent", "p95_cpu_percent", "p99_cpu_percent", "max_cpu_percent"):
        assert steady.value(name) == pytest.approx(steady.estimated_cpu_percent, rel=RELATIVE_ACCURACY)
    idle = report.program("idle")
    assert idle.value("max_cpu_percent") == 0.0 and idle.value("p99_avg_runtime_ns") is None
    assert idle.peak_cpu_percent_at is None
    assert report.total("max_cpu_percent") == pytest.approx(0.2 + 0.005)
    assert report.peak_cpu_percent_at == burst.peak_cpu_percent_at


def test_distributions_survive_the_json_and_old_reports_lack_them_quietly() -> None:
    snapshots, _ = bursty_window()
    report = report_of(*snapshots)
    data = json.loads(report_to_json(report))
    assert data["program_stats"]["burst"]["max_cpu_percent"] == pytest.approx(0.2)
    assert data["total_p99_cpu_percent"] > 0 and data["peak_cpu_percent_at"] == report.peak_cpu_percent_at
    again = report_from_json(report_to_json(report))
    assert again.program("burst").value("p99_cpu_percent") == report.program("burst").value("p99_cpu_percent")
    golden = Path(__file__).parent / "golden" / "go-collect-kernel-stats.json"
    old = report_from_json(golden.read_text())
    assert all(line.value("p99_cpu_percent") is None for line in old.programs)
    assert old.peak_cpu_percent_at is None


def test_a_gate_on_p99_catches_what_the_average_does_not() -> None:
    """Both windows have the same total runs; the current one packs them into one interval."""
    snapshots, _ = bursty_window(burst_in=6)
    spread = [
        snapshot(
            sequence,
            float(sequence),
            program(1, sequence * 209 * 1_000, sequence * 209, name="burst"),
            program(2, sequence * 100 * 500, sequence * 100, name="steady"),
            program(3, 0, 0, name="idle"),
        )
        for sequence in range(11)
    ]
    baseline, current = report_of(*spread), report_of(*snapshots)
    comparison = compare(baseline, current)
    assert comparison.violations([parse_threshold("estimated_cpu_percent:+20%")]) == []
    violations = comparison.violations([parse_threshold("p99_cpu_percent:+20%")])
    assert [violation.split(":")[0] for violation in violations] == ["burst (SocketFilter)", "(total)"]
    kstat.expect_program(baseline, "burst").peak_cpu_percent_at_most(0.05)
    with pytest.raises(BudgetExceeded, match=re.escape("max_cpu_percent measured 0.2 > limit 0.05")):
        kstat.expect_program(current, "burst").peak_cpu_percent_at_most(0.05)
    kstat.expect_program(current, "burst").p99_avg_runtime_ns_at_most(1_050)


@pytest.mark.kernel
def test_a_burst_in_one_interval_shows_in_the_maximum_and_the_p99(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    """Ten intervals of 200 ms; 20 packets in each but one, which gets 5,000: the window's
    average stays low, the maximum and the p99 are that interval's, as its NDJSON line says."""
    target = load_filter(f"{KT}burst", 512)
    stream, report_path = tmp_path / "s.ndjson", tmp_path / "r.json"
    process = subprocess.Popen(
        [
            *KSTAT,
            "-duration",
            "2s",
            "--interval",
            "200ms",
            "--name",
            f"^{KT}burst$",
            "-o",
            str(report_path),
            "--sink",
            f"ndjson:{stream}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    time.sleep(0.25)
    for step in range(9):
        target.send(5_000 if step == 4 else 20)
        time.sleep(max(0.0, 0.25 + (step + 1) * 0.2 - (time.monotonic() - started)))
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    report = json.loads(report_path.read_text())
    line = report["program_stats"][f"{KT}burst"]
    per_interval = [
        entry["program_stats"].get(f"{KT}burst", {}).get("estimated_cpu_percent", 0.0)
        for entry in map(json.loads, stream.read_text().splitlines())
        if entry["kind"] == "interval"
    ]
    assert len(per_interval) >= 9
    assert line["max_cpu_percent"] == pytest.approx(max(per_interval))
    assert line["p99_cpu_percent"] == pytest.approx(nearest_rank(per_interval, 0.99), rel=RELATIVE_ACCURACY)
    assert line["p50_cpu_percent"] == pytest.approx(nearest_rank(per_interval, 0.5), rel=RELATIVE_ACCURACY)
    assert line["estimated_cpu_percent"] < line["max_cpu_percent"] / 3  # the average hides it
    peak = max(
        (entry for entry in map(json.loads, stream.read_text().splitlines()) if entry["kind"] == "interval"),
        key=lambda entry: entry["program_stats"].get(f"{KT}burst", {}).get("estimated_cpu_percent", 0.0),
    )
    assert line["peak_cpu_percent_at"] == peak["end_time"]


def test_a_program_that_went_away_keeps_its_figures_and_counts_no_idle_after() -> None:
    """Loaded for the first four of ten intervals, busy in the second: its intervals after it
    went away are not zeros of its own."""
    snapshots = []
    for sequence in range(11):
        programs = [program(2, sequence * 100 * 500, sequence * 100, name="steady")]
        if sequence <= 4:
            runs = 0 if sequence < 2 else 1_000
            programs.append(program(1, runs * 1_000, runs, name="brief"))
        snapshots.append(snapshot(sequence, float(sequence), *programs))
    brief = report_of(*snapshots).program("brief")
    assert brief.unloaded_during_window
    assert brief.value("max_cpu_percent") == pytest.approx(0.1)  # 1,000 runs of 1 µs in 1 s
    # Four intervals while loaded: one busy, three idle (the last saw it go): p50 is zero.
    assert brief.value("p50_cpu_percent") == 0.0
    assert brief.value("p95_cpu_percent") == pytest.approx(0.1, rel=RELATIVE_ACCURACY)
