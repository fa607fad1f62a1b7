"""The comparison charts of a report beside a baseline (or alone): what the seed's comparison
script drew, from the metric catalogue.

- per program: CPU %, events/s and average runtime;
- the totals of each;
- program metadata (code size, verified instructions, maps) and memory footprint;
- CPU efficiency (runtime per event, CPU % per 1,000 events/s);
- one overview figure combining them, and a short text summary of the changes, largest
  regressions first.

Programs are matched as `kstat compare` matches them (a Go tool baseline included), and only
those active on either side are drawn unless `include_idle` is set. Change is
(new - old) / old; from zero it reads "new".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from attrs import frozen

from kstat.analysis.compare import TOTAL, Comparison, Measures, compare
from kstat.core.catalogue import Better, Metric, View, in_view, metric
from kstat.core.report import Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BASELINE_COLOUR: Final = "#9aa5b1"
CURRENT_COLOUR: Final = "#1f77b4"
WORSE_COLOUR: Final = "#c0392b"
BETTER_COLOUR: Final = "#1e8449"
# The highest one-interval CPU share, marked on the CPU panels.
PEAK_COLOUR: Final = "#e67e22"
PEAK_METRIC: Final = "max_cpu_percent"
MAX_LABEL: Final = 34
# Programs drawn in a per-program panel of the overview (the costliest by current CPU).
OVERVIEW_PROGRAMS: Final = 8
SUMMARY_LINES: Final = 12
DPI: Final = 100


def short_label(label: str, limit: int = MAX_LABEL) -> str:
    """A long program name shortened in the middle, where names differ least
    (`flow_exporter_parse_…_headers`), so that both ends stay readable."""
    if len(label) <= limit:
        return label
    keep = limit - 1
    return label[: keep - keep // 3] + "…" + label[len(label) - keep // 3 :]


def change_text(before: float | None, after: float | None) -> str:
    """(new - old) / old as a signed percentage; "new" from zero, "gone" to nothing."""
    if before is None and after is None:
        return ""
    if before is None:
        return "new"
    if after is None:
        return "gone"
    if before == 0:
        return "±0%" if after == 0 else "new"
    if after == before:
        return "±0%"
    return f"{(after - before) / before * 100:+.1f}%"


def format_value(value: float, unit: str) -> str:
    if unit == "bytes":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value:.0f} B"
    if value == 0:
        return "0"
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


@frozen
class ChartRow:
    """One program (or several of one name and type), with each side's metrics."""

    label: str
    current: Measures | None
    baseline: Measures | None

    def value(self, side: Measures | None, name: str) -> float | None:
        return None if side is None else side.value(name)

    @property
    def active(self) -> bool:
        return any((side.value("run_count") or 0) > 0 for side in (self.current, self.baseline) if side)


@frozen
class ChartSet:
    """Every figure by name (`overview`, `cpu`, ...), and the text summary of the changes."""

    figures: dict[str, Figure]
    summary: str


def _rows(comparison: Comparison) -> list[ChartRow]:
    rows = []
    for row in comparison.rows:
        copies = max(side.programs for side in (row.baseline, row.current) if side is not None)
        label = row.name if copies == 1 else f"{row.name} (x{copies})"
        rows.append(ChartRow(label, row.current, row.baseline))
    return rows


