"""A quantile sketch: percentiles of a stream of values in bounded memory.

The window's report keeps, per program, the distribution of its per-interval CPU share, events
per second and average runtime; a window may last hours, so the values are not kept. This is a
DDSketch (Masson, Rim and Lee, VLDB 2019): positive values fall in logarithmic buckets, bucket
i holding (g^(i-1), g^i] with g = (1 + a) / (1 - a), and a quantile is read back as its bucket's
midpoint 2g^i / (g + 1), within a relative error of a (here 2 %) of the true value of that rank.
Zero (an idle interval) has a count of its own. The minimum and maximum are kept exactly.

Memory is at most MAX_BUCKETS buckets however long the window: past that, the lowest buckets
are merged into one, which can only lower the accuracy of quantiles far below the maximum (more
than g^MAX_BUCKETS ~ 27,000 times smaller), never of the high ones a peak is read from.
"""

from __future__ import annotations

import math
from typing import Final

from attrs import define, field

RELATIVE_ACCURACY: Final = 0.02
MAX_BUCKETS: Final = 256
_GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INVERSE_LOG_GAMMA: Final = 1 / math.log(_GAMMA)
# Values at or below this count as zero (a CPU share of 1e-12 % is no activity).
_SMALLEST: Final = 1e-12


@define
class QuantileSketch:
    count: int = 0
    zeros: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    _buckets: dict[int, int] = field(factory=dict)

    def add(self, value: float, times: int = 1) -> None:
        """Count `value` (negative values are not expected and count as zero) `times` times."""
        if times <= 0:
            return
        self.count += times
        # Compared, not min()/max(): three values per busy program every interval. The same
        # result, a NaN included (it is never smaller or larger, so it is never kept).
        if value < self.minimum:  # noqa: PLR1730
            self.minimum = value
        if value > self.maximum:  # noqa: PLR1730
            self.maximum = value
        if value <= _SMALLEST:
            self.zeros += times
            return
        index = math.ceil(math.log(value) * _INVERSE_LOG_GAMMA)
        buckets = self._buckets
        if index in buckets:
            buckets[index] += times
            return
        buckets[index] = times
        if len(buckets) > MAX_BUCKETS:
            self._collapse_lowest()

    def _collapse_lowest(self) -> None:
        ordered = sorted(self._buckets)
        lowest, into = ordered[0], ordered[1]
        self._buckets[into] += self._buckets.pop(lowest)

    def quantile(self, q: float, *, extra_zeros: int = 0) -> float | None:
        """The value of rank q (0 <= q <= 1) by the nearest-rank method: the smallest value with at
        least ceil(q*n) values at or below it; None when nothing was counted. `extra_zeros` counts
        that many zeros more (idle intervals, known only by their number) without adding them."""
        count, zeros = self.count + extra_zeros, self.zeros + extra_zeros
        if count == 0:
            return None
        minimum = 0.0 if extra_zeros else max(0.0, self.minimum)
        maximum = max(self.maximum, 0.0) if extra_zeros else self.maximum
        if q >= 1:
            return maximum
        rank = max(1, math.ceil(q * count))
        if rank <= zeros:
            return minimum
        seen = zeros
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                midpoint = 2 * _GAMMA**index / (_GAMMA + 1)
                # Never outside what was seen: the ends are exact.
                return min(max(midpoint, minimum), maximum)
        return maximum

    @property
    def buckets(self) -> int:
        return len(self._buckets)

    def copy(self) -> QuantileSketch:
        return QuantileSketch(self.count, self.zeros, self.minimum, self.maximum, dict(self._buckets))
