"""The counter clock in a process of its own, for reads by kstat's iterator: the process
(`kstat.engine.clock_process.ProcessClock` starts it, and takes its reads).

In kstat's process the clock's thread needs the interpreter's lock to wake, stamp and read,
and on a busy host whoever holds it (a garbage collection, the details stage, a sink) may be
waiting for the CPU itself: the reads came 20-190 ms late, whatever the thread's priority
(bench/busy_host.py, BENCHMARKS.md). A process has its own interpreter: this one does nothing
but the clock's ticks (`CounterClock`, real-time as its thread may be), each a walk of the
window's iterator (its link fd, inherited) and its time stamps, and sends the walk's bytes
and stamps to kstat as they are, where the details stage decodes them as before.

    main([SYS_BPF, COMMAND, ATTR, SOCKET_FD, INTERVAL_NS, DURATION_NS, START_NS, END_NS])

(started isolated, `python -I -S -c`, on kstat's own import path: `ProcessClock.start`);
SYS_BPF, COMMAND and ATTR (hexadecimal) the bpf(2) call that opens a walk, as
`kstat.sources.iterator.walk_call` gives it for the window's link (an fd inherited), made
here (`kstat.sources.walks.walk_opener`); DURATION_NS -1 for a window until stopped; START_NS
and END_NS the monotonic clocks around the window's first read, taken already (-1 when the
clock takes it). One byte from kstat on the socket, or its end of the socket closing, stops the
clock: it takes its last read at once, sends it and exits. Ctrl-C, SIGTERM and SIGHUP are
kstat's to handle, not this process's.

Each read is a frame: `FRAME` (its kind, the clocks around the walk, the slip it ended, the
length of what follows), then the walk's bytes (or an error's text), sent from the buffers the
walk was read into.

Its memory and CPU are kstat's as much as its own process's are: it imports no more than the
walk and the clock need (neither attrs nor kstat's model, decoder or ABI beyond the one call;
not even the socket module: the socket is written and read as the fd it is), and the
interpreter is started without `site` (`python -I -S`: its import path is kstat's, given).
"""

from __future__ import annotations

# The signal module's C half: the module itself builds its enums with enum (0.3 MB here).
import _signal  # type: ignore[import-not-found]
import os
import struct
import sys

from kstat._writev import write_pieces
from kstat.engine.clock import CounterClock, Slip, start_thread
from kstat.sources.clocks import ClockStart
from kstat.sources.walks import WalkBuffers, WalkCallFailed, walk_once, walk_opener

# Not `typing.TYPE_CHECKING`: typing is what this process is kept free of (kstat.engine.clock).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# kind, whether a slip is given, whether it is the start-up's, the clocks (monotonic start and
# end, boot time, wall start and end), the slip (gap, interval, read, late wake), the length.
FRAME: Final = struct.Struct("<BBBxqqqqqqqqqQ")
# CALL_FAILED: the bpf(2) call failed, its errno the text that follows (kstat words it).
READ, LAST, ERROR, CALL_FAILED = 0, 1, 2, 3


class _Taken:
    """A walk (as it lies in the walk's buffers, until the next one is read) and its clocks
    (stopped)."""

    __slots__ = ("clocks", "pieces")

    def __init__(self, pieces: list[memoryview], clocks: ClockStart) -> None:
        self.pieces = pieces
        self.clocks = clocks


def _frame(kind: int, clocks: ClockStart | None, slip: Slip | None, length: int) -> bytes:
    times = (0, 0, 0, 0, 0) if clocks is None else clocks.values()
    slipped = (
        (0, 0, 0, 0) if slip is None else (slip.gap_ns, slip.interval_ns, slip.read_ns, slip.late_wake_ns)
    )
    startup = slip is not None and slip.startup
    return FRAME.pack(kind, slip is not None, startup, *times, *slipped, length)


def main(argv: list[str]) -> int:
    """The clock's process: ticks until stopped, then its last read."""
    for signal_number in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(signal_number, _signal.SIG_IGN)
    sys_bpf, command, attr = int(argv[0]), int(argv[1]), bytes.fromhex(argv[2])
    channel, interval_ns, duration_ns, start_ns, end_ns = map(int, argv[3:])
    open_walk = walk_opener(sys_bpf, command, attr)
    buffers = WalkBuffers()
    first = None if start_ns < 0 else _Taken([], ClockStart.given(start_ns, end_ns))
    failed: list[BaseException] = []

    def read() -> _Taken:
        return _Taken(*walk_once(open_walk, buffers))

    def deliver(taken: _Taken, last: bool, slip: Slip | None) -> None:
        if taken is first:
            return  # kstat's own, read at launch
        length = sum(len(piece) for piece in taken.pieces)
        write_pieces(channel, [_frame(LAST if last else READ, taken.clocks, slip, length), *taken.pieces])

    clock = CounterClock(
        read,
        deliver,
        interval_ns=interval_ns,
        duration_ns=None if duration_ns < 0 else duration_ns,
        on_error=failed.append,
        on_finished=lambda: None,
        first=first,
    )

    def stop_when_told() -> None:
        try:  # noqa: SIM105 - no contextlib in the clock's process
            os.read(channel, 1)  # a byte, or kstat's end closed
        except OSError:
            pass
        clock.stop()

    start_thread(stop_when_told)
    clock.start()
    clock.join()
    if failed:
        error = failed[0]
        if isinstance(error, WalkCallFailed):
            kind, message = CALL_FAILED, str(error.code).encode()
        else:
            kind, message = ERROR, f"{type(error).__name__}: {error}".encode(errors="replace")
        try:  # noqa: SIM105 - no contextlib in the clock's process
            write_pieces(channel, [_frame(kind, None, None, len(message)), message])
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
