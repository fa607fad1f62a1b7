"""The counter clock in a process of its own, for reads by kstat's iterator: the process
(`kstat.engine.clock_process.ProcessClock` starts it, and takes its reads).

In kstat's process the clock's thread needs the interpreter's lock to wake, stamp and read,
and on a busy host whoever holds it (a garbage collection, the details stage, a sink) may be
waiting for the CPU itself: the reads came 20-190 ms late, whatever the thread's priority
(bench/busy_host.py, BENCHMARKS.md). A process has its own interpreter: this one does nothing
but the clock's ticks (`CounterClock`, real-time as its thread may be), each a walk of the
window's iterator (its link fd, inherited) and its time stamps, and sends the walk's bytes
and stamps to kstat as they are, where the details stage decodes them as before.

    main([LINK_FD, SOCKET_FD, INTERVAL_NS, DURATION_NS, START_NS, END_NS])

(started isolated, `python -I -c`, on kstat's own import path: `ProcessClock.start`);
DURATION_NS -1 for a window until stopped; START_NS and END_NS the monotonic clocks around the
window's first read, taken already (-1 when the clock takes it). One byte from kstat on the
socket, or its end of the socket closing, stops the clock: it takes its last read at once,
sends it and exits. Ctrl-C, SIGTERM and SIGHUP are kstat's to handle, not this process's.

Each read is a frame: `FRAME` (its kind, the clocks around the walk, the slip it ended, the
length of what follows), then the walk's bytes (or an error's text).

Its memory and CPU are kstat's as much as its own process's are: it imports no more than the
walk and the clock need (neither attrs nor kstat's model and decoder), and the interpreter is
started without `site` (`python -I -S`: its import path is kstat's, given).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import sys
import threading

from kstat.engine.clock import CounterClock, Slip
from kstat.sources.clocks import ClockStart
from kstat.sources.program_iterator import WalkBuffers, walk_once

# Not `typing.TYPE_CHECKING`: typing is what this process is kept free of (kstat.engine.clock).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# kind, whether a slip is given, whether it is the start-up's, the clocks (monotonic start and
# end, boot time, wall start and end), the slip (gap, interval, read, late wake), the length.
FRAME: Final = struct.Struct("<BBBxqqqqqqqqqQ")
READ, LAST, ERROR = 0, 1, 2
# What the socket holds before the clock's sends wait for kstat to take them: some walks.
_SOCKET_BUFFER: Final = 32 * 1024 * 1024


class _Taken:
    """A walk and its clocks (stopped)."""

    __slots__ = ("clocks", "data")

    def __init__(self, data: bytes, clocks: ClockStart) -> None:
        self.data = data
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
    for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, signal.SIG_IGN)
    link_fd, socket_fd, interval_ns, duration_ns, start_ns, end_ns = map(int, argv)
    channel = socket.socket(fileno=socket_fd)
    with contextlib.suppress(OSError):
        channel.setsockopt(socket.SOL_SOCKET, 32, _SOCKET_BUFFER)  # SO_SNDBUFFORCE, as root may
    buffers = WalkBuffers()
    first = None if start_ns < 0 else _Taken(b"", ClockStart.given(start_ns, end_ns))
    failed: list[BaseException] = []

    def read() -> _Taken:
        return _Taken(*walk_once(link_fd, buffers))

    def deliver(taken: _Taken, last: bool, slip: Slip | None) -> None:
        if taken is first:
            return  # kstat's own, read at launch
        channel.sendall(_frame(LAST if last else READ, taken.clocks, slip, len(taken.data)))
        channel.sendall(taken.data)

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
        with contextlib.suppress(OSError):
            channel.recv(1)  # a byte, or kstat's end closed
        clock.stop()

    threading.Thread(target=stop_when_told, daemon=True).start()
    clock.start()
    clock.join()
    if failed:
        message = f"{type(failed[0]).__name__}: {failed[0]}".encode(errors="replace")
        with contextlib.suppress(OSError):
            channel.sendall(_frame(ERROR, None, None, len(message)) + message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
