"""Who holds each program: the processes with an fd to it, or to a link that holds it.

Two ways to find them, one answer:

- `IteratorOwners`: kstat's BPF iterator over task files (`kstat.sources.task_files`, Linux
  5.8+ with BTF), every bpf fd of every process in one read. The default.
- `ProcWalk`: /proc, as bpftool and ps do: a readlink per fd of every process, and an fdinfo
  read per bpf fd. Where the iterator cannot be built or loaded (no `iter/task_file`, no BTF,
  a refusal). Incremental: a process is walked again only when it is new or its fd count
  changed since the last walk, and every process when a program asked about is held by none of
  the processes known (a process may have put another file at an fd number it held a program
  at, leaving the count as it was).

`open_owner_source()` picks one and says which in one log line. Both answer `owners()` with
the same `ProgramOwner`s, by program id: pid (the process, not a thread), command (comm) and
workload (from the process's cgroup, as the caller's `workload_of` finds it).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

from attrs import define, field, frozen

from kstat._logging import get_logger
from kstat.abi.btf import BtfFormatError
from kstat.core.model import NO_WORKLOAD, ProgramOwner, Workload
from kstat.errors import KstatError
from kstat.sources.descriptions import ProgramDescriber
from kstat.sources.fdinfo import fdinfo_number
from kstat.sources.task_files import TaskFileIterator, command_text

log = get_logger(__name__)

PROC: Final = Path("/proc")
OWNER_METHODS: Final = ("auto", "iterator", "proc")
# readlink of an fd that holds a program, or a link (which holds its program).
_BPF_FD_TARGETS: Final = ("anon_inode:bpf-prog", "anon_inode:bpf_link")
# Field 22 of /proc/PID/stat, counted after the comm (which may hold spaces and parentheses).
_START_TIME_AFTER_COMM: Final = 19

WorkloadOf = Callable[[int], Workload]


class OwnerSource(Protocol):
    """Where owners come from: kstat's task-file iterator or /proc."""

    @property
    def method(self) -> str:
        """`iterator` or `proc`, for logs and reports."""
        ...

    def owners(
        self, workload_of: WorkloadOf | None = None, wanted: Collection[int] | None = None
    ) -> dict[int, tuple[ProgramOwner, ...]]:
        """The processes holding each program (of `wanted`, or every program held), by
        program id, sorted by pid; `workload_of(pid)` is asked once per owner process. The
        tuples may be shared between programs (one tuple for each process's sole programs)."""
        ...

    @property
    def own_program_ids(self) -> frozenset[int]:
        """kstat's own programs the source keeps loaded (the iterator's), which a snapshot
        leaves out."""
        ...

    def close(self) -> None: ...


def _owners_of(
    pids: Iterable[int], command_of: Callable[[int], str], workload_of: WorkloadOf | None
) -> dict[int, ProgramOwner]:
    """The ProgramOwner of each process: its command, and its workload when asked."""
    return {
        pid: ProgramOwner(pid, command_of(pid), workload_of(pid) if workload_of is not None else NO_WORKLOAD)
        for pid in pids
    }


def _owners(
    holders: Mapping[int, Sequence[int]], command_of: Callable[[int], str], workload_of: WorkloadOf | None
) -> dict[int, tuple[ProgramOwner, ...]]:
    """ProgramOwners from the pids holding each program; command and workload once per pid."""
    owner = _owners_of({pid for pids in holders.values() for pid in pids}, command_of, workload_of)
    return {
        program_id: tuple(owner[pid] for pid in sorted(set(pids))) for program_id, pids in holders.items()
    }


# --- by /proc ----------------------------------------------------------------------------------


def _programs_held(root: str, pid: str) -> set[int] | None:
    """The ids of the programs process `pid` holds an fd to, itself or through a link; None
    when it is gone or has no fd table (a kernel thread). Plain strings rather than Path
    objects: this runs for every fd of every process."""
    fd_directory = f"{root}/{pid}/fd"
    try:
        fds = os.listdir(fd_directory)
    except OSError:
        return None
    held: set[int] = set()
    for fd in fds:
        try:
            if os.readlink(f"{fd_directory}/{fd}") not in _BPF_FD_TARGETS:
                continue
        except OSError:
            continue  # closed meanwhile
        program_id = fdinfo_number(f"{root}/{pid}/fdinfo/{fd}", b"prog_id")
        if program_id is not None:  # None: closed meanwhile, or a link without a program
            held.add(program_id)
    return held


def _command_at(root: str) -> Callable[[int], str]:
    def command_of(pid: int) -> str:
        try:
            with open(f"{root}/{pid}/comm", "rb") as comm:
                return command_text(comm.read().removesuffix(b"\n"))
        except OSError:
            return "?"

    return command_of


def _by_program(held_by: Mapping[str, Iterable[int]], wanted: Collection[int] | None) -> dict[int, list[int]]:
    holders: dict[int, list[int]] = defaultdict(list)
    for pid, held in held_by.items():
        for program_id in held:
            if wanted is None or program_id in wanted:
                holders[program_id].append(int(pid))
    return holders


def _process_ids(root: str) -> list[str]:
    return [name for name in os.listdir(root) if name.isdigit()]


def program_owners(
    proc: Path = PROC, workload_of: WorkloadOf | None = None, wanted: Collection[int] | None = None
) -> dict[int, tuple[ProgramOwner, ...]]:
    """Every fd of every process, walked once: the processes holding each program (of `wanted`,
    or every one), by program id."""
    root = str(proc)
    held_by = {pid: held for pid in _process_ids(root) if (held := _programs_held(root, pid))}
    return _owners(_by_program(held_by, _as_set(wanted)), _command_at(root), workload_of)


