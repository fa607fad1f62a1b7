"""`kstat compare`: two reports side by side, per program and in total, with a verdict.

Programs are matched by name and type. Several programs with the same name and type on one
side (two agents, or a program loaded twice) are added up into one row, so nothing is dropped
or matched arbitrarily; a program on one side only gets a row of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from attrs import frozen

from kstat.errors import UsageError
from kstat.report import NS_PER_S, ProgramReport, Report, avg_runtime_ns, cpu_percent, events_per_sec

METRICS: Final = (
    "avg_runtime_ns",
    "estimated_cpu_percent",
    "events_per_sec",
    "run_count",
    "runtime_ns",
    "recursion_misses",
)
TOTAL: Final = "(total)"


@frozen
class Measures:
    """A row's numbers on one side: the report's metrics, over that report's window."""

    programs: int
    runtime_ns: int
    run_count: int
    recursion_misses: int
    avg_runtime_ns: int
    estimated_cpu_percent: float
    events_per_sec: float

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))


@frozen
class Row:
    name: str
    type: str
    baseline: Measures | None
    current: Measures | None

    @property
    def label(self) -> str:
        return self.name if self.type == "" else f"{self.name} ({self.type})"

    def change_percent(self, metric: str) -> float | None:
        """Relative change; None when either side is missing or the baseline is zero."""
        if self.baseline is None or self.current is None:
            return None
        before = self.baseline.value(metric)
        if before == 0:
            return None
        return (self.current.value(metric) - before) / before * 100

    def change(self, metric: str) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current.value(metric) - self.baseline.value(metric)


@frozen
class Threshold:
    """`METRIC:+10%` fails when METRIC grows by more than 10 %; `METRIC:-5%` when it falls by
    more than 5 %; without `%` the limit is absolute (`recursion_misses:+0`)."""

    metric: str
    limit: float
    relative: bool

    @property
    def text(self) -> str:
        sign = "+" if self.limit >= 0 else "-"
        return f"{self.metric}:{sign}{abs(self.limit):g}{'%' if self.relative else ''}"

    def violated_by(self, row: Row) -> str | None:
        change = row.change_percent(self.metric) if self.relative else row.change(self.metric)
        if change is None:
            return None
        exceeded = change > self.limit if self.limit >= 0 else change < self.limit
        if not exceeded:
            return None
        assert row.baseline is not None and row.current is not None
        unit = "%" if self.relative else ""
        return (
            f"{row.label}: {self.metric} {_number(row.baseline.value(self.metric))} -> "
            f"{_number(row.current.value(self.metric))} ({change:+.2f}{unit}, limit {self.text})"
        )


_THRESHOLD: Final = re.compile(r"(?P<metric>[a-z_]+):(?P<sign>[+-])(?P<number>\d+(\.\d+)?)(?P<percent>%?)")


def parse_threshold(text: str) -> Threshold:
    match = _THRESHOLD.fullmatch(text.strip())
    if not match:
        raise UsageError(
            f"bad threshold {text!r}: expected METRIC:+N% or METRIC:-N% (or without %, absolute)"
        )
    metric = match["metric"]
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r} in {text!r}; metrics: {', '.join(METRICS)}")
    limit = float(match["number"]) * (1 if match["sign"] == "+" else -1)
    return Threshold(metric, limit, relative=match["percent"] == "%")


@frozen
class Comparison:
    baseline_elapsed_ns: int
    current_elapsed_ns: int
    rows: tuple[Row, ...]
    total: Row

    def violations(self, thresholds: Iterable[Threshold]) -> list[str]:
        found: list[str] = []
        for threshold in thresholds:
            for row in (*self.rows, self.total):
                violation = threshold.violated_by(row)
                if violation is not None:
                    found.append(violation)
        return found

    @property
    def only_in_baseline(self) -> list[Row]:
        return [row for row in self.rows if row.current is None]

    @property
    def only_in_current(self) -> list[Row]:
        return [row for row in self.rows if row.baseline is None]


def _measures(lines: Sequence[ProgramReport], elapsed_ns: int) -> Measures:
    runtime_ns = sum(line.runtime_ns for line in lines)
    run_count = sum(line.run_count for line in lines)
    return Measures(
        programs=len(lines),
        runtime_ns=runtime_ns,
        run_count=run_count,
        recursion_misses=sum(line.recursion_misses for line in lines),
        avg_runtime_ns=avg_runtime_ns(runtime_ns, run_count),
        estimated_cpu_percent=cpu_percent(runtime_ns, elapsed_ns),
        events_per_sec=events_per_sec(run_count, elapsed_ns),
    )


