"""An iterator's walk read whole, between two time stamps: kstat's iterator reader reads its
walks with this, and so does the counter clock's process (`kstat.engine._clock_child`), which
imports it for that alone: it needs os, the bpf(2) call and kstat's clocks, nothing more.
"""

from __future__ import annotations

import os

# The most one readv(2) takes (the kernel's IOV_MAX: beyond 4 MiB a walk is a few calls).
from kstat._writev import MOST_PER_CALL
from kstat.abi.syscall import PreparedCall
from kstat.sources.clocks import ClockStart

# Not `typing.TYPE_CHECKING`: the clock's process imports no typing (kstat.engine.clock).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final

# readv(2)'s buffers: page-sized, as many as the longest walk so far filled.
PAGE: Final = 4096
FIRST_BUFFERS: Final = 64


class WalkBuffers:
    """Where an iterator's walks are read into: page-sized buffers, as many as the longest
    walk so far filled, read by one readv(2) for the whole walk as a rule.

    A read(2) of an iterator returns one seq_file buffer at most (32 KiB): at 10,000 programs
    a walk would be twenty reads, and between any two of them the reading thread gives up the
    interpreter's lock and may wait up to a switch interval to get it back, stretching the walk
    that the read's time stamps. A readv(2) into page-sized buffers is read(2) once per buffer
    inside the kernel, so the whole walk is one system call (or a few, where a kernel returns a
    short one: the loop goes on, into the buffers not filled yet, until the end).

    Each call reads where the calls before it stopped, so that the walk ends up in the
    buffers as it came, never copied on the way: `views` gives it as it lies there (the clock's
    process sends it from there), `read` as one bytes (one copy, for a reader that keeps it).
    """

    def __init__(self) -> None:
        self._buffers = [bytearray(PAGE) for _ in range(FIRST_BUFFERS)]

    def release(self) -> None:
        """Let the pages go (a walk's worth): no walk is read after this."""
        self._buffers = []

    def views(self, fd: int) -> list[memoryview]:
        """The whole walk of an iterator's fd, in order, as views of the buffers: valid until
        the next walk is read into them."""
        buffers = self._buffers
        pieces: list[memoryview] = []
        # The first buffer not filled yet: a call cut short mid-page leaves the rest of that
        # page unused, and the next call starts on the next page.
        at = 0
        while True:
            if at == len(buffers):
                # Every buffer filled and the walk not over: a quarter more (at least the first
                # walk's share), kept for the next walks, which are as long as a rule.
                buffers += [bytearray(PAGE) for _ in range(max(FIRST_BUFFERS, len(buffers) // 4))]
            given = buffers[at : at + MOST_PER_CALL]
            count = os.readv(fd, given)
            if count == 0:
                return pieces
            full, rest = divmod(count, PAGE)
            pieces += [memoryview(buffer) for buffer in given[:full]]
            if rest:
                pieces.append(memoryview(given[full])[:rest])
            at += full + (rest > 0)

    def read(self, fd: int) -> bytes:
        """The whole walk of an iterator's fd, as one bytes."""
        return joined(self.views(fd))


def joined(pieces: list[memoryview]) -> bytes:
    """A walk's views as one bytes (the one copy a reader that keeps the walk makes)."""
    return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)


def walk_once(open_walk: Callable[[], int], buffers: WalkBuffers) -> tuple[list[memoryview], ClockStart]:
    """One walk of an iterator (`open_walk` opens it: BPF_ITER_CREATE of its link) as views of
    `buffers`, and the clocks around the walk alone (stopped): the fd is opened and closed
    outside them (each a system call after which the thread may wait for the interpreter's
    lock)."""
    fd = open_walk()
    try:
        clocks = ClockStart()
        pieces = buffers.views(fd)
        clocks.stop()
        return pieces, clocks
    finally:
        os.close(fd)


class WalkCallFailed(Exception):
    """The bpf(2) call that opens a walk failed with this errno (worded by kstat's ABI, in
    kstat's process: `kstat.sources.iterator.walk_call_failure`)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def walk_opener(sys_bpf: int, command: int, attr: bytes) -> Callable[[], int]:
    """What opens a walk, from the call `kstat.sources.iterator.walk_call` gives: its fd, or
    WalkCallFailed."""
    call = PreparedCall(sys_bpf, command, attr).call

    def open_walk() -> int:
        try:
            return call()
        except OSError as error:
            raise WalkCallFailed(error.errno or 0) from None

    return open_walk
