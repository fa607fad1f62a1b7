"""The syscall reader: every loaded program's counters through bpf(2), three or four syscalls a
program (next id, fd by id, info, close), and each program's details (BTF name, footprint, by
`kstat.sources.descriptions`) when it is first met.

This is the fallback of kstat's iterator (`kstat.sources.iterator`) and the source of every
program's details on both paths.
"""

from __future__ import annotations

import ctypes
import errno
import operator
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from kstat.abi import bpf
from kstat.abi.enums import Command, program_type_name
from kstat.abi.structs import PROG_INFO_SIZE, RUN_COUNTERS_END, GetIdAttr, ProgInfo
from kstat.core.counters import COUNTERS, Counters, Value
from kstat.core.model import MapFootprint, ProgramChanges, ProgramFootprint, ProgramStats, Reading
from kstat.errors import UnsupportedKernel
from kstat.sources.clocks import ClockStart
from kstat.sources.descriptions import ProgramDescriber, ProgramDescription
from kstat.text import from_host

# Each counter of the catalogue's that bpf_prog_info has (a field of its kernel name), with
# where the field ends (a kernel older than the field writes less); None for the others (the
# per-CPU splits: bpf_prog_info has only sums).
_PROG_INFO_FIELDS: Final = frozenset(name for name, *_ in ProgInfo._fields_)
_IN_PROG_INFO: Final = tuple(
    (spec.kernel_name, getattr(ProgInfo, spec.kernel_name).offset + getattr(ProgInfo, spec.kernel_name).size)
    if spec.kernel_name in _PROG_INFO_FIELDS
    else None
    for spec in COUNTERS
)


def counters_read_by(written: int) -> Callable[[ProgInfo], tuple[Value, ...]]:
    """How a bpf_prog_info of which the kernel wrote `written` bytes gives the catalogue's
    counters, in its order: each one whose field the kernel wrote, None for the rest (a counter
    this kernel lacks, or one bpf_prog_info does not have). Worked out once per kernel: this
    runs for every program of every pass."""
    names = tuple(None if field is None or written < field[1] else field[0] for field in _IN_PROG_INFO)
    present = tuple(name for name in names if name is not None)
    if present and names[: len(present)] == present:  # the usual case: they lead, in C
        getter, tail = operator.attrgetter(*present), (None,) * (len(names) - len(present))
        if len(present) == 1:
            return lambda info: (getter(info), *tail)
        return lambda info: getter(info) + tail
    return lambda info: tuple(None if name is None else getattr(info, name) for name in names)