def comparison_charts(
    current: Report, baseline: Report | None = None, *, include_idle: bool = False, title: str | None = None
) -> ChartSet:
    """Every chart of `current` beside `baseline` (or alone), and the summary."""
    from kstat.analysis.plot import pyplot  # noqa: PLC0415 - matplotlib only loads to draw

    plt = pyplot()
    comparison = compare(baseline if baseline is not None else current, current)
    rows = [row for row in _rows(comparison) if include_idle or row.active]
    if baseline is None:
        rows = [ChartRow(row.label, row.current, None) for row in rows]
    total = ChartRow(TOTAL, comparison.total.current, comparison.total.baseline if baseline else None)
    heading = title or _default_title(current, baseline, len(rows))
    drawn = _Drawer(plt, rows, total, with_baseline=baseline is not None)
    figures = {
        "cpu": drawn.per_program([metric("estimated_cpu_percent")], f"{heading}: CPU"),
        "events": drawn.per_program([metric("events_per_sec")], f"{heading}: events per second"),
        "runtime": drawn.per_program([metric("avg_runtime_ns")], f"{heading}: average runtime"),
        "totals": drawn.totals(in_view(View.CHART), f"{heading}: totals"),
        "program": drawn.per_program(in_view(View.PROGRAM), f"{heading}: program metadata"),
        "memory": drawn.per_program(in_view(View.MEMORY), f"{heading}: memory footprint", with_total=True),
        "efficiency": drawn.per_program(in_view(View.EFFICIENCY), f"{heading}: CPU efficiency"),
    }
    summary = summarise(comparison, rows, baseline is not None)
    figures["overview"] = drawn.overview(heading, summary)
    return ChartSet(figures, summary)


def _default_title(current: Report, baseline: Report | None, programs: int) -> str:
    window = current.collection_duration_ns / 1e9
    what = "baseline vs current" if baseline is not None else "kernel-side cost"
    return f"kstat {what}: {programs} programs, {window:.1f} s window"


