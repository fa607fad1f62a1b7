"""The window's baseline, read first: the stats switched on and every program's counters read
(by kstat's iterator where an earlier run cached this kernel's offsets, else by syscalls)
before anything slow is imported (the CLI, trio, structlog, the sinks).

A load test started beside kstat loses whatever runs before kstat's baseline, so the command
line takes it within milliseconds of launch; the window then adopts it as its first reading,
and the stats fd with it. A command that turns out not to collect (a usage error, `--help`)
never claims it, and the process's exit closes the fd.
"""

from __future__ import annotations

import os

from kstat.errors import KstatError
from kstat.sources import offsets_cache
from kstat.sources.early import EarlyBaseline
from kstat.sources.iterator import VMLINUX_BTF, IteratorReader, KernelOffsets
from kstat.sources.syscalls import ProgramReader

_taken: list[EarlyBaseline] = []
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
        reader, method = _reader()
        _taken.append(EarlyBaseline(stats_fd, reader, method, reader.read()))
    except (KstatError, OSError):
        os.close(stats_fd)


def _reader() -> tuple[ProgramReader | IteratorReader, str]:
    """kstat's iterator where this kernel's offsets are in the cache (one read for every
    program, stamped at that read, however many there are); else the syscalls, which need no
    BTF parsed (the window's iterator, loaded later, fills the cache for the next run)."""
    if offsets_cache.cached(KernelOffsets, VMLINUX_BTF):
        try:
            return IteratorReader(), "iterator"
        except (KstatError, OSError):
            pass  # the window tries again, and says why it cannot
    return ProgramReader(), "syscalls"


def claim() -> EarlyBaseline | None:
    """The baseline taken at launch, once: the window that claims it owns its stats fd."""
    return _taken.pop() if _taken else None


def discard() -> None:
    """Switch the early stats off again: this command does not collect."""
    while _taken:
        os.close(_taken.pop().stats_fd)


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
