"""The clocks read around a counter read (monotonic, boot time, wall), and nothing between."""

from __future__ import annotations

import time

from kstat.core.model import PassClocks


class ClockStart:
    """The clocks just before a read; `end()` reads them again just after it."""

    __slots__ = ("_boottime", "_monotonic", "_wall")

    def __init__(self) -> None:
        self._monotonic = time.monotonic_ns()
        self._boottime = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self._wall = time.time_ns()

    def end(self) -> PassClocks:
        monotonic_end = time.monotonic_ns()
        wall_end = time.time_ns()
        return PassClocks(
            monotonic_start_ns=self._monotonic,
            monotonic_end_ns=monotonic_end,
            boottime_start_ns=self._boottime,
            wall_start_ns=self._wall,
            wall_end_ns=wall_end,
        )
