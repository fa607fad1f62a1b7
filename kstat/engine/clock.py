"""The window's counter clock: every counter read on time, on a thread of its own.

The read is the one thing in a window that must happen on time: it is what the report's rates
divide by. So it runs on its own thread with its own monotonic clock, never behind the event
loop, a sink, a scrape or the details stage (names, owners, footprint), which take what it read
as they can. The first read is now, one each interval after it, and the last at the window's
end or as soon as it is stopped; a read that overruns its interval delays the next tick instead
of queueing missed ones, and says so (`Slip`).

The counter clock's process (`kstat.engine._clock_child`) runs this module in an interpreter
of its own, whose memory is kstat's too: it imports neither attrs nor kstat's model (hence
`Slip` is a plain class), nor threading or contextlib (with collections and functools: 0.9 MB
of that process's RSS): its thread and its stop are `_thread`'s.
"""

from __future__ import annotations

import _thread
import os
import time

from kstat._values import PlainValue

# Not `typing.TYPE_CHECKING`: the clock's own process (kstat.engine._clock_child) imports this
# module, and typing (with re and warnings) was 0.8 MB of its peak RSS, for annotations.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final, Generic, Protocol, TypeVar
else:

    class Generic:
        """`typing.Generic` as far as the running code needs it: `CounterClock[R]` is the class."""

        def __class_getitem__(cls, item: object) -> type:
            return cls


class Slip(PlainValue):
    """A gap between two reads longer than twice the interval asked for, and what it was."""

    __slots__ = ("gap_ns", "interval_ns", "late_wake_ns", "read_ns", "startup")

    gap_ns: int
    interval_ns: int
    # How long the read that ended the gap took, and how late the clock woke up for it (time
    # the thread waited for the CPU or for the interpreter's lock).
    read_ns: int
    late_wake_ns: int
    # The gap after a baseline read at launch, before the window was set up: kstat's own start.
    startup: bool

    def __init__(
        self, gap_ns: int, interval_ns: int, read_ns: int, late_wake_ns: int, startup: bool = False
    ) -> None:
        self.gap_ns = gap_ns
        self.interval_ns = interval_ns
        self.read_ns = read_ns
        self.late_wake_ns = late_wake_ns
        self.startup = startup

    @property
    def cause(self) -> str:
        """What took the time, as far as the clock can tell."""
        if self.startup:
            return "kstat's start-up: the baseline is read at launch, the window set up after it"
        if self.read_ns > self.interval_ns:
            return "the counter read itself took longer than the interval"
        if self.late_wake_ns > self.interval_ns // 2:
            return "the clock's thread woke late: the CPU or the interpreter was busy elsewhere"
        return "the read before it overran its interval"


# The clock thread's niceness (Linux nice values are per thread): well ahead of ordinary work,
# where it cannot have the real-time policy below.
CLOCK_NICENESS: Final = -10
# The clock thread's real-time policy: round-robin at the lowest real-time priority. A nice
# value only counts among the tasks of one scheduling group (a session's autogroup, a cgroup):
# on a busy host, whatever the niceness, the read waited behind other groups' work for the CPU
# (35-65 ms a read at a load of 7 on two CPUs, bench/busy_host.py). A real-time thread runs as
# soon as it wakes; the clock's sleeps bound its share (a walk a tick, never missed ticks
# caught up), and the kernel's real-time throttling bounds it again.
CLOCK_POLICY: Final = os.SCHED_RR
CLOCK_PRIORITY: Final = 1


def prioritise_this_thread() -> str:
    """Put the calling thread ahead of the host's other work, as far as it may (root may; a
    container's cgroup may refuse the real-time policy): which it got, for the log."""
    thread = _thread.get_native_id()
    try:  # noqa: SIM105 - no contextlib in the clock's process
        os.setpriority(os.PRIO_PROCESS, thread, CLOCK_NICENESS)
    except OSError:
        pass
    try:
        os.sched_setscheduler(thread, CLOCK_POLICY, os.sched_param(CLOCK_PRIORITY))
    except OSError:
        return f"niceness {os.getpriority(os.PRIO_PROCESS, thread)}"
    return f"real-time (SCHED_RR {CLOCK_PRIORITY})"


if TYPE_CHECKING:

    class ReadMoment(Protocol):
        """The clocks around a read, as the clock needs them (`PassClocks`, or a stopped
        `kstat.sources.clocks.ClockStart`)."""

        @property
        def monotonic_ns(self) -> int: ...

        @property
        def duration_ns(self) -> int: ...

    class Stamped(Protocol):
        """What a read gives the clock: the clocks around it (a Reading, or a read not yet decoded)."""

        @property
        def clocks(self) -> ReadMoment: ...

    R = TypeVar("R", bound=Stamped)
