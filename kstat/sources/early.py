"""The window's first reading, taken at launch by the command line (`kstat._baseline`)."""

from __future__ import annotations

from attrs import frozen

from kstat.core.model import Reading
from kstat.sources.iterator import IteratorReader
from kstat.sources.syscalls import ProgramReader


@frozen
class EarlyBaseline:
    """A window's first reading taken before the window itself was set up: the stats fd that
    has been on since, the reader that read it (whose bookkeeping the next read goes on from),
    how it read ("iterator" where an earlier kstat left this kernel's offsets in the cache,
    else "syscalls"), and the reading."""

    stats_fd: int
    reader: ProgramReader | IteratorReader
    method: str
    reading: Reading
