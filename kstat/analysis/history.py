"""`kstat history`: the trend of a job's runs, oldest to newest, the last one marked.

Reports are ordered by their timestamps (a report without one keeps its place on the command
line). The chart has one panel for the total's CPU share and, for the costliest programs of the
last run, one for their average runtime and one for their events per second; with `--last N`,
the N runs before the last are shaded: what the last run is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from attrs import frozen

from kstat.analysis.charts import BASELINE_COLOUR, CURRENT_COLOUR, format_value, short_label
from kstat.pipeline.catalogue import metric
from kstat.pipeline.report import Report, parse_timestamp

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI: Final = 100
# Programs drawn in the per-program panels: the costliest of the last run.
PROGRAMS_DRAWN: Final = 6


@frozen
class Run:
    """One report of the job, where it came from and when it was taken."""

    path: Path
    report: Report
    # Nanoseconds since the epoch; None when the report does not say (then its order is kept).
    taken_ns: int | None

    @property
    def label(self) -> str:
        """`11-25 14:22` when known, else the file's name."""
        if self.taken_ns is None or not self.report.timestamp:
            return self.path.stem
        return self.report.timestamp[5:16].replace("T", " ")


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
    from matplotlib import figure as mpl_figure  # noqa: PLC0415 - matplotlib only loads to draw

    from kstat.analysis.plot import pyplot  # noqa: PLC0415

    pyplot()  # the Agg backend: files only
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
        if programs is None:
            values = [float(run.report.totals.get(metric_name, 0.0)) for run in runs]
            axis.plot(positions, values, marker="o", color=CURRENT_COLOUR, label="all programs")
            _mark_last(axis, positions[-1], values[-1], entry.unit)
        else:
            for name in programs:
                series = [_program_value(run.report, name, metric_name) for run in runs]
                axis.plot(
                    positions,
                    [float("nan") if v is None else v for v in series],
                    marker="o",
                    label=short_label(name),
                )
                if series[-1] is not None:
                    _mark_last(axis, positions[-1], series[-1], entry.unit)
            if not programs:
                axis.text(
                    0.5,
                    0.5,
                    "no programs ran in the last run",
                    ha="center",
                    va="center",
                    transform=axis.transAxes,
                )
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
    axes[-1].set_xticks(positions, [run.label for run in runs], rotation=45, ha="right", fontsize=8)
    axes[-1].set_xlabel("run (oldest to newest; the last ringed)")
    drawn.suptitle(title or f"kstat history: {len(runs)} runs", fontsize=13)
    drawn.tight_layout()
    return drawn


def _mark_last(axis: object, position: int, value: float, unit: str) -> None:
    from matplotlib.axes import Axes  # noqa: PLC0415

    assert isinstance(axis, Axes)
    axis.plot(
        [position],
        [value],
        marker="o",
        markersize=13,
        markerfacecolor="none",
        markeredgecolor="#d62728",
        markeredgewidth=2,
    )
    axis.annotate(
        f"{format_value(value, unit)} {unit}",
        (position, value),
        textcoords="offset points",
        xytext=(-10, 10),
        ha="right",
        fontsize=8,
        color="#d62728",
    )


def history_table(runs: Sequence[Run]) -> str:
    """One line per run: when, programs, and the totals that the chart draws."""
    names = ("estimated_cpu_percent", "events_per_sec", "avg_runtime_ns")
    header = ["run", "programs", *(metric(name).heading for name in names)]
    rows = [
        [
            run.label,
            str(run.report.num_programs),
            *(format_value(float(run.report.totals.get(name, 0)), metric(name).unit) for name in names),
        ]
        for run in runs
    ]
    rows[-1][0] += " (last)"
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"