class _Drawer:
    def __init__(self, plt: Any, rows: Sequence[ChartRow], total: ChartRow, *, with_baseline: bool) -> None:
        self.plt = plt
        self.rows = rows
        self.total = total
        self.with_baseline = with_baseline

    @staticmethod
    def _figure(width: float, height: float) -> Figure:
        # Not through pyplot: its registry would keep every figure of a chart set alive until
        # closed, and a harness drawing in a loop would grow without bound.
        from matplotlib import figure  # noqa: PLC0415 - matplotlib only loads to draw

        return figure.Figure(figsize=(width, height), dpi=DPI)

    def per_program(self, metrics: Sequence[Metric], title: str, *, with_total: bool = False) -> Figure:
        """One panel per metric, two to a row when there are four (a wide strip reads badly)."""
        columns = 2 if len(metrics) == 4 else len(metrics)
        rows = math.ceil(len(metrics) / columns)
        height = max(3.2, 0.36 * len(self.rows) * (2 if self.with_baseline else 1) + 1.8)
        figure = self._figure(6.6 * columns, height * rows + 0.4)
        axes = figure.subplots(rows, columns, squeeze=False)
        for axis, entry in zip(axes.flat, metrics, strict=True):
            self._program_bars(axis, entry, self.rows)
            if with_total:
                self._total_note(axis, entry)
        self._legend(figure)
        figure.suptitle(title, fontsize=13)
        figure.tight_layout(rect=(0, 0, 1, self._top(figure)))
        return figure

    def totals(self, metrics: Sequence[Metric], title: str) -> Figure:
        figure = self._figure(4.2 * len(metrics), 4.2)
        axes = figure.subplots(1, len(metrics), squeeze=False)
        for axis, entry in zip(axes[0], metrics, strict=True):
            self._total_bars(axis, entry)
        self._legend(figure)
        figure.suptitle(title, fontsize=13)
        figure.tight_layout(rect=(0, 0, 1, self._top(figure)))
        return figure

    def overview(self, title: str, summary: str) -> Figure:
        figure = self._figure(19, 17)
        grid = figure.add_gridspec(4, 3, height_ratios=(1.25, 0.9, 1.0, 0.75))
        costliest = sorted(
            self.rows, key=lambda row: row.value(row.current, "estimated_cpu_percent") or 0.0, reverse=True
        )[:OVERVIEW_PROGRAMS]
        for column, name in enumerate(("estimated_cpu_percent", "events_per_sec", "avg_runtime_ns")):
            self._program_bars(figure.add_subplot(grid[0, column]), metric(name), costliest)
        for column, name in enumerate(("estimated_cpu_percent", "events_per_sec", "avg_runtime_ns")):
            self._total_bars(figure.add_subplot(grid[1, column]), metric(name))
        bottom = ("memlock_bytes", "maps_memlock_bytes", "cpu_percent_per_1000_events_per_sec")
        for column, name in enumerate(bottom):
            self._program_bars(figure.add_subplot(grid[2, column]), metric(name), costliest)
        text_axis = figure.add_subplot(grid[3, :])
        text_axis.axis("off")
        heading = "Changes, largest regressions first" if self.with_baseline else "Costliest programs"
        text_axis.set_title(heading, loc="left", fontsize=11)
        text_axis.text(
            0.0,
            0.95,
            summary,
            va="top",
            ha="left",
            family="monospace",
            fontsize=9.5,
            transform=text_axis.transAxes,
        )
        self._legend(figure)
        shown_programs = (
            f"the {len(costliest)} costliest of {len(self.rows)} programs" if costliest else "no programs"
        )
        figure.suptitle(f"{title} (per-program panels: {shown_programs})", fontsize=14)
        figure.tight_layout(rect=(0, 0, 1, 0.95))
        return figure

    def _program_bars(self, axis: Axes, entry: Metric, rows: Sequence[ChartRow]) -> None:
        name = entry.name
        ordered = sorted(rows, key=lambda row: (row.value(row.current, name) or 0.0, row.label))
        positions = list(range(len(ordered)))
        current = [ordered_row.value(ordered_row.current, name) for ordered_row in ordered]
        largest = max([value or 0.0 for value in current] + [0.0])
        if self.with_baseline:
            baseline = [ordered_row.value(ordered_row.baseline, name) for ordered_row in ordered]
            largest = max([largest] + [value or 0.0 for value in baseline])
            height = 0.4
            axis.barh(
                [p + height / 2 for p in positions],
                [v or 0.0 for v in baseline],
                height=height,
                color=BASELINE_COLOUR,
                label="baseline",
            )
            bars = axis.barh(
                [p - height / 2 for p in positions],
                [v or 0.0 for v in current],
                height=height,
                color=CURRENT_COLOUR,
                label="current",
            )
            labels = [
                self._bar_text(row, entry, before, after)
                for row, before, after in zip(ordered, baseline, current, strict=True)
            ]
        else:
            bars = axis.barh(
                positions, [v or 0.0 for v in current], height=0.6, color=CURRENT_COLOUR, label="current"
            )
            labels = [self._label(value, entry.unit) for value in current]
        axis.bar_label(bars, labels=labels, padding=3, fontsize=7.5)
        largest = max(largest, self._mark_peaks(axis, entry, ordered, positions))
        if entry.integral and entry.unit != "bytes":
            axis.xaxis.set_major_locator(self.plt.MaxNLocator(integer=True))
        if entry.unit == "bytes":
            # Few ticks, at round binary sizes (1 KiB, 512 KiB, 2 MiB): their labels are wide.
            axis.xaxis.set_major_locator(self.plt.MultipleLocator(_binary_step(largest * 1.45)))
            axis.xaxis.set_major_formatter(
                self.plt.FuncFormatter(lambda value, _: format_value(value, "bytes"))
            )
        axis.set_yticks(positions, [short_label(row.label) for row in ordered], fontsize=8.5)
        # Room on the right for the values written after the bars.
        axis.set_xlim(0, largest * 1.45 if largest > 0 else 1)
        axis.set_title(entry.title, fontsize=11)
        axis.set_xlabel(entry.unit)
        axis.grid(axis="x", alpha=0.3)
        if not ordered:
            axis.text(0.5, 0.5, "no programs", ha="center", va="center", transform=axis.transAxes)
        elif all(value is None for value in current) and (
            not self.with_baseline or all(row.value(row.baseline, name) is None for row in ordered)
        ):
            # Reports from before kstat read it (or the Go tool's) do not carry this metric.
            axis.text(
                0.5,
                0.5,
                "not in these reports",
                ha="center",
                va="center",
                color="#666666",
                transform=axis.transAxes,
            )

    def _total_bars(self, axis: Axes, entry: Metric) -> None:
        total = self.total
        before = total.value(total.baseline, entry.name)
        after = total.value(total.current, entry.name)
        names, values, colours = [], [], []
        if self.with_baseline:
            names.append("baseline")
            values.append(before or 0.0)
            colours.append(BASELINE_COLOUR)
        names.append("current")
        values.append(after or 0.0)
        colours.append(CURRENT_COLOUR)
        bars = axis.bar(names, values, color=colours, width=0.55)
        axis.bar_label(
            bars, labels=[self._label(value, entry.unit) for value in values], padding=3, fontsize=9
        )
        axis.set_ylim(0, max([*values, 0.0]) * 1.25 or 1)
        change = change_text(before, after) if self.with_baseline else ""
        colour = self._change_colour(entry, before, after)
        axis.set_title(f"Total {entry.title[0].lower()}{entry.title[1:]}", fontsize=11)
        if change:
            axis.text(
                0.5,
                0.92,
                change,
                ha="center",
                transform=axis.transAxes,
                color=colour,
                fontsize=11,
                fontweight="bold",
            )
        axis.set_ylabel(entry.unit)
        axis.grid(axis="y", alpha=0.3)

    def _total_note(self, axis: Axes, entry: Metric) -> None:
        total = self.total
        after = total.value(total.current, entry.name)
        if after is None:
            return
        text = f"in total {self._label(after, entry.unit)}"
        if self.with_baseline:
            before = total.value(total.baseline, entry.name)
            text += f" (baseline {self._label(before, entry.unit)}, {change_text(before, after)})"
        axis.set_title(f"{entry.title}\n{text}", fontsize=11)

    def _mark_peaks(
        self, axis: Axes, entry: Metric, rows: Sequence[ChartRow], positions: Sequence[int]
    ) -> float:
        """On a CPU share panel, each side's highest one-interval share beside its bar (what the
        window's average hides); returns the largest peak (0 without any)."""
        if entry.name != "estimated_cpu_percent":
            return 0.0
        # (bar offset, which side, marker fill, legend)
        sides = [(0.0, True, PEAK_COLOUR, "peak interval")]
        if self.with_baseline:
            sides = [
                (-0.2, True, PEAK_COLOUR, "peak interval, current"),
                (0.2, False, "none", "peak interval, baseline"),
            ]
        handles, largest = [], 0.0
        for offset, side, face, label in sides:
            shown = [
                (peak, position + offset)
                for row, position in zip(rows, positions, strict=True)
                if (peak := row.value(row.current if side else row.baseline, PEAK_METRIC))
            ]
            if shown:
                handles.append(
                    axis.scatter(
                        [peak for peak, _ in shown],
                        [at for _, at in shown],
                        marker="D",
                        s=24,
                        facecolors=face,
                        edgecolors=PEAK_COLOUR,
                        zorder=3,
                        label=label,
                    )
                )
                largest = max([largest] + [peak for peak, _ in shown])
        if handles:
            axis.legend(handles=handles, loc="lower right", fontsize=7.5, frameon=False)
        return largest

    def _legend(self, figure: Figure) -> None:
        if self.with_baseline:
            handles = [
                self.plt.Rectangle((0, 0), 1, 1, color=BASELINE_COLOUR),
                self.plt.Rectangle((0, 0), 1, 1, color=CURRENT_COLOUR),
            ]
            # Under the title, centred: beside it, a long title on a narrow chart ran into it.
            figure.legend(
                handles,
                ["baseline", "current"],
                loc="upper center",
                ncol=2,
                frameon=False,
                bbox_to_anchor=(0.5, 1 - 0.5 / figure.get_figheight()),
            )

    def _top(self, figure: Figure) -> float:
        """Where the panels may start: below the title, and the legend when there is one."""
        room = 0.65 if self.with_baseline else 0.45
        return 1 - room / figure.get_figheight()

    @staticmethod
    def _label(value: float | None, unit: str) -> str:
        return "-" if value is None else format_value(value, unit)

    def _bar_text(self, row: ChartRow, entry: Metric, before: float | None, after: float | None) -> str:
        """The current value and its change; "gone" only for a program that is gone, "n/a"
        for a metric a report does not carry."""
        if row.current is None:
            return "gone"
        if after is None:
            return "n/a"
        if row.baseline is None:
            return f"{self._label(after, entry.unit)}  (new)"
        if before is None:
            return self._label(after, entry.unit)
        return f"{self._label(after, entry.unit)}  ({change_text(before, after)})"

    @staticmethod
    def _change_colour(entry: Metric, before: float | None, after: float | None) -> str:
        worse = _worsening(entry, before, after)
        if worse is None:
            return "#333333"
        return WORSE_COLOUR if worse > 0 else BETTER_COLOUR


