"""Budgets for tests: assert that a program stays within a kernel-side cost, readably.

    kstat.expect_program(report, "tc_ingress").ran_at_least(1000).avg_runtime_ns_at_most(500)

A failure raises BudgetExceeded (an AssertionError, so pytest shows it as a failed assertion)
whose message names the program, the measured value and the limit.
"""

from __future__ import annotations

import difflib
from typing import Final

from attrs import frozen

from kstat.core.report import ProgramReport, Report
from kstat.durations import format_duration_ns


class BudgetExceeded(AssertionError):
    """A program's measured kernel cost is over the limit a test set."""


@frozen
class ProgramBudget:
    """Checks on one program's line of a report; each returns self, so they chain.

    `at_most` and `at_least` take any metric of the catalogue (`kstat.METRICS`); the named
    checks read like the sentence they test.
    """

    report: Report
    line: ProgramReport

    def at_most(self, metric_name: str, limit: float) -> ProgramBudget:
        """The program's value of a catalogue metric is at most `limit`."""
        measured = self._measured(metric_name)
        if measured > limit:
            excess = f"{metric_name} measured {_plain(measured)} > limit {_plain(limit)}"
            raise BudgetExceeded(f"{self._who()}: {excess}{self._context()}")
        return self

    def at_least(self, metric_name: str, limit: float) -> ProgramBudget:
        """The program's value of a catalogue metric is at least `limit`."""
        measured = self._measured(metric_name)
        if measured < limit:
            shortfall = f"{metric_name} measured {_plain(measured)} < expected at least {_plain(limit)}"
            raise BudgetExceeded(f"{self._who()}: {shortfall}{self._context()}")
        return self

    def avg_runtime_ns_at_most(self, limit_ns: float) -> ProgramBudget:
        """The mean runtime per run, unrounded (`mean_runtime_ns`), against the limit."""
        self._require_runs("avg_runtime_ns")
        if self.line.mean_runtime_ns > limit_ns:
            excess = f"avg_runtime_ns measured {_plain(self.line.mean_runtime_ns)} > limit {_plain(limit_ns)}"
            raise BudgetExceeded(f"{self._who()}: {excess}{self._context()}")
        return self

    def cpu_percent_at_most(self, limit_percent: float) -> ProgramBudget:
        """The share of one CPU (`estimated_cpu_percent`)."""
        return self.at_most("estimated_cpu_percent", limit_percent)

    def recursion_misses_at_most(self, limit: int = 0) -> ProgramBudget:
        return self.at_most("recursion_misses", limit)

    def runtime_ns_at_most(self, limit_ns: int) -> ProgramBudget:
        return self.at_most("runtime_ns", limit_ns)

    def p99_avg_runtime_ns_at_most(self, limit_ns: float) -> ProgramBudget:
        """The 99th percentile, over the intervals in which it ran, of its runtime per run: a
        budget on the slow intervals that the window's average hides."""
        self._require_runs("p99_avg_runtime_ns")
        return self.at_most("p99_avg_runtime_ns", limit_ns)

    def peak_cpu_percent_at_most(self, limit_percent: float) -> ProgramBudget:
        """Its highest CPU share in any one interval (`max_cpu_percent`)."""
        return self.at_most("max_cpu_percent", limit_percent)

    def ran_at_least(self, runs: int) -> ProgramBudget:
        """Guards a budget against passing because the program never ran."""
        if self.line.run_count < runs:
            raise BudgetExceeded(
                f"{self._who()}: run_count measured {self.line.run_count} < expected at least {runs}"
            )
        return self

    def _measured(self, metric_name: str) -> float:
        try:
            value = self.line.value(metric_name)
        except KeyError as error:
            raise ValueError(error.args[0]) from None
        if value is None:
            raise BudgetExceeded(f"{self._who()}: the report does not carry {metric_name}")
        return value

    def _require_runs(self, metric: str) -> None:
        if self.line.run_count == 0:
            raise BudgetExceeded(f"{self._who()}: no runs in the window, so {metric} measures nothing")

    def _who(self) -> str:
        line = self.line
        return f"kstat budget for program {line.name or '(unnamed)'!r} (id {line.id}, {line.type})"

    def _context(self) -> str:
        window = format_duration_ns(self.report.collection_duration_ns)
        return f" over a {window} window with {self.line.run_count} runs"


def _plain(value: float) -> str:
    # Never an exponent: 1234567890 ns and 0.000123 % both read as written.
    if isinstance(value, int):
        return str(value)
    return f"{value:.6f}".rstrip("0").rstrip(".") if value < 1000 else f"{value:.1f}"


# How many programs a failure names: what failed, and a few that look like it, never a host's
# thousands.
_NAMED_AT_MOST: Final = 5


def expect_program(report: Report, name_or_id: str | int) -> ProgramBudget:
    """Budget checks for a program, by report key, unique name, or id."""
    try:
        line = report.program(name_or_id)
    except KeyError as error:
        raise BudgetExceeded(f"{error.args[0]}; {_what_is_there(report, name_or_id)}") from None
    return ProgramBudget(report, line)


def _what_is_there(report: Report, wanted: str | int) -> str:
    """The report's size, and the programs that look like the one asked for: all of them when
    there are a few, else those with a close name (or the same name, with their ids)."""
    keys = sorted(report.program_stats)
    count = f"{len(keys):,} program{'s' if len(keys) != 1 else ''} in the report"
    if not keys:
        return "no programs in the report"
    if len(keys) <= _NAMED_AT_MOST:
        return f"{count}: {', '.join(keys)}"
    if isinstance(wanted, str):
        same = sorted(line.id for line in report.program_stats.values() if line.name == wanted)
        if same:
            shown = ", ".join(str(program_id) for program_id in same[:_NAMED_AT_MOST])
            more = f" and {len(same) - _NAMED_AT_MOST:,} more" if len(same) > _NAMED_AT_MOST else ""
            return f"{count}; ids of those named {wanted!r}: {shown}{more}"
        close = difflib.get_close_matches(wanted, keys, n=_NAMED_AT_MOST, cutoff=0.6)
        if close:
            return f"{count}; the closest names: {', '.join(close)}"
    return f"{count}, none of them close to {wanted!r}"
