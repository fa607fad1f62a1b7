"""The counter clock in a process of its own, for reads by kstat's iterator.

In kstat's process the clock's thread needs the interpreter's lock to wake, stamp and read,
and on a busy host whoever holds it (a garbage collection, the details stage, a sink) may be
waiting for the CPU itself: the reads came 20-190 ms late, whatever the thread's priority
(bench/busy_host.py, BENCHMARKS.md). A process has its own interpreter: the clock's
(`kstat.engine._clock_child`) does nothing but the ticks (`CounterClock`, real-time as its
thread may be), each a walk of the window's iterator (its link fd, inherited) and its time
stamps, and sends the walk's bytes and stamps here as they are; the details stage decodes
them as before. The stamps are the walk's own, taken in that process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Final

from kstat.core.model import PassClocks
from kstat.engine._clock_child import CALL_FAILED, ERROR, FRAME, LAST
from kstat.engine.clock import Slip
from kstat.engine.sampler import CounterRead, IgnoredPresent
from kstat.errors import KstatError
from kstat.sources.iterator import IteratorReader, walk_call, walk_call_failure

# The clock's process, on the import path kstat itself has: its first argument says how many
# entries, the next ones are the path's (as they are: no json to import), then the clock's.
_CHILD = (
    "import sys; n = int(sys.argv[1]); sys.path[:] = sys.argv[2 : 2 + n]; "
    "from kstat.engine._clock_child import main; sys.exit(main(sys.argv[2 + n :]))"
)


# SO_SNDBUFFORCE (asm-generic/socket.h): SO_SNDBUF past the system's limit, as root may.
_SO_SNDBUFFORCE: Final = 32
_SOCKET_BUFFER: Final = 32 * 1024 * 1024


def _import_path() -> list[str]:
    """Where the clock's process imports from: where this kstat was imported from, then this
    process's path without its "" (the working directory, wherever that is by now)."""
    # This module is kstat/engine/clock_process.py: kstat's root is three levels up.
    kstat_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [kstat_root, *(entry for entry in sys.path if entry and entry != kstat_root)]


class ProcessClock:
    """`CounterClock`'s part played by a process of its own (`main`), for `reader`'s iterator:
    each walk it sends becomes a `CounterRead` of `reader` (kstat's own programs and `ignored`
    left out), delivered from a thread of kstat's that only waits for them."""

    def __init__(
        self,
        reader: IteratorReader,
        ignored: frozenset[int],
        deliver: Callable[[CounterRead, bool, Slip | None], None],
        *,
        interval_ns: int,
        duration_ns: int | None,
        on_error: Callable[[BaseException], None],
        on_finished: Callable[[], None],
        first: CounterRead | None = None,
    ) -> None:
        self._reader = reader
        self._ignored = ignored | reader.own_program_ids
        self._present = IgnoredPresent()
        self._deliver = deliver
        self._interval_ns = interval_ns
        self._duration_ns = duration_ns
        self._on_error = on_error
        self._on_finished = on_finished
        self._first = first
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="kstat-counter-clock", daemon=True)

    def start(self) -> None:
        """Starts the process (OSError when it cannot be), then the thread that takes its reads."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # What the socket holds before the clock's sends wait for kstat to take them: some
            # walks (set here, on the clock's end: that process has no socket module).
            with contextlib.suppress(OSError):
                theirs.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, _SOCKET_BUFFER)
            first = self._first
            start, end = (
                (-1, -1)
                if first is None
                else (first.clocks.monotonic_start_ns, first.clocks.monotonic_end_ns)
            )
            link = self._reader.link_fd
            # The bpf(2) call that opens a walk of the link, made there as it is given.
            call = walk_call(link)
            path = _import_path()
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    # Isolated (no PYTHON* variables, no user site, no working directory on its
                    # path: kstat runs as root, often in a directory others can write), and
                    # given this process's own path, so that it runs this kstat, whoever's
                    # `kstat/` lies where it was started. Without `site`: the path is given,
                    # and site's imports are memory the clock does not need.
                    "-I",
                    "-S",
                    "-c",
                    _CHILD,
                    str(len(path)),
                    *path,
                    *(str(number) for number in call[:2]),
                    call[2].hex(),
                    str(theirs.fileno()),
                    str(self._interval_ns),
                    str(-1 if self._duration_ns is None else self._duration_ns),
                    str(start),
                    str(end),
                ],
                pass_fds=(link, theirs.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._channel = ours
        self._thread.start()

    def stop(self) -> None:
        """End the window now: the process takes its last read at once and finishes."""
        if self._channel is not None:
            with contextlib.suppress(OSError):
                self._channel.send(b"s")

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            if self._first is not None:
                self._deliver(self._first, False, None)
            while not self._take():
                pass
        except BaseException as error:  # noqa: BLE001 - handed to the trio side, which raises it
            self._on_error(error)
        finally:
            self._end()
            self._on_finished()

    def _take(self) -> bool:
        """One frame from the process, delivered; whether it was the last."""
        header = self._exactly(FRAME.size)
        kind, slipped, startup, *times, gap, interval, took, late, length = FRAME.unpack(header)
        body = self._exactly(length)
        if kind == CALL_FAILED:
            # Worded here, in the ABI's words for the errno: that process has none.
            failure = walk_call_failure(int(body))
            raise KstatError(f"the counter clock's process failed: {type(failure).__name__}: {failure}")
        if kind == ERROR:
            raise KstatError(f"the counter clock's process failed: {body.decode(errors='replace')}")
        clocks = PassClocks(*times)
        slip = Slip(gap, interval, took, late, startup=bool(startup)) if slipped else None
        read = CounterRead(self._reader.walk(body, clocks), self._reader, self._ignored, False, self._present)
        last: bool = kind == LAST
        self._deliver(read, last, slip)
        return last

    def _exactly(self, size: int) -> bytes:
        """`size` bytes from the process: a walk is received into the bytes kstat keeps, in
        one call as a rule (MSG_WAITALL), not into a buffer copied after (at 10,000 programs,
        0.64 MB more of the peak, and a copy, each interval)."""
        assert self._channel is not None
        pieces: list[bytes] = []
        got = 0
        while True:
            piece = self._channel.recv(size - got, socket.MSG_WAITALL)
            got += len(piece)
            if got == size:
                return piece if not pieces else b"".join([*pieces, piece])
            if not piece:
                raise KstatError("the counter clock's process ended before the window did")
            # Cut short (by a signal): the rest is waited for the same way.
            pieces.append(piece)

    def _end(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