def _as_set(wanted: Collection[int] | None) -> Collection[int] | None:
    return wanted if wanted is None or isinstance(wanted, (set, frozenset)) else frozenset(wanted)


@frozen
class _Walked:
    """A process as last walked: what tells it from another process or its own later self
    (start time, fd count), and the programs it held then."""

    start_time: bytes
    fd_count: int
    held: frozenset[int]


def _process_key(root: str, pid: str) -> tuple[bytes, int] | None:
    """(start time, fd count) of a process, None when it is gone. The fd count is the size of
    /proc/PID/fd (Linux 6.2+); 0 before, or for a process with no fd open: then it is walked
    every time."""
    try:
        fd = os.open(f"{root}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        fd_count = os.stat(f"{root}/{pid}/fd").st_size
    except OSError:
        return None
    fields = stat.rpartition(b")")[2].split()
    if len(fields) <= _START_TIME_AFTER_COMM:
        return None
    return fields[_START_TIME_AFTER_COMM], fd_count


@define
class ProcWalk:
    """Owners by /proc, walking again only the processes that are new or changed since the
    last walk (`incremental`), or every process every time.

    A process is known by its start time and fd count: a pid reused by another process is a new
    process, a process that opened or closed fds is walked again. One that closed an fd and
    opened another at the same number in between looks unchanged; so when a program asked about
    is held by no process known, every process is walked again before saying it has no owner.
    Left unseen: a program newly held by such a process while some other process holds it too.
    """

    proc: Path = PROC
    incremental: bool = True
    _walked: dict[str, _Walked] = field(factory=dict, init=False)
    # The processes (pids) the last walk went through (the rest it knew): for tests and benches.
    walked_last: set[str] = field(factory=set, init=False)

    @property
    def method(self) -> str:
        return "proc"

    @property
    def own_program_ids(self) -> frozenset[int]:
        return frozenset()

    def owners(
        self, workload_of: WorkloadOf | None = None, wanted: Collection[int] | None = None
    ) -> dict[int, tuple[ProgramOwner, ...]]:
        if not self.incremental:
            return program_owners(self.proc, workload_of, wanted)
        wanted = _as_set(wanted)
        root = str(self.proc)
        held_by = self._walk(root, every=False)
        if wanted:
            known = set().union(*held_by.values())
            if not all(program_id in known for program_id in wanted):
                held_by = self._walk(root, every=True)
        return _owners(_by_program(held_by, wanted), _command_at(root), workload_of)

    def _walk(self, root: str, *, every: bool) -> dict[str, frozenset[int]]:
        """What each process holds: walked when `every`, new or changed, else as last walked."""
        previous, walked = self._walked, {}
        self.walked_last = set()
        for pid in _process_ids(root):
            key = _process_key(root, pid)
            if key is None:
                continue  # gone
            start_time, fd_count = key
            before = previous.get(pid)
            if (
                not every
                and before is not None
                and fd_count
                and (before.start_time, before.fd_count) == (start_time, fd_count)
            ):
                walked[pid] = before
                continue
            self.walked_last.add(pid)
            held = _programs_held(root, pid)
            if held is None:
                continue  # gone, or a kernel thread
            walked[pid] = _Walked(start_time, fd_count, frozenset(held))
        # Only the processes of this walk: exits cannot grow it.
        self._walked = walked
        return {pid: process.held for pid, process in walked.items() if process.held}

    def close(self) -> None:
        self._walked = {}


# --- by BPF iterator ---------------------------------------------------------------------------


class IteratorOwners:
    """Owners by kstat's task-file iterator: one read for every bpf fd of every process."""

    def __init__(self) -> None:
        self._iterator = TaskFileIterator()
        try:
            self.own_id = ProgramDescriber().program_id(self._iterator.program_fd)
        except BaseException:
            self._iterator.close()
            raise

    @property
    def method(self) -> str:
        return "iterator"

    @property
    def own_program_ids(self) -> frozenset[int]:
        return frozenset({self.own_id})

    def owners(
        self, workload_of: WorkloadOf | None = None, wanted: Collection[int] | None = None
    ) -> dict[int, tuple[ProgramOwner, ...]]:
        holders = self._iterator.holders(_as_set(wanted))
        owner = _owners_of(holders.pids, holders.command, workload_of)
        # A process's sole programs share one tuple, as they share one tuple of pids.
        alone: dict[int, tuple[ProgramOwner, ...]] = {pid: (each,) for pid, each in owner.items()}
        return {
            program_id: alone[pids[0]] if len(pids) == 1 else tuple(owner[pid] for pid in pids)
            for program_id, pids in holders.by_program.items()
        }

    def close(self) -> None:
        self._iterator.close()


def open_owner_source(method: str = "auto", proc: Path = PROC) -> OwnerSource:
    """The owner source for `method`: by default kstat's task-file iterator, else (no
    iter/task_file, no BTF, a refusal, kstat in a pid namespace of its own) the incremental
    /proc walk, saying why in one log line. `iterator` insists; `proc` walks /proc.

    The iterator sees the kernel's processes whatever `proc` is; the walk reads `proc`."""
    if method not in OWNER_METHODS:
        raise ValueError(f"owner method must be one of {', '.join(OWNER_METHODS)}, not {method!r}")
    if method == "proc":
        return ProcWalk(proc)
    try:
        source = IteratorOwners()
    except (OSError, BtfFormatError, KstatError) as error:
        # One line: a verifier's refusal comes with its whole log.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if method == "iterator":
            raise KstatError(f"cannot find owners by BPF iterator on this kernel: {reason}") from None
        log.info("owners by /proc walk: the task-file iterator is not available here", reason=reason)
        return ProcWalk(proc)
    log.info("owners by BPF iterator over task files", program_id=source.own_id)
    return source
