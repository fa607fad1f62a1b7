"""An interval's delta: its figures, worked out once, and its lines, made only when read."""

from __future__ import annotations

from attrs import asdict

from kstat.core.delta import IntervalDelta
from tests.builders import interval, program, snapshot


def test_a_busy_programs_figures_are_its_lines_metrics_worked_out_once() -> None:
    # 20 runs and 5,000 ns over 1 s on 2 CPUs; the idle program has neither figures nor a line.
    first = snapshot(0, 0.0, program(1, 1_000, 10), program(2, 700, 7))
    second = snapshot(1, 1.0, program(1, 6_000, 30), program(2, 700, 7))
    delta = interval(first, second).delta
    assert list(delta.figures) == list(delta.lines) == ["prog1"]
    figures = delta.figures["prog1"]
    assert figures["run_count"] == 20 and figures["runtime_ns"] == 5_000
    assert figures["avg_runtime_ns"] == 250 and figures["events_per_sec"] == 20.0
    assert figures["estimated_cpu_percent"] == 0.0005
    assert figures["estimated_cpu_percent_of_all_cpus"] == 0.00025
    line = delta.lines["prog1"]
    # One mapping, not a copy; one line however often it is read.
    assert line.metrics is figures and delta.lines["prog1"] is line
    assert (line.name, line.id, line.window_coverage_percent) == ("prog1", 1, 100.0)
    assert "prog2" not in delta.lines and len(delta.lines) == 1


def test_a_delta_made_by_hand_has_its_figures_from_its_lines() -> None:
    first = snapshot(0, 0.0, program(1, 1_000, 10))
    delta = interval(first, snapshot(1, 1.0, program(1, 4_000, 13))).delta
    lines = dict(delta.lines)
    fields = {name: value for name, value in asdict(delta, recurse=False).items() if name != "figures"}
    by_hand = IntervalDelta(**(fields | {"lines": lines}))
    assert by_hand.figures == {"prog1": lines["prog1"].metrics}
    assert by_hand.figures["prog1"]["run_count"] == 3
    assert by_hand == delta
