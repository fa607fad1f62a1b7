"""`kstat plot`'s chart of each agent's whole cost: per owner command, a stacked bar of its own
CPU (user space: the process's user and system time) and its programs' kernel CPU, the
baseline's bar beside the current one. Drawn when the reports have an `owners` section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from kstat.analysis.compare import Comparison, Row
from kstat.text import for_chart

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The owners drawn: the costliest by whole CPU on either side.
MAX_OWNERS: Final = 12
_PROCESS_COLOUR: Final = "#4c72b0"
_KERNEL_COLOUR: Final = "#dd8452"
_BAR_IN: Final = 0.34
_DPI: Final = 100


def _value(row: Row, side: str, name: str) -> float:
    measures = row.baseline if side == "baseline" else row.current
    found = None if measures is None else measures.value(name)
    return 0.0 if found is None else found


def _whole(row: Row) -> float:
    return max(_value(row, side, "whole_cpu_percent") for side in ("baseline", "current"))


def _percent(value: float) -> str:
    if value == 0:
        return "0"
    if value < 0.001:
        return "<0.001"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def owners_figure(comparison: Comparison, *, with_baseline: bool, title: str) -> Figure:
    """The stacked bars: for each owner (costliest first), its current bar and, beside a
    baseline, the baseline's above it, lighter; each bar's whole CPU % at its end."""
    from matplotlib import figure as figures  # noqa: PLC0415 - matplotlib only loads to draw

    rows = sorted(comparison.owners, key=lambda row: (-_whole(row), row.name))[:MAX_OWNERS]
    sides: Sequence[str] = ("baseline", "current") if with_baseline else ("current",)
    bars = max(1, len(rows) * len(sides))
    height = max(2.8, bars * _BAR_IN + 1.6 + (0.25 * len(rows) if with_baseline else 0))
    drawn = figures.Figure(figsize=(9.5, height), dpi=_DPI)
    axis: Any = drawn.subplots()
    labels, positions = [], []
    position = 0.0
    largest = max((_whole(row) for row in rows), default=0.0)
    for row in rows:
        for side in sides:
            process = _value(row, side, "process_cpu_percent")
            kernel = _value(row, side, "kernel_cpu_percent")
            faded = with_baseline and side == "baseline"
            alpha = 0.45 if faded else 1.0
            axis.barh(position, process, color=_PROCESS_COLOUR, alpha=alpha, height=0.8)
            axis.barh(position, kernel, left=process, color=_KERNEL_COLOUR, alpha=alpha, height=0.8)
            measures = row.baseline if side == "baseline" else row.current
            text = (
                "not in this report"
                if measures is None
                else f"{_percent(process + kernel)} %  ({_percent(process)} + {_percent(kernel)})"
            )
            axis.text(
                process + kernel + largest * 0.01,
                position,
                text,
                va="center",
                fontsize=8.5,
                color="#555555" if faded else "#222222",
            )
            name = for_chart(row.name)
            labels.append(f"{name} ({side})" if with_baseline else name)
            positions.append(position)
            position += 1
        position += 0.6 if with_baseline else 0.0
    axis.set_yticks(positions, labels, fontsize=9)
    axis.invert_yaxis()
    axis.set_xlim(0, max(largest * 1.45, 0.001))
    axis.set_xlabel("% of one CPU over the window")
    axis.spines[["top", "right"]].set_visible(False)
    if not rows:
        axis.text(
            0.5, 0.5, "no owner in these reports", transform=axis.transAxes, ha="center", color="#666666"
        )
    handles = [
        axis.bar(0, 0, color=_PROCESS_COLOUR, label="its own CPU (user space: user + system time)"),
        axis.bar(0, 0, color=_KERNEL_COLOUR, label="its programs' kernel CPU (run time)"),
    ]
    drawn.legend(
        handles=handles, loc="upper center", ncol=2, frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.955)
    )
    drawn.suptitle(title, fontsize=12, y=1 - 0.05 / height)
    note = "baseline lighter, above current; " if with_baseline else ""
    drawn.text(
        0.01,
        0.005,
        f"{note}a program several processes hold counts for each of them",
        fontsize=8,
        color="#666666",
    )
    drawn.tight_layout(rect=(0, 0.03, 1, 1 - 0.5 / height))
    return drawn
