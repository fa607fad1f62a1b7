"""The comparison charts of a report beside a baseline (or alone): what the seed's comparison
script drew, from the metric catalogue, at any number of programs.

- per program: CPU % (and each program's peak interval), events/s and average runtime;
- the totals of each;
- program metadata (code size, verified instructions, maps) and memory footprint;
- one overview figure combining them, and a short text summary of the changes: runtime and CPU
  regressions first, then memory, then code size.

A panel draws at most MAX_PROGRAMS programs, the costliest by the metric it charts, and one
"others" bar for the rest (their counters summed, the metric computed from the sums), so a chart
has the same size at 20 programs or 20,000. A panel whose metric no report carries (or that is
zero everywhere: no program has maps) is left out. Programs are matched as `kstat compare`
matches them (a Go tool baseline included), and only those active on either side are drawn
unless `include_idle` is set. Change is (new - old) / old; from zero it reads "new".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from attrs import frozen

from kstat.analysis.compare import TOTAL, Comparison, Measures, compare_runs
from kstat.core.catalogue import METRICS, Better, Kind, Metric, Span, View, in_view, metric, values
from kstat.core.counters import COUNTERS, Counters, CounterSpec
from kstat.core.report import Report
from kstat.text import for_chart, for_terminal, shortened

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BASELINE_COLOUR: Final = "#9aa5b1"
CURRENT_COLOUR: Final = "#1f77b4"
OTHERS_COLOUR: Final = "#c8d1da"
WORSE_COLOUR: Final = "#c0392b"
BETTER_COLOUR: Final = "#1e8449"
# The highest one-interval CPU share, marked on the CPU panels.
PEAK_COLOUR: Final = "#e67e22"
PEAK_METRIC: Final = "max_cpu_percent"
PEAK_BEYOND: Final = "peak beyond the axis"
MAX_LABEL: Final = 34
# Programs drawn in a panel of their own chart, and in a panel of the overview: the costliest
# by the panel's metric; the rest are one "others" bar.
MAX_PROGRAMS: Final = 12
OVERVIEW_PROGRAMS: Final = 8
SUMMARY_LINES: Final = 12
DPI: Final = 100
# A bar's height in inches (two bars a program beside a baseline), and a panel's room for its
# title and axis; a panel is never taller than MAX_PROGRAMS + 1 bars need.
_BAR_IN: Final = 0.26
_PANEL_FRAME_IN: Final = 1.3
_PANEL_WIDTH_IN: Final = 7.0
OTHERS: Final = "others"


def short_label(label: str, limit: int = MAX_LABEL) -> str:
    """A long program name shortened in the middle, where names differ least
    (`flow_exporter_parse_…_headers`), so that both ends stay readable; on one line, its
    control characters spelt out (`for_terminal`)."""
    return shortened(for_terminal(label), limit)


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
    """One program (or several of one name and type), with each side's metrics; or the
    "others" of a panel (`others` programs, their counters summed)."""

    label: str
    current: Measures | None
    baseline: Measures | None
    others: int = 0

    def value(self, side: Measures | None, name: str) -> float | None:
        return None if side is None else side.value(name)

    @property
    def active(self) -> bool:
        return any((side.value("run_count") or 0) > 0 for side in (self.current, self.baseline) if side)

    def largest(self, name: str) -> float:
        """The larger side's value: what ranks it in a panel (a gone program's baseline too)."""
        return max(self.value(self.current, name) or 0.0, self.value(self.baseline, name) or 0.0)


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


def combined(measures: Sequence[Measures], elapsed_ns: int) -> Measures | None:
    """Several rows' measures as one: counters summed, the catalogue's metrics computed from
    the sums (an average runtime is the rest's runtime over their runs), properties summed where
    every row has them; percentiles do not add up, so there are none."""
    if not measures:
        return None

    def total(spec: CounterSpec) -> int | None:
        if spec.metric is None:  # a per-CPU split: no chart draws it
            return None
        found = [side.value(spec.metric) for side in measures]
        return None if None in found else round(sum(value or 0.0 for value in found))

    # The measures carry each counter's growth as the metric it becomes (`runtime_ns`).
    grown = Counters._make(total(spec) for spec in COUNTERS)
    span = Span(counters=grown, elapsed_ns=elapsed_ns, online_cpus=None)
    found = dict(values(span))
    for entry in METRICS:
        if entry.kind is Kind.PROPERTY:
            known = [side.value(entry.name) for side in measures]
            if None not in known:
                found[entry.name] = sum(value for value in known if value is not None)
    return Measures(programs=sum(side.programs for side in measures), values=found)


def costliest(rows: Sequence[ChartRow], name: str, count: int, elapsed_ns: tuple[int, int]) -> list[ChartRow]:
    """The `count` rows with the largest `name` (either side), and one "others" row for the
    rest, most costly first."""
    ranked = sorted(rows, key=lambda row: (-row.largest(name), row.label))
    shown, rest = ranked[:count], ranked[count:]
    if not rest or metric(name).kind is Kind.DISTRIBUTION:
        return shown  # several programs' percentiles make no percentile: no others bar
    baseline_elapsed, current_elapsed = elapsed_ns
    others = ChartRow(
        f"{OTHERS} ({len(rest):,} programs)",
        combined([row.current for row in rest if row.current is not None], current_elapsed),
        combined([row.baseline for row in rest if row.baseline is not None], baseline_elapsed),
        others=len(rest),
    )
    return [*shown, others]


def comparison_charts(
    current: Report | Sequence[Report],
    baseline: Report | Sequence[Report] | None = None,
    *,
    include_idle: bool = False,
    title: str | None = None,
) -> ChartSet:
    """Every chart of `current` beside `baseline` (or alone), and the summary. Either side may
    be several runs of one workload: each bar is then the median of its runs, as `kstat compare`
    gates on, so that the picture and the verdict agree."""
    from kstat.analysis.plot import pyplot  # noqa: PLC0415 - matplotlib only loads to draw

    plt = pyplot("kstat plot")
    currents = [current] if isinstance(current, Report) else list(current)
    baselines = None if baseline is None else [baseline] if isinstance(baseline, Report) else list(baseline)
    comparison = compare_runs(baselines if baselines is not None else currents, currents)
    rows = [row for row in _rows(comparison) if include_idle or row.active]
    if baseline is None:
        rows = [ChartRow(row.label, row.current, None) for row in rows]
    total = ChartRow(TOTAL, comparison.total.current, comparison.total.baseline if baseline else None)
    heading = title or _default_title(comparison, baseline is not None, len(rows))
    elapsed = (comparison.baseline_elapsed_ns, comparison.current_elapsed_ns)
    drawn = _Drawer(plt, rows, total, elapsed, with_baseline=baseline is not None)
    figures = {
        "cpu": drawn.per_program([metric("estimated_cpu_percent"), metric(PEAK_METRIC)], f"{heading}: CPU"),
        "events": drawn.per_program([metric("events_per_sec")], f"{heading}: events per second"),
        "runtime": drawn.per_program([metric("avg_runtime_ns")], f"{heading}: average runtime"),
        "totals": drawn.totals(in_view(View.CHART), f"{heading}: totals"),
        "program": drawn.per_program(in_view(View.PROGRAM), f"{heading}: program metadata"),
        "memory": drawn.per_program(in_view(View.MEMORY), f"{heading}: memory footprint", with_total=True),
    }
    summary = summarise(comparison, rows, baseline is not None)
    figures["overview"] = drawn.overview(heading, summary)
    if comparison.owners:
        # Each agent's whole cost, where the reports have owners sections.
        from kstat.analysis.owner_chart import owners_figure  # noqa: PLC0415

        figures["owners"] = owners_figure(
            comparison, with_baseline=baseline is not None, title=f"{heading}: whole cost per owner"
        )
    return ChartSet(figures, summary)


def _default_title(comparison: Comparison, with_baseline: bool, programs: int) -> str:
    window = comparison.current_elapsed_ns / 1e9
    what = "baseline vs current" if with_baseline else "kernel-side cost"
    if comparison.several_runs:
        runs = (
            f"medians of {comparison.baseline_runs} and {comparison.current_runs} runs"
            if with_baseline
            else f"medians of {comparison.current_runs} runs"
        )
        return f"kstat {what} ({runs}): {programs:,} programs, {window:.1f} s windows"
    return f"kstat {what}: {programs:,} programs, {window:.1f} s window"


class _Drawer:
    def __init__(
        self,
        plt: Any,
        rows: Sequence[ChartRow],
        total: ChartRow,
        elapsed_ns: tuple[int, int],
        *,
        with_baseline: bool,
    ) -> None:
        self.plt = plt
        self.rows = rows
        self.total = total
        self.elapsed_ns = elapsed_ns
        self.with_baseline = with_baseline

    @staticmethod
    def _figure(width: float, height: float) -> Figure:
        # Not through pyplot: its registry would keep every figure of a chart set alive until
        # closed, and a harness drawing in a loop would grow without bound.
        from matplotlib import figure  # noqa: PLC0415 - matplotlib only loads to draw

        return figure.Figure(figsize=(width, height), dpi=DPI)

    def present(self, entry: Metric) -> bool:
        """Whether any program, on either side, has this metric above zero: a panel of nothing
        but zeros or gaps (no maps, a report that does not carry it) is left out."""
        return any(row.largest(entry.name) > 0 for row in (*self.rows, self.total))

    def _panel_height(self, programs: int) -> float:
        bars = min(programs, MAX_PROGRAMS + 1) * (2 if self.with_baseline else 1)
        return max(2.6, bars * _BAR_IN + _PANEL_FRAME_IN)

    def per_program(self, metrics: Sequence[Metric], title: str, *, with_total: bool = False) -> Figure:
        """One panel per metric that has data, two to a row when there are four (a wide strip
        reads badly); a note instead when none has."""
        shown = [entry for entry in metrics if self.present(entry)]
        if not shown:
            figure = self._figure(_PANEL_WIDTH_IN, 2.6)
            figure.text(
                0.5,
                0.5,
                f"{title}:\nno program has these here ({', '.join(entry.title for entry in metrics)})",
                ha="center",
                va="center",
                color="#666666",
            )
            return figure
        columns = 2 if len(shown) == 4 else len(shown)
        grid_rows = math.ceil(len(shown) / columns)
        height = self._panel_height(len(self.rows))
        figure = self._figure(_PANEL_WIDTH_IN * columns, height * grid_rows + self._title_room())
        axes = figure.subplots(grid_rows, columns, squeeze=False)
        for axis, entry in zip(axes.flat, shown, strict=False):
            self._program_bars(axis, entry, costliest(self.rows, entry.name, MAX_PROGRAMS, self.elapsed_ns))
            if with_total:
                self._total_note(axis, entry)
        for axis in list(axes.flat)[len(shown) :]:
            axis.remove()
        self._legend(figure)
        figure.suptitle(title, fontsize=13, y=1 - 0.12 / figure.get_figheight())
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
        top_row = ("estimated_cpu_percent", "events_per_sec", "avg_runtime_ns")
        # The footprint that is there: program memory, its maps', code size (up to three).
        footprint = [
            name
            for name in ("memlock_bytes", "maps_memlock_bytes", "jited_size_bytes")
            if self.present(metric(name))
        ]
        ratios = [1.25, 0.9, *([1.0] if footprint else []), 0.75]
        figure = self._figure(19, 17 if footprint else 13)
        grid = figure.add_gridspec(len(ratios), 3, height_ratios=ratios)
        for column, name in enumerate(top_row):
            chosen = costliest(self.rows, name, OVERVIEW_PROGRAMS, self.elapsed_ns)
            self._program_bars(figure.add_subplot(grid[0, column]), metric(name), chosen)
        for column, name in enumerate(top_row):
            self._total_bars(figure.add_subplot(grid[1, column]), metric(name))
        for column, name in enumerate(footprint):
            chosen = costliest(self.rows, name, OVERVIEW_PROGRAMS, self.elapsed_ns)
            self._program_bars(figure.add_subplot(grid[2, column]), metric(name), chosen)
        text_axis = figure.add_subplot(grid[len(ratios) - 1, :])
        text_axis.axis("off")
        heading = (
            "Changes: runtime and CPU first, then memory, then code size"
            if self.with_baseline
            else "Costliest programs"
        )
        text_axis.set_title(heading, loc="left", fontsize=11)
        text_axis.text(
            0.0,
            0.95,
            for_chart(summary),
            va="top",
            ha="left",
            family="monospace",
            fontsize=9.5,
            transform=text_axis.transAxes,
        )
        self._legend(figure)
        drawn = min(len(self.rows), OVERVIEW_PROGRAMS)
        shown_programs = (
            f"the {drawn} costliest of {len(self.rows):,} programs by each panel's metric"
            + (", the rest as others" if len(self.rows) > OVERVIEW_PROGRAMS else "")
            if self.rows
            else "no programs"
        )
        figure.suptitle(f"{title} (per-program panels: {shown_programs})", fontsize=13)
        figure.tight_layout(rect=(0, 0, 1, 0.95))
        return figure

    def _program_bars(self, axis: Axes, entry: Metric, rows: Sequence[ChartRow]) -> None:
        name = entry.name
        # The costliest at the top: barh draws position 0 at the bottom.
        ordered = list(reversed(rows))
        positions = list(range(len(ordered)))
        current = [ordered_row.value(ordered_row.current, name) for ordered_row in ordered]
        colours = [OTHERS_COLOUR if row.others else CURRENT_COLOUR for row in ordered]
        # The axis fits the programs named; the others' bar (their sum) may run past its end.
        named = [row for row in ordered if not row.others] or list(ordered)
        largest = max([row.largest(name) for row in named] + [0.0])
        if self.with_baseline:
            baseline = [ordered_row.value(ordered_row.baseline, name) for ordered_row in ordered]
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
                color=colours,
                label="current",
            )
            labels = [
                self._bar_text(row, entry, before, after)
                for row, before, after in zip(ordered, baseline, current, strict=True)
            ]
        else:
            bars = axis.barh(
                positions, [v or 0.0 for v in current], height=0.6, color=colours, label="current"
            )
            labels = [self._label(value, entry.unit) for value in current]
        # Room on the right for the values written after the bars.
        limit = largest * 1.45 if largest > 0 else 1
        for index, (bar, row) in enumerate(zip(bars, ordered, strict=True)):
            if row.others and bar.get_width() > limit:
                # Its value inside its end: after it, the label would fall off the panel.
                axis.text(
                    limit * 0.99,
                    bar.get_y() + bar.get_height() / 2,
                    f"{labels[index]} ▸",
                    ha="right",
                    va="center",
                    fontsize=7.5,
                )
                labels[index] = ""
        axis.bar_label(bars, labels=labels, padding=3, fontsize=7.5)
        self._mark_peaks(axis, entry, ordered, positions, limit)
        if entry.unit != "bytes":
            axis.xaxis.set_major_locator(self.plt.MaxNLocator(5, integer=entry.integral))
            axis.xaxis.set_major_formatter(self.plt.FuncFormatter(lambda value, _: axis_number(value)))
        else:
            # Few ticks, at round binary sizes (1 KiB, 512 KiB, 2 MiB): their labels are wide.
            axis.xaxis.set_major_locator(self.plt.MultipleLocator(_binary_step(limit)))
            axis.xaxis.set_major_formatter(
                self.plt.FuncFormatter(lambda value, _: format_value(value, "bytes"))
            )
        axis.set_yticks(positions, [for_chart(short_label(row.label)) for row in ordered], fontsize=8.5)
        axis.set_xlim(0, limit)
        axis.set_ylim(-0.6, max(len(ordered), 1) - 0.4)
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
        names, values_drawn, colours = [], [], []
        if self.with_baseline:
            names.append("baseline")
            values_drawn.append(before or 0.0)
            colours.append(BASELINE_COLOUR)
        names.append("current")
        values_drawn.append(after or 0.0)
        colours.append(CURRENT_COLOUR)
        bars = axis.bar(names, values_drawn, color=colours, width=0.55)
        axis.bar_label(
            bars, labels=[self._label(value, entry.unit) for value in values_drawn], padding=3, fontsize=9
        )
        axis.set_ylim(0, max([*values_drawn, 0.0]) * 1.25 or 1)
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
        self, axis: Axes, entry: Metric, rows: Sequence[ChartRow], positions: Sequence[int], limit: float
    ) -> None:
        """On the average CPU share panel, each side's highest one-interval share beside its
        bar (what the window's average hides). The axis is the bars': a peak beyond it is a
        triangle at its edge (the CPU chart's peak panel has its value)."""
        if entry.name != "estimated_cpu_percent":
            return
        # (bar offset, which side, marker fill, legend)
        sides = [(0.0, True, PEAK_COLOUR, "peak interval")]
        if self.with_baseline:
            sides = [
                (-0.2, True, PEAK_COLOUR, "peak interval, current"),
                (0.2, False, "none", "peak interval, baseline"),
            ]
        handles: dict[str, Any] = {}
        edge = limit * 0.985
        for offset, side, face, label in sides:
            peaks = [
                (peak, position + offset)
                for row, position in zip(rows, positions, strict=True)
                if (peak := row.value(row.current if side else row.baseline, PEAK_METRIC))
            ]
            inside = [(peak, at) for peak, at in peaks if peak <= edge]
            beyond = [at for peak, at in peaks if peak > edge]
            if inside:
                handles[label] = axis.scatter(
                    [peak for peak, _ in inside],
                    [at for _, at in inside],
                    marker="D",
                    s=24,
                    facecolors=face,
                    edgecolors=PEAK_COLOUR,
                    zorder=3,
                )
            if beyond:
                # One legend entry for both sides' triangles: the fill tells them apart.
                handles[PEAK_BEYOND] = axis.scatter(
                    [edge] * len(beyond),
                    beyond,
                    marker=">",
                    s=30,
                    facecolors=face,
                    edgecolors=PEAK_COLOUR,
                    zorder=3,
                )
        if handles:
            # Mid-right: the small bars leave room there; the others bar sits at the bottom.
            axis.legend(
                list(handles.values()), list(handles), loc="center right", fontsize=7.5, frameon=False
            )

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

    def _title_room(self) -> float:
        """Inches above the panels for the title, and the legend when there is one."""
        return 0.85 if self.with_baseline else 0.55

    def _top(self, figure: Figure) -> float:
        """Where the panels may start: below the title, and the legend when there is one."""
        return 1 - self._title_room() / figure.get_figheight()

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


def axis_number(value: float) -> str:
    """A tick's label, short: 250k, 1.5M, 0.25."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


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


# What the summary looks at, in tiers read in this order: what a program costs in CPU and per
# run, then the memory it holds, then its code. A code-size change, however large, comes after
# a runtime regression. Within a tier, the line whose first changed metric moved most (in its
# own unit: CPU share, bytes, instructions) comes first, so a 2 % rise of the costliest program
# outranks a 900 % rise of one that costs nothing.
SUMMARY_TIERS: Final[tuple[tuple[str, ...], ...]] = (
    ("estimated_cpu_percent", "avg_runtime_ns"),
    ("memlock_bytes", "maps_memlock_bytes"),
    ("jited_size_bytes", "verified_instructions"),
)
SUMMARY_METRICS: Final = tuple(name for tier in SUMMARY_TIERS for name in tier)


def change_words(entry: Metric, before: float, after: float) -> str:
    """`average runtime per run 100 -> 150 ns`: the unit once, after both values (sizes carry
    their own: `JIT-compiled code size 82 B -> 1.6 KiB`)."""
    title = entry.title
    if title[1:2].islower():  # "Average ..." reads mid-line as "average ...", "JIT-..." stays
        title = title[0].lower() + title[1:]
    if entry.unit == "bytes":
        return f"{title} {format_value(before, 'bytes')} -> {format_value(after, 'bytes')}"
    return f"{title} {format_value(before, entry.unit)} -> {format_value(after, entry.unit)} {entry.unit}"


def summarise(comparison: Comparison, rows: Sequence[ChartRow], with_baseline: bool) -> str:
    """The changes worth reading, one line per program and tier: regressions before
    improvements, each in the tiers' order and the largest first; then new and gone programs."""
    if not with_baseline:
        return _costliest(rows)
    changes: list[tuple[tuple[bool, int, float], str]] = []
    for row in [*rows, ChartRow(TOTAL, comparison.total.current, comparison.total.baseline)]:
        if row.current is None or row.baseline is None:
            continue
        for tier, names in enumerate(SUMMARY_TIERS):
            # How far the tier's first metric moved, in its unit: what ranks the line.
            first = row.value(row.baseline, names[0]), row.value(row.current, names[0])
            moved = abs(first[1] - first[0]) if first[0] is not None and first[1] is not None else 0.0
            parts, worst = [], -math.inf
            for name in names:
                entry = metric(name)
                before, after = row.value(row.baseline, name), row.value(row.current, name)
                worse = _worsening(entry, before, after)
                if worse is None or worse == 0 or before is None or after is None:
                    continue
                parts.append(f"{change_words(entry, before, after)} ({change_text(before, after)})")
                worst = max(worst, worse)
            if parts:
                text = f"{short_label(row.label, 44)}: {', '.join(parts)}"
                changes.append(((worst < 0, tier, -moved), text))
    changes.sort(key=lambda change: change[0])
    lines = [("better " if order[0] else "WORSE  ") + text for order, text in changes[:SUMMARY_LINES]]
    if len(changes) > SUMMARY_LINES:
        lines.append(f"... and {len(changes) - SUMMARY_LINES:,} more (kstat compare lists every change)")
    new = [row.label for row in rows if row.baseline is None]
    gone = [row.label for row in rows if row.current is None]
    for word, labels in (("new: ", new), ("gone:", gone)):
        if labels:
            listed = ", ".join(short_label(label, 44) for label in labels[:6])
            more = f" and {len(labels) - 6:,} more" if len(labels) > 6 else ""
            lines.append(f"{word} {listed}{more}")
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
    if len(ordered) > SUMMARY_LINES:
        lines.append(f"... and {len(ordered) - SUMMARY_LINES:,} more programs")
    return "\n".join(lines) or "no active programs"


# Names of the files `kstat plot` writes for a chart set, beside the overview.
CHART_ORDER: Final = ("overview", "cpu", "events", "runtime", "totals", "program", "memory")
