"""`kstat plot`: PNG charts of a report (optionally beside a baseline) or of an NDJSON stream.

matplotlib is an optional dependency (`pip install kstat[plot]`); nothing else in kstat needs it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from kstat._atomic import write_atomically
from kstat.errors import KstatError, OutputError
from kstat.report import Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# (report field, chart title, axis label)
PANELS: Final = (
    ("avg_runtime_ns", "Average runtime per run", "nanoseconds"),
    ("estimated_cpu_percent", "Estimated CPU", "% of one CPU"),
    ("events_per_sec", "Events per second", "runs / s"),
)
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


def report_figure(current: Report, baseline: Report | None = None, *, title: str | None = None) -> Figure:
    """One horizontal bar chart per metric, programs sorted by value, baseline bars beside."""
    pyplot = _pyplot()
    keys = sorted(set(current.program_stats) | (set(baseline.program_stats) if baseline else set()))
    height = max(3.0, 0.42 * len(keys) * (2 if baseline else 1) + 1.6)
    figure: Figure
    figure, axes = pyplot.subplots(
        1, len(PANELS), figsize=(6.0 * len(PANELS), height), dpi=DPI, squeeze=False
    )
    for axis, (field, panel_title, unit) in zip(axes[0], PANELS, strict=True):

        def value(report: Report | None, key: str, field: str = field) -> float:
            line = report.program_stats.get(key) if report is not None else None
            return float(getattr(line, field)) if line is not None else 0.0

        ordered = sorted(keys, key=lambda key: value(current, key))
        positions = list(range(len(ordered)))
        if baseline is not None:
            bar_height = 0.4
            axis.barh(
                [p + bar_height / 2 for p in positions],
                [value(baseline, k) for k in ordered],
                height=bar_height,
                label="baseline",
                color="#9aa5b1",
            )
            axis.barh(
                [p - bar_height / 2 for p in positions],
                [value(current, k) for k in ordered],
                height=bar_height,
                label="current",
                color="#1f77b4",
            )
            axis.legend(loc="best", framealpha=0.9)
        else:
            axis.barh(
                positions, [value(current, k) for k in ordered], height=0.6, color="#1f77b4", label="current"
            )
        axis.set_yticks(positions, [_short(key) for key in ordered])
        axis.set_title(panel_title)
        axis.set_xlabel(unit)
        axis.grid(axis="x", alpha=0.3)
    window = current.collection_duration_ns / 1e9
    figure.suptitle(title or f"kstat: kernel-side eBPF cost over {window:.1f} s ({current.end_time})")
    figure.tight_layout()
    return figure


def stream_figure(lines: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """Time series from NDJSON interval lines: one line per program (the costliest few)."""
    pyplot = _pyplot()
    intervals = [line for line in lines if line.get("kind") == "interval"]
    if not intervals:
        raise KstatError("the NDJSON stream has no interval lines to plot")
    times: list[float] = []
    elapsed = 0.0
    for line in intervals:
        elapsed += line["elapsed_ns"] / 1e9
        times.append(elapsed)
    runtime_by_key: dict[str, int] = {}
    for line in intervals:
        for key, stats in line["program_stats"].items():
            runtime_by_key[key] = runtime_by_key.get(key, 0) + stats["runtime_ns"]
    shown = sorted(runtime_by_key, key=lambda key: runtime_by_key[key], reverse=True)[:MAX_SERIES]
    figure: Figure
    figure, axes = pyplot.subplots(len(PANELS), 1, figsize=(11, 3.2 * len(PANELS)), dpi=DPI, sharex=True)
    for axis, (field, panel_title, unit) in zip(axes, PANELS, strict=True):
        for key in shown:
            # NDJSON leaves idle programs out of an interval's line: absent means zero.
            values = [line["program_stats"].get(key, {}).get(field, 0) for line in intervals]
            axis.plot(times, values, label=_short(key), marker=".")
        axis.set_title(panel_title)
        axis.set_ylabel(unit)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the window began")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.suptitle(title or f"kstat: per-interval kernel-side cost ({len(intervals)} intervals)")
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as PNG, atomically (temp file and rename)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(figure)
    write_atomically(path, buffer.getvalue())


def read_stream(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as error:
        raise OutputError(f"cannot read an NDJSON stream from {path}: {error}") from None
