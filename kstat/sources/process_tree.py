"""A process and its descendants, followed while a window runs, and the programs they load:
what "the command's programs" means for `kstat run -- CMD` and "the test's own programs" for
the pytest fixture.

A program belongs to the tree when, at the moment the window first meets it:

- a process of the tree holds it (an fd to it or to one of its links: its owners), or
- a process of the tree loaded it during the window, whatever became of the fd: handed to
  another process, closed after pinning it in bpffs or attaching it (tc, XDP, a cgroup) with no
  fd left, or held only through a link.

The tree is followed by the kernel's own records, not by polling /proc: a dummy perf event per
CPU receives a record of every fork and of every BPF program load on the host, each stamped
with the task that made it and CLOCK_MONOTONIC (`kstat.abi.perf`). Replayed in time order, the
forks say who joined the tree (a child of a member, even one a double fork left to init), and
the loads say which programs a member loaded, even one that exited a moment later (`bpftool
prog load ... pinned`). A pid the kernel hands to a process outside the tree leaves it then.

Where perf is refused (a seccomp profile, no CAP_PERFMON), the tree is each owner's ancestry in
/proc at that moment: a daemon whose parent exited is lost to it, and so is a program whose
loader closed its fd before the window met the program. The window's log says so, once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Final

from kstat._logging import get_logger
from kstat.abi.perf import (
    BPF_EVENT_PROG_LOAD,
    BPF_EVENT_PROG_UNLOAD,
    BPF_EVENT_RECORD,
    RECORD_BPF_EVENT,
    RECORD_EXIT,
    RECORD_FORK,
    RECORD_LOST,
    TASK_RECORD,
    SideBandRecord,
    SideBandRing,
)
from kstat.core.model import ProgramIdentity, ProgramStats
from kstat.errors import KstatError
from kstat.sources.fdinfo import fdinfo_number

log = get_logger(__name__)

PROC: Final = "/proc"
ONLINE_CPUS: Final = "/sys/devices/system/cpu/online"
# How long a load is remembered after its program was unloaded, and a member after it exited:
# the details stage judges a reading some time after it was read, and a program read just
# before it went (or a thread of a process whose leader exited first) must still be judged
# as it was.
_FORGET_AFTER_NS: Final = 10_000_000_000
# readlink of an fd that holds a program, or a link (which holds its program).
_BPF_FD_TARGETS: Final = ("anon_inode:bpf-prog", "anon_inode:bpf_link")
# A program loaded this recently may not have its load record in the ring yet; waiting this
# long is far more than the kernel takes between giving it an id and writing the record.
_JUST_LOADED_NS: Final = 20_000_000
_RECORD_DELAY_S: Final = 0.005


def _online_cpus(path: str = ONLINE_CPUS) -> list[int]:
    with open(path) as file:
        text = file.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def parent_of(pid: int, proc: str = PROC) -> int | None:
    """The parent's pid from /proc/PID/stat (None once the process is gone). The command name
    may hold spaces and parentheses: the fields that follow it start after its last `)`."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def programs_held_by(pid: int, proc: str = PROC) -> set[int]:
    """The ids of the programs a process holds now, through a program's or a link's fd."""
    held: set[int] = set()
    directory = f"{proc}/{pid}/fd"
    try:
        fds = os.listdir(directory)
    except OSError:
        return held
    for fd in fds:
        try:
            if os.readlink(f"{directory}/{fd}") not in _BPF_FD_TARGETS:
                continue
        except OSError:
            continue
        program_id = fdinfo_number(f"{proc}/{pid}/fdinfo/{fd}", b"prog_id")
        if program_id is not None:
            held.add(program_id)
    return held


def descendants(root: int, proc: str = PROC) -> set[int]:
    """Every process under `root` now, from each thread's `children` list (CONFIG_PROC_CHILDREN),
    else from every process's parent in /proc."""
    found: set[int] = set()
    pending = [root]
    try:
        while pending:
            pid = pending.pop()
            for task in os.listdir(f"{proc}/{pid}/task"):
                with open(f"{proc}/{pid}/task/{task}/children") as file:
                    for child in file.read().split():
                        if int(child) not in found:
                            found.add(int(child))
                            pending.append(int(child))
        return found
    except FileNotFoundError:
        if not os.path.exists(f"{proc}/{root}"):
            return set()
    except OSError:
        pass
    parents: dict[int, int] = {}
    for entry in os.listdir(proc):
        if entry.isdigit():
            parent = parent_of(int(entry), proc)
            if parent is not None:
                parents[int(entry)] = parent
    found = set()
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if pid not in found and (parent == root or parent in found):
                found.add(pid)
                changed = True
    return found