else:
    R = object


class Flag:
    """`threading.Event`'s `set` and `wait`, made of one `_thread` lock (held while not set)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        try:  # noqa: SIM105 - no contextlib in the clock's process
            self._lock.release()
        except RuntimeError:
            pass  # set already

    def is_set(self) -> bool:
        return not self._lock.locked()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Whether it is set, waiting up to `timeout_s` (None: until it is)."""
        timeout = -1 if timeout_s is None else min(max(0.0, timeout_s), _thread.TIMEOUT_MAX)
        if not self._lock.acquire(timeout=timeout):
            return False
        try:  # noqa: SIM105 - no contextlib in the clock's process
            self._lock.release()
        except RuntimeError:
            pass  # set again while held here: set it stays
        return True


def start_thread(run: Callable[[], None]) -> Flag:
    """`run` on a thread of its own (as a daemon thread: nothing waits for it at exit), and the
    flag set when it has returned (what `join` waits for)."""
    finished = Flag()

    def thread() -> None:
        try:
            run()
        finally:
            finished.set()

    _thread.start_new_thread(thread, ())
    return finished


class CounterClock(Generic[R]):
    """`read` is called on the clock's thread, and `deliver` there with each read, whether it is
    the window's last, and the slip it ended (if any): `deliver` must not block (the scheduler
    hands them to trio). What `read` does is all the clock's thread does between its time
    stamps and the next tick: the less Python, the less it waits for the interpreter's lock."""

    def __init__(
        self,
        read: Callable[[], R],
        deliver: Callable[[R, bool, Slip | None], None],
        *,
        interval_ns: int,
        duration_ns: int | None,
        on_error: Callable[[BaseException], None],
        on_finished: Callable[[], None],
        first: R | None = None,
    ) -> None:
        """`first`: the window's first reading, taken already (the command line's, at launch)."""
        self._read = read
        self._deliver = deliver
        self._interval_ns = interval_ns
        self._duration_ns = duration_ns
        self._on_error = on_error
        self._on_finished = on_finished
        self._first = first
        self._stop = Flag()
        self._finished: Flag | None = None
        self.missed_ticks = 0

    def start(self) -> None:
        self._finished = start_thread(self._run)

    def stop(self) -> None:
        """End the window now: the clock takes its last read at once and finishes."""
        self._stop.set()

    def join(self) -> None:
        if self._finished is None:
            raise RuntimeError("the counter clock was never started")
        self._finished.wait()

    def _run(self) -> None:
        # Ahead of the host's other work for the CPU (a busy node's tenants, kstat's own
        # details stage): this thread alone, as root may; elsewhere it simply stays as it is.
        prioritise_this_thread()
        try:
            self._tick()
        except BaseException as error:  # noqa: BLE001 - handed to the trio side, which raises it
            self._on_error(error)
        finally:
            self._on_finished()

    def _tick(self) -> None:
        interval = self._interval_ns
        first = self._first if self._first is not None else self._read()
        startup = self._first is not None
        # The window's clock starts at the first read's moment, so the measured elapsed time
        # is never shorter than the duration asked for. A baseline read at launch is older than
        # the window's set-up: the duration and the ticks then run from now, when kstat says it
        # is ready, so a harness that waits for that still gets the whole duration and one
        # interval per tick asked for (the first one also spans kstat's start-up).
        starts = max(first.clocks.monotonic_ns, time.monotonic_ns())
        deadline = None if self._duration_ns is None else starts + self._duration_ns
        self._deliver(first, False, None)
        previous = first.clocks.monotonic_ns
        next_tick = starts + interval
        while True:
            due = next_tick if deadline is None else min(next_tick, deadline)
            if self._stop.wait(max(0, due - time.monotonic_ns()) / 1e9):
                break
            woke = time.monotonic_ns()
            if deadline is not None and woke >= deadline:
                break
            reading = self._read()
            slip = self._slip(previous, reading, late_wake_ns=max(0, woke - due), startup=startup)
            startup = False
            previous = reading.clocks.monotonic_ns
            self._deliver(reading, False, slip)
            # Not held while the next one is read: a walk at 10,000 programs is 640 KB.
            del reading
            next_tick += interval
            now = time.monotonic_ns()
            if next_tick <= now:
                missed = (now - next_tick) // interval + 1
                self.missed_ticks += missed
                next_tick += missed * interval
        last = self._read()
        self._deliver(last, True, None)

    def _slip(self, previous_ns: int, reading: R, *, late_wake_ns: int, startup: bool) -> Slip | None:
        gap = reading.clocks.monotonic_ns - previous_ns
        if gap <= 2 * self._interval_ns:
            return None
        return Slip(gap, self._interval_ns, reading.clocks.duration_ns, late_wake_ns, startup)