def _binary_step(span: float) -> float:
    """A power of two that cuts `span` into three to six ticks."""
    step = 1.0
    while span / step > 6:
        step *= 2
    return step


def _worsening(entry: Metric, before: float | None, after: float | None) -> float | None:
    """How much worse (positive) or better (negative), relatively; None if neither applies."""
    if before is None or after is None or entry.better is Better.NEITHER:
        return None
    if before == 0:
        return math.inf if after > 0 and entry.better is Better.LOWER else None
    change = (after - before) / before
    return change if entry.better is Better.LOWER else -change


# What the summary looks at, in this order of importance when two changes are equal.
SUMMARY_METRICS: Final[tuple[str, ...]] = (
    "avg_runtime_ns",
    "estimated_cpu_percent",
    "memlock_bytes",
    "maps_memlock_bytes",
    "jited_size_bytes",
    "verified_instructions",
)


def summarise(comparison: Comparison, rows: Sequence[ChartRow], with_baseline: bool) -> str:
    """The changes worth reading, largest regressions first, then new and gone programs."""
    if not with_baseline:
        return _costliest(rows)
    changes: list[tuple[float, str]] = []
    for row in [*rows, ChartRow(TOTAL, comparison.total.current, comparison.total.baseline)]:
        if row.current is None or row.baseline is None:
            continue
        for name in SUMMARY_METRICS:
            entry = metric(name)
            before, after = row.value(row.baseline, name), row.value(row.current, name)
            worse = _worsening(entry, before, after)
            if worse is None or worse == 0 or before is None or after is None:
                continue
            changes.append(
                (
                    worse,
                    f"{short_label(row.label, 44)}: {entry.heading} {format_value(before, entry.unit)}"
                    f" -> {format_value(after, entry.unit)} ({change_text(before, after)})",
                )
            )
    changes.sort(key=lambda change: -change[0])
    lines = [("WORSE  " if worse > 0 else "better ") + text for worse, text in changes[:SUMMARY_LINES]]
    new = [row.label for row in rows if row.baseline is None]
    gone = [row.label for row in rows if row.current is None]
    if new:
        lines.append(f"new:  {', '.join(short_label(label, 44) for label in new)}")
    if gone:
        lines.append(f"gone: {', '.join(short_label(label, 44) for label in gone)}")
    return "\n".join(lines) if lines else "no change in runtime, CPU or memory"


def _costliest(rows: Sequence[ChartRow]) -> str:
    ordered = sorted(
        rows, key=lambda row: row.value(row.current, "estimated_cpu_percent") or 0.0, reverse=True
    )
    lines = []
    for row in ordered[:SUMMARY_LINES]:
        cpu = row.value(row.current, "estimated_cpu_percent") or 0.0
        runtime = row.value(row.current, "avg_runtime_ns") or 0.0
        lines.append(f"{short_label(row.label, 44)}: {cpu:.3f}% of a CPU, {runtime:,.0f} ns/run")
    return "\n".join(lines) or "no active programs"


# Names of the files `kstat plot` writes for a chart set, beside the overview.
CHART_ORDER: Final = ("overview", "cpu", "events", "runtime", "totals", "program", "memory", "efficiency")