class ProcessTree:
    """`root` and its descendants, and the programs they loaded since the tree was opened.

    `holds(program)` is the verdict for a program met for the first time; it is kept, so that a
    report mid-window (another snapshot taker) judges the window's programs as the window did,
    until `forget` (the program went away). Thread-safe: the details stage and a report so far
    ask from their own threads.
    """

    def __init__(self, root: int, *, proc: str = PROC, follow_with_perf: bool = True) -> None:
        self.root = root
        self._proc = proc
        self._lock = threading.Lock()
        self._members: set[int] = {root} | descendants(root, proc)
        # kstat's own process opens every program for an instant (its readers, its details):
        # as an owner it only counts for what it held before the window began reading.
        self._self = os.getpid()
        self._held_by_self = programs_held_by(self._self, proc) if self._self in self._members else set()
        # From when the kernel's records are followed: a program loaded since has a load record
        # if a member loaded it, and that alone decides.
        self.opened_boottime_ns = 0
        # (program id, tag) -> loaded by a member.
        self._loads: set[tuple[int, str]] = set()
        # Programs whose load record names no task (pid 0: seen on 6.18 while two instances of
        # kstat ran a window each, for every instance's rings and a bare reader's alike): who
        # loaded them is unknown, so their holders say, as without the records.
        self._loader_unknown: set[tuple[int, str]] = set()
        # What to forget once its time (CLOCK_MONOTONIC, ns) has come: exited members, loads of
        # programs unloaded since; each in time order.
        self._exited: deque[tuple[int, int]] = deque()
        self._unloaded: deque[tuple[int, tuple[int, str]]] = deque()
        self._verdicts: dict[ProgramIdentity, bool] = {}
        # Without perf: whether each pid asked about descends from the root, this refresh.
        self._ancestry: dict[int, bool] = {}
        self._rings: list[SideBandRing] = []
        # Whether the kernel's records follow the tree (else: /proc ancestry), and whether any
        # were lost (a ring that overflowed: the tree may miss a fork or a load).
        self.followed = False
        self.lost_records = 0
        if follow_with_perf:
            self._open_rings()

    def _open_rings(self) -> None:
        try:
            for cpu in _online_cpus():
                try:
                    self._rings.append(SideBandRing(cpu))
                except OSError:
                    if self._rings:
                        continue  # a CPU that went offline since: its records never come
                    raise
        except (KstatError, OSError) as error:
            for ring in self._rings:
                ring.close()
            self._rings = []
            log.info(
                "the process tree is followed through /proc (perf records refused): a daemon whose "
                "parent exited, or a program whose loader closed it before the window met it, "
                "is not counted as the tree's",
                reason=str(error),
            )
            return
        self.followed = True
        self.opened_boottime_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    @property
    def members(self) -> frozenset[int]:
        with self._lock:
            self._refresh()
            return frozenset(self._members)

    def refresh(self) -> None:
        """Take in the records the kernel wrote since the last refresh."""
        with self._lock:
            self._refresh()

    def holds(self, program: ProgramStats) -> bool:
        """Whether the program is the tree's: a member holds it, or a member loaded it during
        the window. Judged once per program (see the class)."""
        return self.holds_all([program])[0]

    def holds_all(self, programs: Sequence[ProgramStats]) -> list[bool]:
        """`holds` for many programs, after one refresh."""
        if not programs:
            return []
        with self._lock:
            self._refresh()
            verdicts = self._verdicts
            fresh = [program for program in programs if program.identity not in verdicts]
            found = {program.identity: self._judge(program) for program in fresh}
            # A program is visible to a read a moment before its load record is written (the
            # kernel gives it its id first): one that is not the tree's, and was loaded just
            # now, is looked at again once that moment has surely passed.
            now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            just_loaded = [
                program
                for program in fresh
                if not found[program.identity] and now - program.load_time_ns < _JUST_LOADED_NS
            ]
            if just_loaded and self.followed:
                time.sleep(_RECORD_DELAY_S)
                self._refresh()
                for program in just_loaded:
                    found[program.identity] = (program.id, program.tag) in self._loads
            verdicts.update(found)
            return [verdicts[program.identity] for program in programs]

    def forget(self, identity: ProgramIdentity) -> None:
        with self._lock:
            self._verdicts.pop(identity, None)

    def _judge(self, program: ProgramStats) -> bool:
        if (program.id, program.tag) in self._loads:
            return True
        if (
            self.followed
            and program.load_time_ns >= self.opened_boottime_ns
            and not self.lost_records
            and (program.id, program.tag) not in self._loader_unknown
        ):
            # Loaded while the tree was followed, not by a member. That a member holds it now
            # proves nothing: a member running `bpftool prog show`, or another kstat, opens every
            # program for an instant. (Once records were lost, its load record may be one of
            # them: then, as without perf, a member holding it is what says.)
            return False
        owners = [owner.pid for owner in program.details.owners]
        if self.followed:
            owners = [pid for pid in owners if pid != self._self or program.id in self._held_by_self]
            return any(pid in self._members for pid in owners)
        return any(self._descends(pid) for pid in owners)

    def _descends(self, pid: int) -> bool:
        """/proc's answer, without perf: is `pid` the root or below it, now (each answer kept
        for this refresh: a host's programs share a few owners)."""
        known = self._ancestry
        chain: list[int] = []
        current: int | None = pid
        answer = False
        while current is not None and current > 0 and len(chain) < 4096:
            if current in known:
                answer = known[current]
                break
            if current == self.root or current in self._members:
                answer = True
                break
            if current == 1:
                break
            chain.append(current)
            current = parent_of(current, self._proc)
        for visited in chain:
            known[visited] = answer
        return answer

    def _refresh(self) -> None:
        self._ancestry = {}
        if not self._rings:
            return
        records: list[SideBandRecord] = []
        for ring in self._rings:
            records += ring.read()
        # Each ring is in time order; the tree needs one order over all CPUs (a fork on one,
        # the child's load on another).
        records.sort(key=lambda record: record.time_ns)
        members, loads = self._members, self._loads
        lost_before = self.lost_records
        for record in records:
            if record.type == RECORD_FORK:
                pid, parent, tid, _, _ = TASK_RECORD.unpack_from(record.body)
                if pid == tid and pid != parent:  # a new process, not a thread
                    # A reused pid leaves the tree here unless its new parent is a member.
                    if parent in members:
                        members.add(pid)
                    else:
                        members.discard(pid)
            elif record.type == RECORD_EXIT:
                pid, _, tid, _, _ = TASK_RECORD.unpack_from(record.body)
                if pid == tid and pid in members and pid != self.root:
                    self._exited.append((record.time_ns + _FORGET_AFTER_NS, pid))
            elif record.type == RECORD_BPF_EVENT:
                event_type, _, program_id, tag = BPF_EVENT_RECORD.unpack_from(record.body)
                key = (program_id, tag.hex())
                if event_type == BPF_EVENT_PROG_LOAD and record.pid in members:
                    loads.add(key)
                elif event_type == BPF_EVENT_PROG_LOAD and record.pid == 0:
                    self._loader_unknown.add(key)
                elif event_type == BPF_EVENT_PROG_UNLOAD and (key in loads or key in self._loader_unknown):
                    self._unloaded.append((record.time_ns + _FORGET_AFTER_NS, key))
            elif record.type == RECORD_LOST:
                if not self.lost_records:
                    log.warning(
                        "the kernel dropped records of forks and loads (a busy host): the process "
                        "tree may miss a process or a program from here on"
                    )
                self.lost_records += 1
        if self.lost_records != lost_before:
            # A fork among the lost records would leave a member out for good (another tenant
            # loading 10,000 programs at once overflows the rings): /proc says who is below
            # the root now.
            members |= descendants(self.root, self._proc)
        now = time.monotonic_ns()
        while self._exited and self._exited[0][0] <= now:
            _, pid = self._exited.popleft()
            # Unless the pid is a member again (its fork said so) or still there.
            if parent_of(pid, self._proc) is None:
                members.discard(pid)
        while self._unloaded and self._unloaded[0][0] <= now:
            key = self._unloaded.popleft()[1]
            loads.discard(key)
            self._loader_unknown.discard(key)

    def describe(self) -> dict[str, object]:
        return {"root": self.root, "followed": "perf" if self.followed else "proc"}

    def close(self) -> None:
        with self._lock:
            for ring in self._rings:
                with contextlib.suppress(OSError):
                    ring.close()
            self._rings = []
