"""Wall-clock times as kstat writes them: a module of its own, so that what prints a time (`kstat
list`) imports no report arithmetic."""

from __future__ import annotations

import functools
import operator
import time
from itertools import repeat

# Not `typing.TYPE_CHECKING`: `kstat list`'s lean path imports nothing of typing at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

_NS_PER_S: Final = 1_000_000_000
_FRACTION_DIGITS: Final = 9
# A time's digits: the fraction's (the last nine), the second's (the others).
_FRACTION_OF: Final = operator.itemgetter(slice(-_FRACTION_DIGITS, None))
_SECOND_OF: Final = operator.itemgetter(slice(None, -_FRACTION_DIGITS))


def format_timestamp(wall_time_ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as Go's time.Time marshals (2024-01-15T10:30:00.123Z)."""
    if wall_time_ns < _NS_PER_S:  # before 1970-01-01T00:00:01 (a test's): no second's digits
        seconds, nanoseconds = divmod(wall_time_ns, _NS_PER_S)
        fraction = f".{nanoseconds:09d}".rstrip("0").rstrip(".")
        return f"{_utc_second(seconds)}{fraction}Z"
    # The last nine digits are the fraction, the others the second: `kstat list` writes a time
    # for each of 10,000 programs, and cutting digits costs half of dividing.
    digits = str(wall_time_ns)
    fraction = digits[-_FRACTION_DIGITS:].rstrip("0")
    second = _utc_second_of(digits[:-_FRACTION_DIGITS])
    return f"{second}.{fraction}Z" if fraction else f"{second}Z"


@functools.lru_cache(maxsize=256)
def _utc_second(seconds: int) -> str:
    """A second as RFC 3339 says it: many times fall in one (programs loaded together, an
    interval's lines), and formatting it costs more than the rest."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


@functools.lru_cache(maxsize=256)
def _utc_second_of(digits: str) -> str:
    """`_utc_second` of a second given by its digits."""
    return _utc_second(int(digits))


def format_timestamps(wall_times_ns: Iterable[int]) -> list[str]:
    """`format_timestamp` of each of many times, a column at a time at C speed (`kstat list`
    writes one for each of 10,000 programs): the same text for each."""
    times = list(wall_times_ns)
    if times and min(times) < _NS_PER_S:
        return list(map(format_timestamp, times))  # no second's digits to cut
    digits = list(map(str, times))
    fractions = list(map(str.rstrip, map(_FRACTION_OF, digits), repeat("0")))
    texts = list(map("{}.{}Z".format, map(_utc_second_of, map(_SECOND_OF, digits)), fractions))
    if "" in fractions:  # a time on the second has no fraction, nor its dot
        texts = [
            text if fraction else text.replace(".Z", "Z")
            for text, fraction in zip(texts, fractions, strict=True)
        ]
    return texts
