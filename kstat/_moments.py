"""The moment of a read that took a while, declared once for every layer: `PassClocks` (the
core's value) and `ClockStart` (the clocks as the launch and the clock's process take them,
which import no core) both say it so. Imports nothing."""

from __future__ import annotations


def midpoint_ns(start_ns: int, end_ns: int) -> int:
    """The middle of a read that took from `start_ns` to `end_ns`: the best single estimate of
    the moment of everything it read."""
    return start_ns + (end_ns - start_ns) // 2
