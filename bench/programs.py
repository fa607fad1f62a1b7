"""The programs the bench measures: real socket filters, loaded and kept loaded by their fds."""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

from kstat.testing.loader import SocketFilter

T = TypeVar("T")


def spread(programs: Sequence[T], count: int) -> list[T]:
    """`count` of `programs` spread evenly over them (every len/count-th): the busy ones, as a
    host's are among its idle ones. Side by side (the first `count`), they would fill a few
    of the iterator reader's blocks of records and hide what one busy program in each costs
    (before its blocks were halved, 44 ms an interval at 10,000 programs with 200 busy spread,
    3 ms with the same 200 side by side)."""
    if count <= 0:
        return []
    step = max(1, len(programs) // count)
    return list(programs[::step][:count])


def raise_open_file_limit(needed: int) -> None:
    """Lift the soft fd limit to the hard one: every loaded program is an fd held open here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"bench: needs {needed} open files, the hard limit is {hard} (raise it: ulimit -Hn)")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ProgramSet:
    """Socket-filter programs that stay loaded until `close` (or the process's exit) drops them.

    They are never attached: a snapshot reads every loaded program whether it runs or not, and
    an unattached filter keeps the machine quiet while it is measured. No BTF is given to them,
    so no tool spends time on full names (see BENCHMARKS.md).
    """

    def __init__(self) -> None:
        self._programs: list[SocketFilter] = []

    def __len__(self) -> int:
        return len(self._programs)

    @property
    def loaded(self) -> tuple[SocketFilter, ...]:
        """The programs loaded now, oldest (lowest id) first."""
        return tuple(self._programs)

    def resize(self, count: int) -> None:
        """Load or unload programs until exactly `count` are loaded; the kernel frees an
        unloaded program's id at once, so the next snapshot no longer sees it."""
        while len(self._programs) > count:
            self._programs.pop().close()
        for index in range(len(self._programs), count):
            self._programs.append(SocketFilter(f"kbench_{index}"))

    def close(self) -> None:
        self.resize(0)

    def __enter__(self) -> ProgramSet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
