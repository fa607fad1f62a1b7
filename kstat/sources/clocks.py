"""The clocks read around a counter read (monotonic, boot time, wall), and nothing between.

On the command line's path to its baseline read (`kstat._baseline`): `PassClocks` (attrs) is
imported only when the clocks are turned into one, after the read."""

from __future__ import annotations

import time

from kstat._moments import midpoint_ns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kstat.core.model import PassClocks


class ClockStart:
    """The clocks just before a read; `end()` reads them again just after it (or `stop()` does,
    and `end()` later builds the value from what it read)."""

    __slots__ = ("_boottime", "_monotonic", "_monotonic_end", "_wall", "_wall_end")

    def __init__(self) -> None:
        self._monotonic = time.monotonic_ns()
        self._boottime = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self._wall = time.time_ns()
        self._monotonic_end = self._wall_end = 0  # not stopped yet

    @classmethod
    def given(cls, monotonic_start_ns: int, monotonic_end_ns: int) -> ClockStart:
        """A read's clocks taken elsewhere, its monotonic ones only (the others 0)."""
        clocks = cls.__new__(cls)
        clocks._monotonic, clocks._monotonic_end = monotonic_start_ns, monotonic_end_ns
        clocks._boottime = clocks._wall = clocks._wall_end = 0
        return clocks

    def stop(self) -> None:
        """The clocks just after the read, kept for `end()`."""
        self._monotonic_end = time.monotonic_ns()
        self._wall_end = time.time_ns()

    @property
    def monotonic_ns(self) -> int:
        """The read's midpoint, once stopped (as `PassClocks.monotonic_ns`)."""
        return midpoint_ns(self._monotonic, self._monotonic_end)

    @property
    def duration_ns(self) -> int:
        return self._monotonic_end - self._monotonic

    def values(self) -> tuple[int, int, int, int, int]:
        """Once stopped: the monotonic start and end, the boot time at the start, the wall
        start and end (`PassClocks`'s fields, in its order)."""
        return self._monotonic, self._monotonic_end, self._boottime, self._wall, self._wall_end

    def end(self) -> PassClocks:
        from kstat.core.model import PassClocks  # noqa: PLC0415 - see the module's docstring

        if not self._monotonic_end:
            self.stop()
        return PassClocks(*self.values())


def boot_to_wall_ns() -> int:
    """What puts a reading of the boot-time clock (a program's load time) on the wall clock,
    which is what people read, now."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