def compare(baseline: Report, current: Report) -> Comparison:
    """Match the two reports' programs by name and type and measure each side."""
    groups: dict[tuple[str, str], tuple[list[ProgramReport], list[ProgramReport]]] = {}
    for side, report in enumerate((baseline, current)):
        for line in report.programs:
            groups.setdefault((line.name, line.type), ([], []))[side].append(line)
    rows = []
    for (name, type_name), (before, after) in sorted(groups.items()):
        rows.append(
            Row(
                name=name,
                type=type_name,
                baseline=_measures(before, baseline.collection_duration_ns) if before else None,
                current=_measures(after, current.collection_duration_ns) if after else None,
            )
        )
    total = Row(
        name=TOTAL,
        type="",
        baseline=_measures(baseline.programs, baseline.collection_duration_ns),
        current=_measures(current.programs, current.collection_duration_ns),
    )
    return Comparison(baseline.collection_duration_ns, current.collection_duration_ns, tuple(rows), total)


# --- rendering ------------------------------------------------------------------------------

SHOWN: Final = ("avg_runtime_ns", "estimated_cpu_percent", "events_per_sec", "run_count")
_HEADINGS: Final = {
    "avg_runtime_ns": "avg runtime (ns)",
    "estimated_cpu_percent": "CPU % (one CPU)",
    "events_per_sec": "events/s",
    "run_count": "runs",
}


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"


def _cell(row: Row, metric: str) -> str:
    before = "-" if row.baseline is None else _number(row.baseline.value(metric))
    after = "-" if row.current is None else _number(row.current.value(metric))
    change = row.change_percent(metric)
    if row.baseline is None:
        delta = "new"
    elif row.current is None:
        delta = "gone"
    elif change is None:
        delta = "n/a"
    else:
        delta = f"{change:+.1f}%"
    return f"{before} → {after} ({delta})"


def _label(row: Row) -> str:
    counts = [measures.programs for measures in (row.baseline, row.current) if measures is not None]
    copies = f" (x{max(counts)})" if row.name != TOTAL and max(counts) > 1 else ""
    return row.label + copies


def render_markdown(comparison: Comparison, violations: Sequence[str]) -> str:
    header = "| program | " + " | ".join(_HEADINGS[metric] for metric in SHOWN) + " |"
    lines = [
        "### Kernel-side eBPF cost: baseline → current",
        "",
        header,
        "|" + " --- |" * (len(SHOWN) + 1),
    ]
    for row in (*comparison.rows, comparison.total):
        cells = [_label(row).replace("|", "\\|"), *(_cell(row, metric) for metric in SHOWN)]
        if row.name == TOTAL:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += _footer(comparison, violations, bullet="- ")
    return "\n".join(lines) + "\n"


def _footer(comparison: Comparison, violations: Sequence[str], bullet: str) -> list[str]:
    lines = [
        f"Windows: baseline {comparison.baseline_elapsed_ns / NS_PER_S:.2f} s, "
        f"current {comparison.current_elapsed_ns / NS_PER_S:.2f} s."
    ]
    if comparison.only_in_baseline:
        lines.append("Only in baseline: " + ", ".join(row.label for row in comparison.only_in_baseline))
    if comparison.only_in_current:
        lines.append("Only in current: " + ", ".join(row.label for row in comparison.only_in_current))
    if violations:
        lines.append(f"REGRESSION ({len(violations)}):")
        lines += [bullet + violation for violation in violations]
    else:
        lines.append("No threshold exceeded.")
    return lines


def render_table(comparison: Comparison, violations: Sequence[str], width: int | None = None) -> str:
    """A rich table as text (colours only on a terminal)."""
    from rich.console import Console  # noqa: PLC0415 - rich only loads for this output
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="Kernel-side eBPF cost: baseline → current", show_lines=False)
    table.add_column("program", overflow="fold")
    for metric in SHOWN:
        table.add_column(_HEADINGS[metric], justify="right")
    for row in (*comparison.rows, comparison.total):
        style = "bold" if row.name == TOTAL else None
        table.add_row(_label(row), *(_cell(row, metric) for metric in SHOWN), style=style)
    console = Console(width=width or 160, record=True, force_terminal=False, color_system=None)
    with console.capture() as captured:
        console.print(table)
        for line in _footer(comparison, violations, bullet="  "):
            console.print(line, highlight=False, markup=False)
    return captured.get()


def render_json(comparison: Comparison, violations: Sequence[str]) -> str:
    def side(measures: Measures | None) -> dict[str, Any] | None:
        if measures is None:
            return None
        return {"programs": measures.programs, **{metric: measures.value(metric) for metric in METRICS}}

    def row_data(row: Row) -> dict[str, Any]:
        return {
            "name": row.name,
            "type": row.type,
            "baseline": side(row.baseline),
            "current": side(row.current),
            "change_percent": {metric: row.change_percent(metric) for metric in METRICS},
        }

    data = {
        "programs": [row_data(row) for row in comparison.rows],
        "total": row_data(comparison.total),
        "only_in_baseline": [row.label for row in comparison.only_in_baseline],
        "only_in_current": [row.label for row in comparison.only_in_current],
        "violations": list(violations),
        "regression": bool(violations),
    }
    return json.dumps(data, indent=2) + "\n"
