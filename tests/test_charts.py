"""`kstat plot`'s charts at 3, 200 and 2,000 programs: bounded sizes, at most MAX_PROGRAMS
programs and an "others" bar a panel, axes that fit the bars, no panel for absent data, units
written once, the summary ranked by runtime and CPU first, gaps where a stream did not run."""

from __future__ import annotations

import functools
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy
import pytest

from kstat.analysis.charts import CHART_ORDER, MAX_PROGRAMS, OVERVIEW_PROGRAMS, ChartSet, comparison_charts
from kstat.analysis.plot import read_stream, stream_figure
from kstat.core.report import Report
from kstat.formats.report_json import report_from_dict, report_to_dict
from tests.builders import fleet_report
from tests.kstat_process import run_kstat

SIZES = (3, 200, 2000)


@functools.cache
def reports(programs: int, *, with_maps: bool = False) -> tuple[Report, Report]:
    """(baseline, current): the current build 30 % slower a run."""
    return (
        fleet_report(programs, with_maps=with_maps),
        fleet_report(programs, heavier=1.3, with_maps=with_maps, seed=8),
    )


@functools.cache
def charts(programs: int) -> ChartSet:
    """The chart set of `reports(programs)`, drawn once for every test that reads it."""
    baseline, current = reports(programs)
    return comparison_charts(current, baseline)


def labels(axis: Any) -> list[str]:
    return [label.get_text() for label in axis.get_yticklabels()]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("programs", SIZES)
def test_a_panel_draws_the_costliest_and_one_others_bar(programs: int) -> None:
    drawn = charts(programs)
    active = programs - programs // 10  # a tenth never run
    for name in ("cpu", "events", "runtime", "program"):
        for axis in drawn.figures[name].axes:
            shown = labels(axis)
            if programs <= MAX_PROGRAMS:
                assert len(shown) == min(active, programs) and not any("others" in s for s in shown)
            elif axis.get_title() == "Maximum of the CPU share per interval":
                # Percentiles of several programs make no percentile: no others bar there.
                assert len(shown) == MAX_PROGRAMS
            else:
                assert len(shown) == MAX_PROGRAMS + 1, (name, axis.get_title())
                assert shown[0] == f"others ({active - MAX_PROGRAMS:,} programs)"  # at the bottom
    # The costliest by the metric charted: the runtime panel's programs are not the CPU panel's.
    cpu, runtime = drawn.figures["cpu"].axes[0], drawn.figures["runtime"].axes[0]
    if programs > MAX_PROGRAMS:
        assert labels(cpu) != labels(runtime)
    overview = drawn.figures["overview"].axes[0]
    assert len(labels(overview)) == min(active, OVERVIEW_PROGRAMS) + (active > OVERVIEW_PROGRAMS)


def test_chart_sizes_do_not_grow_with_the_programs() -> None:
    def sizes(programs: int) -> dict[str, tuple[float, float]]:
        figures = charts(programs).figures
        return {name: tuple(figure.get_size_inches()) for name, figure in figures.items()}

    at_200, at_2000 = sizes(200), sizes(2000)
    assert at_200 == at_2000
    assert all(height * 100 <= 1700 and width * 100 <= 2100 for width, height in at_2000.values())
    at_3 = sizes(3)
    assert at_3["runtime"][1] < at_200["runtime"][1]  # three bars need less room, never more


def test_kstat_plot_at_2000_programs_writes_bounded_pngs(tmp_path: Path) -> None:
    baseline, current = reports(2000)
    (tmp_path / "base.json").write_text(json.dumps(report_to_dict(baseline)))
    (tmp_path / "cur.json").write_text(json.dumps(report_to_dict(current)))
    completed = run_kstat(
        [
            "plot",
            str(tmp_path / "cur.json"),
            "--baseline",
            str(tmp_path / "base.json"),
            "-o",
            str(tmp_path / "c"),
        ],
        timeout_s=120,
    )
    assert completed.returncode == 0, completed.stderr
    for name in CHART_ORDER:
        width, height = png_size(tmp_path / "c" / f"{name}.png")
        assert width <= 2100 and height <= 1700, (name, width, height)  # was 15,484 px tall at 212


def test_the_cpu_axis_fits_the_bars_and_a_peak_beyond_it_is_marked() -> None:
    baseline, current = reports(200)
    cpu = charts(200).figures["cpu"].axes[0]
    names = [name for name in labels(cpu) if not name.startswith("others")]
    largest = max(
        max(line.estimated_cpu_percent for line in report.programs if line.name in names)
        for report in (baseline, current)
    )
    assert cpu.get_xlim()[1] == pytest.approx(largest * 1.45)
    # Program 1 bursts: in the baseline its peak interval is far beyond its average, beyond the
    # axis, which stays the bars' (it used to stretch to the peak, the bars slivers).
    burst = next(line for line in baseline.programs if line.id == 2)
    assert (burst.value("max_cpu_percent") or 0) > cpu.get_xlim()[1] > burst.estimated_cpu_percent
    found = cpu.get_legend()
    assert found is not None
    legend = [text.get_text() for text in found.get_texts()]
    assert "peak beyond the axis" in legend