class ProgramReader:
    """Reads every loaded program's counters, reusing its buffers between passes.

    Not thread-safe: one reader per thread. Every fd it opens is closed before it moves on.

    This is the sampler's hot path (a few µs a program, most of it the four syscalls): the
    ctypes arguments are built once, the walk is inline, and a program met before is rebuilt
    from what the reader already knows (its names, tag and type), or reused whole when its
    counters have not moved. Its full name (from BTF) is looked up once, on first meeting.
    """

    def __init__(self) -> None:
        self._id_attr = GetIdAttr()
        # Each program's bpf_prog_info, read inline: this runs once per program per pass.
        self._info_call = bpf.ProgInfoCall()
        # Built once: converting Python ints and addresses on every call costs as much as the call.
        self._sys_bpf = ctypes.c_long(bpf.require_syscall())
        self._next_id_command = ctypes.c_int(Command.PROG_GET_NEXT_ID)
        self._fd_by_id_command = ctypes.c_int(Command.PROG_GET_FD_BY_ID)
        self._id_attr_pointer = ctypes.c_void_p(ctypes.addressof(self._id_attr))
        self._id_attr_size = ctypes.c_uint(ctypes.sizeof(GetIdAttr))
        # The last reading of every program met in the previous pass, by (id, load time).
        self._known: dict[tuple[int, int], ProgramStats] = {}
        # Full names and footprints, for the programs met for the first time.
        self._describer = ProgramDescriber()
        # The batch's footprints by value: a host's copies of one program (one per container,
        # cgroup or CPU) describe equal footprints, and share one (its object and its numbers,
        # 0.2 KB a program), as they share their tag's string. Let go with the batch.
        self._footprints: dict[ProgramFootprint, ProgramFootprint] = {}
        # How this kernel's bpf_prog_info gives the counters (its length decides), once known.
        self._counters_written = -1
        self._read_counters = counters_read_by(PROG_INFO_SIZE)

    def close(self) -> None:
        """Nothing to give back: every fd of a pass is closed within it."""

    @property
    def own_program_ids(self) -> frozenset[int]:
        return frozenset()

    def program_ids(self) -> Iterator[int]:
        """Every loaded program id, ascending, as the kernel walks its idr."""
        yield from bpf.walk_ids(Command.PROG_GET_NEXT_ID, self._id_attr)

    def read_all(self) -> list[ProgramStats]:
        """Every loaded program's stats and facts (full name, footprint); a program unloaded
        while being read is skipped."""
        programs = self.read_pass()[0]
        self.describe_all(programs)
        return programs

    def read_pass(self) -> tuple[list[ProgramStats], ProgramChanges]:
        reading = self.read()
        return list(reading.programs), reading.changes

    def read(self) -> Reading:
        """Every loaded program's counters, what changed since this reader's previous read,
        and the clocks around the walk.

        The changes come from bookkeeping the pass does anyway (each program is looked up in
        the previous pass's table to reuse its value), so an idle program costs nothing more.
        """
        clocks = ClockStart()
        syscall, sys_bpf = bpf.raw_syscall, self._sys_bpf
        next_id, fd_by_id = self._next_id_command, self._fd_by_id_command
        attr, attr_pointer, attr_size = self._id_attr, self._id_attr_pointer, self._id_attr_size
        read_fd = self._read_fd
        previous = self._known
        known: dict[tuple[int, int], ProgramStats] = {}
        programs: list[ProgramStats] = []
        new: list[ProgramStats] = []
        moved: list[tuple[ProgramStats, ProgramStats]] = []
        current_id = 0
        attr.open_flags = 0  # never written by the kernel: set once a pass
        while True:
            attr.start_id = current_id
            if syscall(sys_bpf, next_id, attr_pointer, attr_size) < 0:
                error = ctypes.get_errno()
                if error == errno.ENOENT:
                    break  # past the last id
                raise bpf.error_for(Command.PROG_GET_NEXT_ID, error)
            current_id = attr.next_id
            attr.start_id = current_id  # prog_id, for BPF_PROG_GET_FD_BY_ID
            attr.next_id = 0  # must be zero there: the kernel checks unused attr bytes
            fd = syscall(sys_bpf, fd_by_id, attr_pointer, attr_size)
            if fd < 0:
                error = ctypes.get_errno()
                if error == errno.ENOENT:
                    continue  # unloaded since it was listed
                raise bpf.error_for(Command.PROG_GET_FD_BY_ID, error)
            try:
                key, stats, before = read_fd(fd)
            finally:
                os.close(fd)
            known[key] = stats
            programs.append(stats)
            if before is None:
                new.append(stats)
            elif before is not stats:
                moved.append((before, stats))
        # The walk reads and decodes each program in turn: the clocks go around all of it.
        read_clocks = clocks.end()
        # Every program of the previous pass met again: nothing vanished (no search needed).
        seen_again = len(programs) - len(new)
        vanished = (
            []
            if seen_again == len(previous)
            else [stats for key, stats in previous.items() if key not in known]
        )
        # Only what is loaded now is remembered, so churn cannot grow the table.
        self._known = known
        return Reading(programs, ProgramChanges(new=new, moved=moved, vanished=vanished), read_clocks)

    def read_one(self, program_id: int) -> ProgramStats | None:
        """One program's stats and facts, or None when that id no longer names a loaded program."""
        fd = bpf.fd_by_id(Command.PROG_GET_FD_BY_ID, program_id, self._id_attr)
        if fd is None:
            return None
        try:
            return self.read_fd(fd)
        finally:
            os.close(fd)

    def read_fd(self, fd: int) -> ProgramStats:
        """The stats and facts of the program behind an fd the caller owns."""
        program = self._read_fd(fd)[1]
        self._learn(program, self._describer.describe_fd(fd))
        self._forget_batch()
        return program

    def describe_all(self, programs: Sequence[ProgramStats]) -> int:
        """Fill in each program's full name and footprint (its facts), by id: what the counter
        read leaves for later. How many were still loaded to be described."""
        described = 0
        try:
            for program in programs:
                if not program.facts.described and self.describe(program):
                    described += 1
        finally:
            # Names, memlocks and footprints are cached for one batch of programs, never longer.
            self._forget_batch()
        return described

    def _forget_batch(self) -> None:
        self._describer.forget_batch()
        self._footprints.clear()

    def describe(self, program: ProgramStats) -> bool:
        """One program's full name and footprint into its facts; False when its id no longer
        names that program (it was unloaded, and the id perhaps given to another)."""
        description = self._describer.describe_id(program.id, program.load_time_ns)
        if description is None:
            return False
        self._learn(program, description)
        return True

    def _learn(self, program: ProgramStats, description: ProgramDescription) -> None:
        """A program's full name and footprint, as kstat's values, into its facts."""
        footprint = ProgramFootprint(
            jited_size_bytes=description.jited_size_bytes,
            xlated_size_bytes=description.xlated_size_bytes,
            verified_instructions=description.verified_instructions,
            memlock_bytes=description.memlock_bytes,
            maps=tuple(MapFootprint(map_id, memlock) for map_id, memlock in description.maps),
        )
        facts = program.facts
        facts.name, facts.footprint = description.name, self._footprints.setdefault(footprint, footprint)
        facts.described = True

    def _read_fd(self, fd: int) -> tuple[tuple[int, int], ProgramStats, ProgramStats | None]:
        """The program's stats, the key (id, load time) the reader remembers it by, and its
        reading in the previous pass (None for a program met for the first time)."""
        info_call = self._info_call
        info = info_call.cleared()
        if not info_call.call(fd):
            raise bpf.error_for(Command.OBJ_GET_INFO_BY_FD, ctypes.get_errno())
        written = info_call.attr.info_len
        if written < RUN_COUNTERS_END:
            raise UnsupportedKernel(
                "this kernel's bpf_prog_info has no run_time_ns/run_cnt (they arrived in Linux 5.1)"
            )
        # The counter catalogue's counters, by their kernel names, in its order.
        if written != self._counters_written:
            self._counters_written, self._read_counters = written, counters_read_by(written)
        read = self._read_counters(info)
        key = (info.id, info.load_time)
        before = self._known.get(key)
        if before is not None:
            if before.counters == read:  # a plain tuple: nothing is built for an idle program
                return key, before, before  # an idle program: the very same value as last time
            return (
                key,
                ProgramStats(
                    id=before.id,
                    type=before.type,
                    tag=before.tag,
                    load_time_ns=before.load_time_ns,
                    counters=Counters._make(read),
                    kernel_name=before.kernel_name,
                    facts=before.facts,
                ),
                before,
            )
        # Met for the first time: what the counter read gives. Its full name and footprint
        # take more syscalls; they are the details stage's (`describe`), later.
        return (
            key,
            ProgramStats(
                id=info.id,
                type=program_type_name(info.type),
                # Interned: a host's copies of one program share one string of each.
                tag=sys.intern(bytes(info.tag).hex()),
                load_time_ns=info.load_time,
                counters=Counters._make(read),
                kernel_name=sys.intern(from_host(info.name)),
            ),
            None,
        )
