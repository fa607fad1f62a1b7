"""`kstat history`: the trend of a job's runs, oldest to newest, the last one marked.

Reports are ordered by their timestamps (a report without one keeps its place on the command
line). The chart has one panel for the total's CPU share and, for the costliest programs of the
last run, one for their average runtime and one for their events per second; with `--last N`,
the N runs before the last are shaded: what the last run is compared with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from attrs import frozen

from kstat.analysis.charts import BASELINE_COLOUR, CURRENT_COLOUR, format_value, short_label
from kstat.core.catalogue import metric
from kstat.core.report import Report, parse_timestamp
from kstat.text import for_chart, for_terminal

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI: Final = 100
# Programs drawn in the per-program panels: the costliest of the last run.
PROGRAMS_DRAWN: Final = 6
# One colour per program line (matplotlib's tab10 without the blue of the totals), and the
# last run's rings.
SERIES_COLOURS: Final = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
LAST_COLOUR: Final = "#d62728"
MAX_TICKS: Final = 20


@frozen
class Run:
    """One report of the job, where it came from and when it was taken."""

    path: Path
    report: Report
    # Nanoseconds since the epoch; None when the report does not say (then its order is kept).
    taken_ns: int | None

    def label(self, *, seconds: bool = False) -> str:
        """`11-25 14:22` (with `:05` seconds if asked) when known, else the file's name."""
        if self.taken_ns is None or not self.report.timestamp:
            return self.path.stem
        return self.report.timestamp[5 : 19 if seconds else 16].replace("T", " ")


def labels(runs: Sequence[Run]) -> list[str]:
    """Each run's label: to the minute, or to the second where minutes would repeat."""
    by_minute = [run.label() for run in runs]
    if len(set(by_minute)) == len(by_minute):
        return by_minute
    return [run.label(seconds=True) for run in runs]


def in_order(paths: Sequence[Path], reports: Sequence[Report]) -> list[Run]:
    """The runs oldest first; a report without a time keeps its place relative to its neighbours."""
    runs = [
        Run(path, report, parse_timestamp(report.timestamp) if report.timestamp else None)
        for path, report in zip(paths, reports, strict=True)
    ]
    if all(run.taken_ns is not None for run in runs):
        return sorted(runs, key=lambda run: run.taken_ns or 0)
    return runs


def costliest_programs(report: Report, count: int = PROGRAMS_DRAWN) -> list[str]:
    """The names of the last run's costliest programs (by CPU share), most costly first."""
    by_name: dict[str, float] = {}
    for line in report.programs:
        by_name[line.name] = by_name.get(line.name, 0.0) + line.estimated_cpu_percent
    return sorted(by_name, key=lambda name: (-by_name[name], name))[:count]


def _program_value(report: Report, name: str, metric_name: str) -> float | None:
    """The metric over every program of that name in the run (summed counters, as compare
    does); None when it did not run there."""
    lines = [line for line in report.programs if line.name == name]
    runs = sum(line.run_count for line in lines)
    if not lines:
        return None
    if metric_name == "avg_runtime_ns":
        return sum(line.runtime_ns for line in lines) / runs if runs else None
    return float(sum(line.events_per_sec for line in lines))