def panel_titles(figure: Any) -> list[str]:
    return [axis.get_title().split("\n")[0] for axis in figure.axes if axis.get_title()]


def test_no_panel_for_data_that_is_absent() -> None:
    assert panel_titles(charts(200).figures["memory"]) == ["Program memory"]  # no maps, no maps panel
    assert "Memory of its maps" not in panel_titles(charts(200).figures["overview"])
    with_maps = comparison_charts(*reversed(reports(200, with_maps=True)))
    assert panel_titles(with_maps.figures["memory"]) == ["Program memory", "Memory of its maps"]
    assert "Memory of its maps" in panel_titles(with_maps.figures["overview"])
    # A Go tool report has no footprint at all: a note instead of empty panels.
    go_report = report_from_dict(
        json.loads((Path(__file__).parent / "golden" / "go-collect-kernel-stats.json").read_text())
    )
    bare = comparison_charts(go_report, go_report)
    assert (
        bare.figures["program"].axes == []
        and "no program has these here" in bare.figures["program"].texts[0].get_text()
    )
    assert "Program memory" not in panel_titles(bare.figures["overview"])


def test_there_is_no_efficiency_chart_repeating_the_average_runtime() -> None:
    assert "efficiency" not in CHART_ORDER
    baseline, current = reports(3)
    titles = [
        title
        for figure in comparison_charts(current, baseline).figures.values()
        for title in panel_titles(figure)
    ]
    assert "CPU % per 1,000 events/s" not in titles


def test_the_summary_puts_runtime_and_cpu_first_and_writes_each_unit_once() -> None:
    baseline = fleet_report(5)
    current = fleet_report(5, heavier=1.1, code_growth=101)  # 10 % slower; program 0's code 101x
    summary = comparison_charts(current, baseline).summary.splitlines()
    code = next(index for index, line in enumerate(summary) if "JIT-compiled code size" in line)
    runtime = [index for index, line in enumerate(summary) if "average runtime per run" in line]
    assert runtime and max(runtime) < code  # +10 % of runtime outranks +10,000 % of code
    assert summary[0].startswith("WORSE  (total): estimated CPU ")  # the costliest change first
    line = summary[code]
    assert "JIT-compiled code size 80 B -> 7.9 KiB (+10000.0%)" in line
    assert "(B)" not in "\n".join(summary) and " B B" not in line
    assert "instructions the verifier processed 10 -> 1,010 instructions (+10000.0%)" in line


def test_a_stream_chart_has_gaps_where_a_program_did_not_run(tmp_path: Path) -> None:
    def line(runs: int, per_run_ns: int) -> dict[str, Any]:
        return {
            "name": "sometimes",
            "type": "XDP",
            "id": 1,
            "runtime_ns": runs * per_run_ns,
            "run_count": runs,
            "events_per_sec": runs,
            "avg_runtime_ns": per_run_ns if runs else 0,
            "estimated_cpu_percent": runs * per_run_ns / 1e7,
            "recursion_misses": 0,
        }

    intervals = [
        {"sometimes": line(10, 200)},
        {},  # NDJSON leaves an idle program out of the interval's line
        {"sometimes": line(0, 0)},  # or carries it with no runs (the Go tool's 0 average)
        {"sometimes": line(10, 300)},
    ]
    stream = tmp_path / "s.ndjson"
    stream.write_text(
        "".join(
            json.dumps({"kind": "interval", "elapsed_ns": 1_000_000_000, "program_stats": programs}) + "\n"
            for programs in intervals
        )
    )
    figure = stream_figure(read_stream(stream))
    by_title = {axis.get_title(): numpy.asarray(axis.lines[0].get_ydata()).tolist() for axis in figure.axes}
    runtime = by_title["Average runtime per run"]
    assert runtime[0] == 200 and math.isnan(runtime[1]) and math.isnan(runtime[2]) and runtime[3] == 300
    assert by_title["Events per second"] == [10, 0, 0, 10]  # a count is zero there, not a gap


def test_a_stream_of_2000_programs_draws_ten_and_the_others() -> None:
    baseline, _ = reports(2000)
    stream_lines = {f"p{line.id}": line for line in baseline.programs if line.run_count}
    from kstat.analysis.plot import StreamInterval  # noqa: PLC0415

    figure = stream_figure([StreamInterval(1_000_000_000, stream_lines)] * 3)
    found = figure.axes[0].get_legend()
    assert found is not None
    legend = [text.get_text() for text in found.get_texts()]
    assert len(legend) == 11 and legend[-1] == f"others ({len(stream_lines) - 10:,} programs)"
