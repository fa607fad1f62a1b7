"""`kstat plot`'s drawing: the time series of an NDJSON stream, reading streams, writing PNGs.
The charts of a report beside a baseline are `kstat.analysis.charts`.

matplotlib is an optional dependency (`pip install kstat[plot]`); nothing else in kstat needs it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from attrs import frozen

from kstat._atomic import shown, write_atomically
from kstat._bounded import read_bounded
from kstat.analysis.charts import short_label
from kstat.core.catalogue import Metric, Span, View, in_view
from kstat.core.counters import summed
from kstat.core.report import ProgramReport
from kstat.errors import ExtraMissing, KstatError
from kstat.formats.bounded_json import parse_json
from kstat.formats.report_json import ReportFormatError, program_from_dict, programs_from_dict
from kstat.text import for_chart

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One panel per metric the catalogue charts.
PANELS: Final = in_view(View.CHART)
MAX_SERIES: Final = 10
DPI: Final = 100


def pyplot(needed_by: str = "drawing charts") -> Any:
    """matplotlib's pyplot on the Agg backend; ExtraMissing names the extra when it is absent."""
    try:
        import matplotlib  # noqa: PLC0415 - optional, loaded only to plot

        matplotlib.use("Agg")  # files only: no display needed, none assumed
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        raise ExtraMissing(needed_by, "matplotlib", "plot") from None
    return pyplot


@frozen
class StreamInterval:
    """One NDJSON interval line, as `kstat plot` reads it."""

    elapsed_ns: int
    # The programs that did something in the interval, by key (idle ones are left out).
    programs: Mapping[str, ProgramReport]


