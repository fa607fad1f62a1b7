"""What the window's average hides: each program's per-interval values, ranked.

For every program and for the total, the summary keeps a quantile sketch per ranked metric (the
catalogue's DISTRIBUTION metrics say which: CPU share, events per second, runtime per run) and
the time of the interval with the highest CPU share. Each interval counts once, whatever its
length (the sampler keeps them equal); an interval in which a program did nothing counts as a
zero for the rates, known only by their number, so idle programs cost nothing per interval.
An average runtime per run needs runs: only the intervals in which the program ran count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from attrs import define, field

from kstat.core.catalogue import METRICS, Number
from kstat.core.sketch import QuantileSketch

DISTRIBUTED: Final = tuple(metric for metric in METRICS if metric.distribution is not None)
# The metrics whose per-interval values are ranked, each once.
RANKED: Final = tuple(dict.fromkeys(metric.distribution.of for metric in DISTRIBUTED if metric.distribution))
_ONLY_WITH_RUNS: Final = frozenset(
    metric.distribution.of
    for metric in DISTRIBUTED
    if metric.distribution and metric.distribution.only_with_runs
)
# Each ranked metric, and whether only the intervals with runs count for it.
_RANKED_RUNS: Final = tuple((name, name in _ONLY_WITH_RUNS) for name in RANKED)
# What a program that never did anything has been counted in: nothing (never added to).
_NOTHING: Final = QuantileSketch()
# The figures of a program that never did anything, by whether the window had intervals then.
_NEVER_RAN: dict[bool, dict[str, Number]] = {}
# The peak interval is the one with the highest CPU share.
PEAK_OF: Final = "estimated_cpu_percent"


@define
class IntervalValues:
    """One program's (or the total's) per-interval values so far."""

    # The number of intervals the window had when the program was first seen.
    first_interval: int
    # The number it had when the program went away; None while it is loaded.
    until_interval: int | None = None
    recorded: int = 0
    # Made when the program first does something: most of a host's programs never do, and
    # cost no sketch at all.
    sketches: dict[str, QuantileSketch] = field(factory=dict)
    peak: float = -math.inf
    peak_at_ns: int | None = None
    # Once the program has gone: its metrics, worked out for good, and no sketches kept (a long
    # run retains up to a thousand unloaded programs).
    final: dict[str, Number] | None = None

    def record(self, values: Mapping[str, Number], end_wall_time_ns: int) -> None:
        """An interval in which the program did something: its metrics over that interval."""
        if self.final is not None:
            return  # gone: its figures are final (an interval replayed, as a benchmark does)
        self.recorded += 1
        if not self.sketches:
            self.sketches = {name: QuantileSketch() for name in RANKED}
        ran = bool(values.get("run_count"))
        sketches = self.sketches
        for name, only_with_runs in _RANKED_RUNS:
            value = values.get(name)
            if value is None or (only_with_runs and not ran):
                continue
            sketches[name].add(float(value))
        peak = values.get(PEAK_OF)
        if peak is not None and peak > self.peak:
            self.peak, self.peak_at_ns = float(peak), end_wall_time_ns

    def finish(self, intervals: int) -> None:
        """The program went away after `intervals` intervals: nothing more will come."""
        self.until_interval = intervals
        self.final = self.metrics(intervals)
        self.sketches = {}

    def metrics(self, intervals: int) -> dict[str, Number]:
        """Every DISTRIBUTION metric with a value, the window having had `intervals` so far."""
        if self.final is not None:
            return dict(self.final)
        existed = (
            self.until_interval if self.until_interval is not None else intervals
        ) - self.first_interval
        idle = max(0, existed - self.recorded)
        if not self.sketches:
            # Never did anything (most of a host's programs): only zeros to rank, however many,
            # so its figures are one of two (no interval yet, or some), worked out once.
            known = _NEVER_RAN.get(idle > 0)
            if known is None:
                known = _NEVER_RAN[idle > 0] = self._ranked(idle)
            return dict(known)
        return self._ranked(idle)

    def _ranked(self, idle: int) -> dict[str, Number]:
        found: dict[str, Number] = {}
        for metric in DISTRIBUTED:
            ranked = metric.distribution
            assert ranked is not None
            extra = 0 if ranked.only_with_runs else idle
            value = self.sketches.get(ranked.of, _NOTHING).quantile(ranked.quantile, extra_zeros=extra)
            if value is not None:
                found[metric.name] = value
        return found

    @property
    def peak_time_ns(self) -> int | None:
        """When the interval with the highest CPU share ended; None if it never ran."""
        return self.peak_at_ns if self.peak > 0 else None

    def copy(self) -> IntervalValues:
        return IntervalValues(
            self.first_interval,
            self.until_interval,
            self.recorded,
            {name: sketch.copy() for name, sketch in self.sketches.items()},
            self.peak,
            self.peak_at_ns,
            None if self.final is None else dict(self.final),
        )
