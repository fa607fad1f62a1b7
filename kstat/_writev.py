"""Writing a list of pieces to an fd whole, by writev(2): the counter clock's process sends its
walks so, from the buffers they were read into, and kstat's safe writes write a report so, from
the encoder's pieces. Neither joins them into one bytes first.

It imports os alone: the clock's process imports it (`kstat.engine._clock_child`).
"""

from __future__ import annotations

import os

# Not `typing.TYPE_CHECKING`: the clock's process imports no typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# The most one readv(2) or writev(2) takes (the kernel's IOV_MAX).
MOST_PER_CALL: Final = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


def write_pieces(fd: int, pieces: list[bytes | memoryview]) -> None:
    """Every byte of `pieces`, in order: a write to a stream socket or a pipe may take part of
    them, and one writev(2) takes `MOST_PER_CALL` pieces at most. A piece written in part is
    replaced, in the list given, by a view of what is left of it."""
    at = 0
    while at < len(pieces):
        written = os.writev(fd, pieces[at : at + MOST_PER_CALL])
        while at < len(pieces) and written >= len(pieces[at]):
            written -= len(pieces[at])
            at += 1
        if written:
            pieces[at] = memoryview(pieces[at])[written:]
