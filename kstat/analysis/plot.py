"""`kstat plot`: PNG charts of a report (optionally beside a baseline) or of an NDJSON stream.

matplotlib is an optional dependency (`pip install kstat[plot]`); nothing else in kstat needs it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from attrs import frozen

from kstat._atomic import read_text, shown, write_atomically
from kstat.analysis.compare import Row, compare
from kstat.errors import KstatError
from kstat.pipeline.catalogue import Number, View, in_view
from kstat.pipeline.report import ProgramReport, Report
from kstat.pipeline.schema import ReportFormatError, programs_from_dict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One panel per metric the catalogue charts.
PANELS: Final = in_view(View.CHART)
MAX_LABEL: Final = 32
MAX_SERIES: Final = 10
DPI: Final = 100


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415 - optional, loaded only to plot

        matplotlib.use("Agg")  # files only: no display needed, none assumed
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        raise KstatError("kstat plot needs matplotlib: pip install 'kstat[plot]'") from None
    return pyplot


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


@frozen
class _Bar:
    """One program's bars: its label and the metrics of each side (None: not on that side)."""

    label: str
    current: Mapping[str, Number] | None
    baseline: Mapping[str, Number] | None

    def value(self, side: Mapping[str, Number] | None, name: str) -> float:
        found = None if side is None else side.get(name)
        return 0.0 if found is None else float(found)


def _bars(current: Report, baseline: Report | None) -> list[_Bar]:
    if baseline is None:
        return [_Bar(key, line.metrics, None) for key, line in current.program_stats.items()]
    # Matched as `kstat compare` matches them (a Go tool baseline by kernel names included).
    return [
        _Bar(
            _row_label(row),
            None if row.current is None else row.current.values,
            None if row.baseline is None else row.baseline.values,
        )
        for row in compare(baseline, current).rows
    ]


def _row_label(row: Row) -> str:
    copies = max(side.programs for side in (row.baseline, row.current) if side is not None)
    return row.name if copies == 1 else f"{row.name} (x{copies})"


def report_figure(current: Report, baseline: Report | None = None, *, title: str | None = None) -> Figure:
    """One horizontal bar chart per metric, programs sorted by value, baseline bars beside."""
    pyplot = _pyplot()
    bars = _bars(current, baseline)
    height = max(3.0, 0.42 * len(bars) * (2 if baseline else 1) + 1.6)
    figure: Figure
    figure, axes = pyplot.subplots(
        1, len(PANELS), figsize=(6.0 * len(PANELS), height), dpi=DPI, squeeze=False
    )
    for axis, metric in zip(axes[0], PANELS, strict=True):
        name = metric.name
        ordered = sorted(bars, key=lambda bar: (bar.value(bar.current, name), bar.label))
        positions = list(range(len(ordered)))
        if baseline is not None:
            bar_height = 0.4
            axis.barh(
                [p + bar_height / 2 for p in positions],
                [bar.value(bar.baseline, name) for bar in ordered],
                height=bar_height,
                label="baseline",
                color="#9aa5b1",
            )
            axis.barh(
                [p - bar_height / 2 for p in positions],
                [bar.value(bar.current, name) for bar in ordered],
                height=bar_height,
                label="current",
                color="#1f77b4",
            )
            axis.legend(loc="best", framealpha=0.9)
        else:
            axis.barh(
                positions,
                [bar.value(bar.current, name) for bar in ordered],
                height=0.6,
                color="#1f77b4",
                label="current",
            )
        axis.set_yticks(positions, [_short(bar.label) for bar in ordered])
        axis.set_title(metric.title)
        axis.set_xlabel(metric.unit)
        axis.grid(axis="x", alpha=0.3)
    window = current.collection_duration_ns / 1e9
    when = current.end_time or current.timestamp
    figure.suptitle(title or f"kstat: kernel-side eBPF cost over {window:.1f} s ({when})")
    figure.tight_layout()
    return figure


@frozen
class StreamInterval:
    """One NDJSON interval line, as `kstat plot` reads it."""

    elapsed_ns: int
    # The programs that did something in the interval, by key (idle ones are left out).
    programs: Mapping[str, ProgramReport]


def stream_figure(intervals: Sequence[StreamInterval], *, title: str | None = None) -> Figure:
    """Time series from NDJSON interval lines: one line per program (the costliest few)."""
    pyplot = _pyplot()
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
    shown = sorted(runtime_by_key, key=lambda key: runtime_by_key[key], reverse=True)[:MAX_SERIES]
    figure: Figure
    figure, axes = pyplot.subplots(len(PANELS), 1, figsize=(11, 3.2 * len(PANELS)), dpi=DPI, sharex=True)
    for axis, metric in zip(axes, PANELS, strict=True):
        for key in shown:
            # NDJSON leaves idle programs out of an interval's line: absent means zero.
            values = [_value_or_zero(interval.programs.get(key), metric.name) for interval in intervals]
            axis.plot(times, values, label=_short(key), marker=".")
        axis.set_title(metric.title)
        axis.set_ylabel(metric.unit)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the window began")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.suptitle(title or f"kstat: per-interval kernel-side cost ({len(intervals)} intervals)")
    figure.tight_layout()
    return figure


def _value_or_zero(line: ProgramReport | None, name: str) -> float:
    value = None if line is None else line.value(name)
    return 0.0 if value is None else float(value)


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as PNG, atomically (temp file and rename)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(figure)
    write_atomically(path, buffer.getvalue())


def read_stream(path: Path) -> list[StreamInterval]:
    """The interval lines of an NDJSON stream any kstat version wrote; ReportFormatError names
    the line and field that are not what a stream holds."""
    text = read_text(path, "an NDJSON stream", ReportFormatError)
    intervals: list[StreamInterval] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReportFormatError(f"{shown(path)}: line {number} is not JSON: {error.msg}") from None
        if not isinstance(data, dict) or data.get("kind") != "interval":
            continue
        try:
            elapsed_ns = data.get("elapsed_ns")
            if isinstance(elapsed_ns, bool) or not isinstance(elapsed_ns, int):
                raise ReportFormatError("elapsed_ns is missing or not a whole number")
            intervals.append(StreamInterval(elapsed_ns, programs_from_dict(data.get("program_stats"))))
        except ReportFormatError as error:
            problem = f"line {number} is not an interval line: {error}"
            raise ReportFormatError(f"{shown(path)}: {problem}") from None
    return intervals
