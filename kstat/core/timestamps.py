"""Wall-clock times as kstat writes them: a module of its own, so that what prints a time (`kstat
list`) imports no report arithmetic."""

from __future__ import annotations

import functools
import time
from typing import Final

_NS_PER_S: Final = 1_000_000_000


def format_timestamp(wall_time_ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as Go's time.Time marshals (2024-01-15T10:30:00.123Z)."""
    seconds, nanoseconds = divmod(wall_time_ns, _NS_PER_S)
    fraction = f".{nanoseconds:09d}".rstrip("0").rstrip(".")
    return f"{_utc_second(seconds)}{fraction}Z"


@functools.lru_cache(maxsize=256)
def _utc_second(seconds: int) -> str:
    """A second as RFC 3339 says it: many times fall in one (programs loaded together, an
    interval's lines), and formatting it costs more than the rest."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
