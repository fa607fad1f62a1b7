"""Is a change real? Several runs per side, their medians, and a rank test, as benchstat does.

One run of a workload differs from the next by several percent on its own (up to about 17 % in
average runtime on shared VMs), so a verdict rests on several runs per side and a two-sided
Mann-Whitney U test: the runs of both sides ranked together, and the chance of ranks at least
as lopsided if both came from one distribution. It assumes nothing about the distribution's
shape and is not moved by one outlier. The test comes from SciPy (`pip install 'kstat[stats]'`),
loaded only when there are runs to test.

With few runs no outcome can be significant: the smallest two-sided p-value of n and m runs is
2 / C(n+m, n) (all of one side below all of the other), 0.1 for three runs a side. Then the
verdict says so rather than guessing, and a gate falls back to the change of the medians.
"""

from __future__ import annotations

import math
import statistics
from typing import Final, Literal

from attrs import frozen

from kstat.errors import ExtraMissing, UsageError

DEFAULT_ALPHA: Final = 0.05
Alternative = Literal["two-sided", "less", "greater"]


@frozen
class Sample:
    """One side's values of a metric, one per run."""

    values: tuple[float, ...]

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread_percent(self) -> float | None:
        """Half the range as a share of the median (benchstat's ±): None for a zero median."""
        median = self.median
        if median == 0:
            return None
        return (max(self.values) - min(self.values)) / 2 / abs(median) * 100


@frozen
class Verdict:
    """The rank test's outcome for one metric of one row."""

    # None when no test could be made (a side with no runs, or too few runs to reach alpha).
    p_value: float | None
    alpha: float
    # Whether the test could reach alpha at all with these many runs.
    testable: bool

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < self.alpha


def smallest_p_value(runs_before: int, runs_after: int) -> float:
    """The smallest two-sided p-value a rank test can give with these many runs."""
    if runs_before == 0 or runs_after == 0:
        return 1.0
    return min(1.0, 2 / math.comb(runs_before + runs_after, runs_before))


def runs_needed(alpha: float) -> int:
    """The fewest runs per side (equal sides) with which a change can be significant at alpha."""
    runs = 1
    while smallest_p_value(runs, runs) >= alpha:
        runs += 1
    return runs


def runs_needed_beside(alpha: float, other: int) -> int | None:
    """The fewest runs on one side, beside `other` on the other, with which a change can be
    significant at alpha (None past 10,000: one run beside one is never enough)."""
    for runs in range(1, 10_001):
        if smallest_p_value(runs, other) < alpha:
            return runs
    return None


def rank_test(before: Sample, after: Sample, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Two-sided Mann-Whitney U between the runs of the two sides: did it change at all?"""
    return _mann_whitney(before.values, after.values, "two-sided", alpha)


def beyond_limit_test(
    before: Sample, after: Sample, *, limit: float, relative: bool, alpha: float = DEFAULT_ALPHA
) -> Verdict:
    """Is `after` significantly beyond `before` moved by the limit (+10 %: 1.1 times each
    baseline run; -5 %: 0.95 times; without %, plus the limit)? One-sided Mann-Whitney U.

    This is what a gate asks. Testing only "did it change" would let noise through: with many
    programs, some unchanged one differs significantly by chance (one in twenty at alpha 0.05)
    and, with noisy runs, its medians can also cross the limit. Asking whether the change is
    significantly *larger than the limit* keeps an unchanged workload from failing the gate,
    at the price of needing a regression clearly past the limit to catch it.
    """
    moved = tuple(value * (1 + limit / 100) if relative else value + limit for value in before.values)
    alternative: Alternative = "greater" if limit >= 0 else "less"
    return _mann_whitney(moved, after.values, alternative, alpha)


def _mann_whitney(
    before: tuple[float, ...], after: tuple[float, ...], alternative: Alternative, alpha: float
) -> Verdict:
    if smallest_p_value(len(before), len(after)) >= alpha:
        return Verdict(p_value=None, alpha=alpha, testable=False)
    if len(set(before) | set(after)) == 1:
        # Every run alike on both sides: nothing to rank (SciPy would divide by zero).
        return Verdict(p_value=1.0, alpha=alpha, testable=True)
    try:
        from scipy.stats import mannwhitneyu  # noqa: PLC0415 - SciPy loads only to test runs
    except ImportError:
        raise ExtraMissing("comparing several runs per side (its rank test)", "SciPy", "stats") from None
    # `after` first: "greater" asks whether after's runs tend to be larger.
    result = mannwhitneyu(after, before, alternative=alternative, method="auto")
    return Verdict(p_value=float(result.pvalue), alpha=alpha, testable=True)


def parse_alpha(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        raise UsageError(f"bad alpha {text!r}: expected a number between 0 and 1, e.g. 0.05") from None
    if not 0 < alpha < 1:
        raise UsageError(f"bad alpha {text!r}: expected a number between 0 and 1, e.g. 0.05")
    return alpha
