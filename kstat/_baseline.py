"""The window's baseline, read first: the stats switched on and every program's counters read
(by kstat's iterator where an earlier run cached this kernel's offsets, else by syscalls)
before anything slow is imported (the CLI, trio, structlog, the sinks, attrs).

A load test started beside kstat loses whatever runs before kstat's baseline, so the command
line takes it within milliseconds of launch; the window then adopts it as its first reading,
and the stats fd with it. A command that turns out not to collect (a usage error, `--help`)
never claims it, and the process's exit closes the fd.

By the iterator, the path from launch to the read imports only kstat's bpf(2) layer, the
iterator's builder (`kstat.sources.program_iterator`) and the offsets cache, which use ctypes,
struct, hashlib and json: the walk's bytes and clocks are kept as read, and decoded into a
reading (attrs values) only when the window claims them, after the CLI is imported. By
syscalls (a first run on this kernel, no offsets cached yet) the reader is the window's own.
"""

from __future__ import annotations

import os

from kstat.errors import KstatError
from kstat.sources import offsets_cache
from kstat.sources.clocks import ClockStart
from kstat.sources.program_iterator import VMLINUX_BTF, KernelOffsets, ProgramIterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kstat.sources.early import EarlyBaseline


class _Walk:
    """The launch's baseline by iterator, as read: the stats fd, the loaded iterator, the walk's
    bytes and the clocks around it."""

    __slots__ = ("clocks", "data", "iterator", "stats_fd")

    def __init__(self, stats_fd: int, iterator: ProgramIterator, data: bytes, clocks: ClockStart) -> None:
        self.stats_fd, self.iterator, self.data, self.clocks = stats_fd, iterator, data, clocks


_taken: list[EarlyBaseline | _Walk] = []
# Commands that open no window (the demo loads its programs first, then opens its own).
_NOT_COLLECTING = frozenset({"demo", "list", "compare", "history", "plot", "help", "completion"})


def take() -> None:
    """Switch the stats on and read every program, now; on any refusal (privileges, a kernel
    before 5.8), leave it to the window, which says why in its own words."""
    from kstat.abi.bpf import enable_run_time_stats  # noqa: PLC0415 - as late as possible: fast start

    try:
        stats_fd = enable_run_time_stats()
    except (KstatError, OSError):
        return
    try:
        _taken.append(_by_iterator(stats_fd) or _by_syscalls(stats_fd))
    except (KstatError, OSError):
        os.close(stats_fd)


def _by_iterator(stats_fd: int) -> _Walk | None:
    """kstat's iterator where this kernel's offsets are in the cache: one read for every
    program, stamped at that read, however many there are. None where it cannot be."""
    if not offsets_cache.cached(KernelOffsets, VMLINUX_BTF):
        return None
    try:
        iterator = ProgramIterator()
    except (KstatError, OSError):
        return None  # the window tries again, and says why it cannot
    try:
        clocks = ClockStart()
        data = iterator.read()
        clocks.stop()
    except BaseException:
        iterator.close()
        raise
    return _Walk(stats_fd, iterator, data, clocks)


def _by_syscalls(stats_fd: int) -> EarlyBaseline:
    """The syscalls, which need no BTF parsed (the window's iterator, loaded later, fills the
    cache for the next run): this imports the syscall reader and its values (attrs)."""
    from kstat.sources.early import EarlyBaseline  # noqa: PLC0415
    from kstat.sources.syscalls import ProgramReader  # noqa: PLC0415

    reader = ProgramReader()
    return EarlyBaseline(stats_fd, reader, "syscalls", reader.read())


def claim() -> EarlyBaseline | None:
    """The baseline taken at launch, once: the window that claims it owns its stats fd (and
    the iterator that read it, now a reader's)."""
    if not _taken:
        return None
    taken = _taken.pop()
    if not isinstance(taken, _Walk):
        return taken
    from kstat.sources.early import EarlyBaseline  # noqa: PLC0415
    from kstat.sources.iterator import IteratorReader  # noqa: PLC0415

    try:
        reader = IteratorReader(iterator=taken.iterator)
    except (KstatError, OSError):
        # The iterator's own program could not be read back: the window reads its own baseline.
        taken.iterator.close()
        os.close(taken.stats_fd)
        return None
    return EarlyBaseline(
        taken.stats_fd, reader, "iterator", reader.reading_of(taken.data, taken.clocks.end())
    )


def discard() -> None:
    """Switch the early stats off again: this command does not collect."""
    while _taken:
        taken = _taken.pop()
        if isinstance(taken, _Walk):
            taken.iterator.close()
        os.close(taken.stats_fd)


def collects(arguments: list[str]) -> bool:
    """Whether a command line asks for a window (`kstat [flags]`, `run`, `serve`, `top`), told
    without parsing it: a wrong guess only costs a read that is thrown away."""
    if any(argument in ("-h", "--help", "-version", "--version") for argument in arguments):
        return False
    if "--" in arguments:
        arguments = arguments[: arguments.index("--")]
    # The first word that is no flag is a command, or a flag's value (`kstat -duration 5s`).
    first = next((argument for argument in arguments if not argument.startswith("-")), None)
    return first not in _NOT_COLLECTING
