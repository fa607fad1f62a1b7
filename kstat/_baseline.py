"""The window's baseline, read first: the stats switched on and every program's counters read
by syscalls before anything slow is imported (the CLI, trio, structlog, the sinks).

A load test started beside kstat loses whatever runs before kstat's baseline, so the command
line takes it within milliseconds of launch; the window then adopts it as its first reading,
and the stats fd with it. A command that turns out not to collect (a usage error, `--help`)
never claims it, and the process's exit closes the fd.
"""

from __future__ import annotations

import os

from kstat.errors import KstatError
from kstat.sources.syscalls import EarlyBaseline, ProgramReader

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
        reader = ProgramReader()
        _taken.append(EarlyBaseline(stats_fd, reader, reader.read()))
    except (KstatError, OSError):
        os.close(stats_fd)


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
