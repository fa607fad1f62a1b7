"""The walk's buffers (kstat.sources.walks): reads cut short mid-page, each call into the
buffers after the last one's, the walk whole and in order, never copied until joined."""

from __future__ import annotations

import os
import socket

import pytest

from kstat.sources import walks
from kstat.sources.walks import PAGE, WalkBuffers, joined


def _records(sizes: list[int], first: int = 0) -> tuple[socket.socket, bytes]:
    """A reader's end holding one packet of each size, then the end: a SOCK_SEQPACKET socket
    gives one packet a call, as a kernel that returns a walk in short reads does."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sent = []
    for index, size in enumerate(sizes):
        packet = bytes((first + index + offset) % 251 for offset in range(size))
        theirs.send(packet)
        sent.append(packet)
    theirs.close()
    return ours, b"".join(sent)


@pytest.mark.parametrize("sizes", [[5000, 3000, 100, 9000], [PAGE, PAGE, 1], [1], []])
def test_short_reads_come_back_whole_and_in_order(sizes: list[int]) -> None:
    reader, expected = _records(sizes)
    with reader:
        buffers = WalkBuffers()
        pieces = buffers.views(reader.fileno())
    assert (joined(pieces) if pieces else b"") == expected
    # Each piece lies in a buffer of its own: nothing was copied on the way.
    assert all(any(piece.obj is buffer for buffer in buffers._buffers) for piece in pieces)


def test_the_buffers_grow_to_a_walk_longer_than_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer filled and the walk not over: more buffers, kept for the next walk; one
    call takes MOST_PER_CALL buffers at most."""
    monkeypatch.setattr(walks, "MOST_PER_CALL", 2)
    reader, expected = _records([PAGE] * 5 + [7])
    with reader:
        buffers = WalkBuffers()
        buffers._buffers = [bytearray(PAGE)]
        got = buffers.read(reader.fileno())
    assert got == expected
    assert len(buffers._buffers) >= 6


def test_a_walk_is_views_until_the_next_one() -> None:
    """`views` gives the buffers' own memory: the clock's process sends from it; `read` gives
    a copy that outlives the next walk."""
    first, expected = _records([3000])
    second, later = _records([2000], first=100)
    buffers = WalkBuffers()
    with first, second:
        kept = buffers.read(first.fileno())
        view = buffers.views(second.fileno())[0]
    assert kept == expected
    assert view.obj is buffers._buffers[0] and bytes(view) == later  # where the first lay


def test_walk_once_closes_the_walks_fd_even_when_the_read_fails() -> None:
    directory = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        open_before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(IsADirectoryError):  # readv(2) of a directory
            walks.walk_once(lambda: os.dup(directory), WalkBuffers())
        pieces, clocks = walks.walk_once(lambda: os.dup(read_end), WalkBuffers())
        assert pieces == []
        assert clocks.monotonic_ns > 0
        assert len(os.listdir("/proc/self/fd")) == open_before
    finally:
        os.close(directory)
        os.close(read_end)