def stream_figure(intervals: Sequence[StreamInterval], *, title: str | None = None) -> Figure:
    """Time series from NDJSON interval lines: one line per program (the costliest few, by
    runtime over the stream, the same in every panel), one for the others together. A metric
    per run (average runtime) has a gap where a program did not run, never a drop to zero."""
    plt = pyplot("kstat plot")
    if not intervals:
        raise KstatError("the NDJSON stream has no interval lines to plot")
    times: list[float] = []
    elapsed = 0.0
    for interval in intervals:
        elapsed += interval.elapsed_ns / 1e9
        times.append(elapsed)
    runtime_by_key: dict[str, int] = {}
    for interval in intervals:
        for key, line in interval.programs.items():
            runtime_by_key[key] = runtime_by_key.get(key, 0) + line.runtime_ns
    ranked = sorted(runtime_by_key, key=lambda key: (-runtime_by_key[key], key))
    shown, rest = ranked[:MAX_SERIES], set(ranked[MAX_SERIES:])
    figure: Figure
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(11, 3.2 * len(PANELS)), dpi=DPI, sharex=True)
    legends: dict[Any, tuple[list[Any], list[str]]] = {}
    for axis, metric in zip(axes, PANELS, strict=True):
        for key in shown:
            values = [_interval_value(interval.programs.get(key), metric) for interval in intervals]
            axis.plot(times, values, label=for_chart(short_label(key)), marker=".")
        axis.set_title(metric.title)
        axis.set_ylabel(metric.unit)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        if rest:
            others = [_others_value(interval, rest, metric) for interval in intervals]
            named_top = max(
                (float(value) for line in axis.lines for value in line.get_ydata() if not math.isnan(value)),
                default=0.0,
            )
            # The rest together can dwarf every program drawn: then they get an axis of their own.
            own_axis = max((value for value in others if not math.isnan(value)), default=0.0) > 3 * named_top
            target = axis.twinx() if own_axis else axis
            target.plot(
                times,
                others,
                label=f"others ({len(rest):,} programs)" + (", right axis" if own_axis else ""),
                color="black",
                linestyle="--",
                marker=".",
            )
            if own_axis:
                target.set_ylim(bottom=0)
                target.set_ylabel(f"{metric.unit}, others")
                handles, names = axis.get_legend_handles_labels()
                twin_handles, twin_names = target.get_legend_handles_labels()
                legends[axis] = (handles + twin_handles, names + twin_names)
    axes[-1].set_xlabel("seconds since the window began")
    handles, names = legends.get(axes[0], axes[0].get_legend_handles_labels())
    # Beyond the right axis of the others, when the first panel has one.
    axes[0].legend(handles, names, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small")
    figure.suptitle(title or f"kstat: per-interval kernel-side cost ({len(intervals)} intervals)")
    figure.tight_layout()
    return figure


def _interval_value(line: ProgramReport | None, metric: Metric) -> float:
    """A program's value in one interval. NDJSON leaves an idle program out of an interval's
    line: absent is zero runs, so a count or a share is 0 and a value per run is a gap (NaN)."""
    if line is None or (metric.per_run and line.run_count == 0):
        return math.nan if metric.per_run else 0.0
    value = line.value(metric.name)
    return math.nan if value is None else float(value)


def _others_value(interval: StreamInterval, keys: set[str], metric: Metric) -> float:
    """The programs of `keys` in one interval as one: the metric of their summed counters."""
    lines = [line for key, line in interval.programs.items() if key in keys]
    span = Span(
        counters=summed(line.counters for line in lines), elapsed_ns=interval.elapsed_ns, online_cpus=None
    )
    if metric.per_run and span.run_count == 0:
        return math.nan
    value = metric.compute(span)
    return math.nan if value is None else float(value)


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as PNG, atomically (temp file and rename)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(figure)
    write_atomically(path, buffer.getvalue())


def read_stream(path: Path) -> list[StreamInterval]:
    """The intervals of an NDJSON stream any kstat version wrote, in either layout;
    ReportFormatError names the line and field that are not what a stream holds."""
    # Bounded (kstat._bounded): a regular file of at most MAX_INPUT_BYTES, JSON as a report holds it.
    text = read_bounded(path, "an NDJSON stream", ReportFormatError)
    intervals: list[StreamInterval] = []
    # Records of the interval being read, by key (the record layout).
    pending: dict[str, ProgramReport] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = parse_json(line, ReportFormatError)
        except ReportFormatError as error:
            raise ReportFormatError(f"{shown(path)}: line {number}: {error}") from None
        if not isinstance(data, dict):
            continue
        if "timestamp_ns" in data:  # the record layout (`?layout=records`)
            _read_record(data, number, pending, intervals, path)
            continue
        if data.get("kind") != "interval":
            continue
        try:
            elapsed_ns = data.get("elapsed_ns")
            if isinstance(elapsed_ns, bool) or not isinstance(elapsed_ns, int) or elapsed_ns < 0:
                raise ReportFormatError("elapsed_ns is missing or not a whole number of 0 or more")
            intervals.append(StreamInterval(elapsed_ns, programs_from_dict(data.get("program_stats"))))
        except ReportFormatError as error:
            problem = f"line {number} is not an interval line: {error}"
            raise ReportFormatError(f"{shown(path)}: {problem}") from None
    return intervals


def _read_record(
    data: dict[str, Any],
    number: int,
    pending: dict[str, ProgramReport],
    intervals: list[StreamInterval],
    path: Path,
) -> None:
    """A record line: an interval's `program` records gather until its `total` ends it."""
    kind = data.get("kind")
    try:
        if kind == "program":
            key = data.get("key")
            if not isinstance(key, str):
                raise ReportFormatError("key is missing or not a string")
            pending[key] = program_from_dict(data, "the record")
        elif kind == "total":
            elapsed_ns = data.get("elapsed_ns")
            if isinstance(elapsed_ns, bool) or not isinstance(elapsed_ns, int) or elapsed_ns < 0:
                raise ReportFormatError("elapsed_ns is missing or not a whole number of 0 or more")
            intervals.append(StreamInterval(elapsed_ns, dict(pending)))
            pending.clear()
    except ReportFormatError as error:
        raise ReportFormatError(f"{shown(path)}: line {number} is not a {kind} record: {error}") from None