def history_figure(runs: Sequence[Run], *, compared: int = 0, title: str | None = None) -> Figure:
    """Three panels over the runs; `compared` runs before the last are shaded."""
    from kstat.analysis.plot import pyplot  # noqa: PLC0415

    pyplot("kstat history -o FILE.png")  # the Agg backend (files only), or which extra is missing
    from matplotlib import figure as mpl_figure  # noqa: PLC0415 - matplotlib only loads to draw

    positions = list(range(len(runs)))
    last = runs[-1].report
    names = costliest_programs(last)
    drawn = mpl_figure.Figure(figsize=(12, 11), dpi=DPI)
    axes = drawn.subplots(3, 1, sharex=True)
    panels = (
        (axes[0], "estimated_cpu_percent", "Total: estimated CPU", None),
        (axes[1], "avg_runtime_ns", "Average runtime per run, costliest programs of the last run", names),
        (axes[2], "events_per_sec", "Events per second, costliest programs of the last run", names),
    )
    for axis, metric_name, panel_title, programs in panels:
        entry = metric(metric_name)
        # (series, colour, label): every line its own colour, rings and labels drawn after.
        lines: list[tuple[list[float | None], str, str]] = []
        if programs is None:
            totals = [float(run.report.totals.get(metric_name, 0.0)) for run in runs]
            lines.append((list(totals), CURRENT_COLOUR, "all programs"))
        else:
            for index, name in enumerate(programs):
                series = [_program_value(run.report, name, metric_name) for run in runs]
                colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
                lines.append((series, colour, for_chart(short_label(name))))
            if not programs:
                axis.text(
                    0.5,
                    0.5,
                    "no programs ran in the last run",
                    ha="center",
                    va="center",
                    transform=axis.transAxes,
                )
        for series, colour, label in lines:
            axis.plot(
                positions,
                [float("nan") if value is None else value for value in series],
                marker="o",
                color=colour,
                label=label,
            )
        _mark_last(axis, positions[-1], [series[-1] for series, _, _ in lines], entry.unit)
        if compared:
            start = max(0, len(runs) - 1 - compared)
            axis.axvspan(
                start - 0.4,
                len(runs) - 1.6,
                color=BASELINE_COLOUR,
                alpha=0.15,
                label=f"the {compared} runs compared" if axis is axes[0] else None,
            )
        axis.set_title(panel_title, fontsize=11)
        axis.set_ylabel(entry.unit)
        # From zero, with room above the highest point for the last run's value.
        axis.set_ylim(0, max(axis.get_ylim()[1], 1e-9) * 1.15)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    # At most MAX_TICKS labels (the last always): more would print over each other.
    step = max(1, math.ceil(len(runs) / MAX_TICKS))
    ticked = sorted({*positions[::-step], positions[-1]})
    every = [for_chart(label) for label in labels(runs)]
    axes[-1].set_xticks(ticked, [every[index] for index in ticked], rotation=45, ha="right", fontsize=8)
    axes[-1].set_xlabel("run (oldest to newest; the last ringed)")
    drawn.suptitle(title or f"kstat history: {len(runs)} runs", fontsize=13)
    drawn.tight_layout()
    return drawn


def _mark_last(axis: Axes, position: int, values: Sequence[float | None], unit: str) -> None:
    """Ring each line's last point; write its value where it does not crowd another's."""
    known = sorted((value for value in values if value is not None), reverse=True)
    top = max(known, default=0.0) or 1.0
    written: list[float] = []
    for value in known:
        axis.plot(
            [position],
            [value],
            marker="o",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor=LAST_COLOUR,
            markeredgewidth=2,
            color=LAST_COLOUR,
        )
        if all(abs(value - other) > 0.08 * top for other in written):
            written.append(value)
            axis.annotate(
                f"{format_value(value, unit)} {unit}",
                (position, value),
                textcoords="offset points",
                xytext=(-12, 8),
                ha="right",
                fontsize=8,
                color=LAST_COLOUR,
            )


def history_table(runs: Sequence[Run]) -> str:
    """One line per run: when, programs, and the totals that the chart draws."""
    names = ("estimated_cpu_percent", "events_per_sec", "avg_runtime_ns")
    header = ["run", "programs", *(metric(name).heading for name in names)]
    rows = [
        [
            label,
            str(run.report.num_programs),
            *(format_value(float(run.report.totals.get(name, 0)), metric(name).unit) for name in names),
        ]
        for label, run in zip(labels(runs), runs, strict=True)
    ]
    rows[-1][0] += " (last)"
    rows = [[for_terminal(cell) for cell in row] for row in rows]  # a label may be a file's name
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"
