"""Every program's counters in one read: a BPF iterator over programs (`iter/bpf_prog`,
Linux 5.8+), built by kstat itself, with no compiler at run time.

The syscall path costs three or four syscalls a program (next id, fd by id, info, close). Here a
program of kstat's own, attached to the kernel's program iterator, runs once per loaded program
inside one `read()` and writes a fixed 64-byte record: id, type, tag, load time, the kernel's
name, and the run-time counters summed over every possible CPU, the values `bpf_prog_info`
would give.

How it is built on the running kernel:

- Every field's offset (in `bpf_prog`, `bpf_prog_aux`, `bpf_prog_stats`, the iterator's context,
  `bpf_array`) and the attach target's type id come from its BTF (`/sys/kernel/btf/vmlinux`).
- The per-CPU stats hang off `bpf_prog` (5.12+, with `misses`) or, before, off `bpf_prog_aux`
  (without): wherever this kernel's BTF says. The pointer is per-CPU, but a kernel whose BTF does
  not tag it as one lets no helper turn it into a CPU's address. The CPUs' per-CPU offsets are
  found without symbols by a small program run once (BPF_PROG_TEST_RUN): from 5.19, it reads a
  one-element per-CPU array map's per-CPU pointer and, by `bpf_map_lookup_percpu_elem`, its
  element's address on each CPU; before, a per-CPU variable of the kernel's own (a VAR of its
  BTF) and, by `bpf_per_cpu_ptr` (5.10), its address on each CPU; where the BTF lists no such
  variable (Debian's 5.10), the map's element as `bpf_map_lookup_elem` finds it on the CPU the
  program is run on, run once on each CPU (BPF_F_TEST_RUN_ON_CPU, 5.10): possible CPUs that are
  offline then cannot be reached, and the iterator is refused. The difference is that CPU's
  offset. The iterator then reads `stats + offset` for every possible CPU and sums.
- The offsets are constants of the running kernel, so they go into the iterator's code as
  immediates, one unrolled read per possible CPU.

Asked to keep them per CPU (`per_cpu=True`), the iterator writes, before each program's 64-byte
record, each possible CPU's run count and run time (16 bytes a CPU, in the order of the
possible CPUs) from the same reads it sums: the record's sums are those CPUs' totals exactly.

The iterator program is itself a loaded program: its own record is left out.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

from attrs import frozen

from kstat.abi.bpf import error_for, iterator_create_call
from kstat.abi.enums import Command, program_type_name
from kstat.core.counters import Counters
from kstat.core.model import PassClocks, ProgramChanges, ProgramStats, Reading
from kstat.errors import BpfError, PermissionDenied, UnsupportedKernel
from kstat.sources import program_iterator
from kstat.sources.clocks import ClockStart

# What is built and loaded (kstat.sources.program_iterator, light enough for the launch's
# baseline), under the names the rest of kstat has always imported from here.
from kstat.sources.program_iterator import (
    CPU_ENTRY,
    ITERATOR_NAME,
    PER_CPU_METHODS,
    PROBE_NAME,
    RECORD,
    KernelOffsets,
    LinkedIterator,
    ProgramIterator,
    forget_kernel_layout,
    iterator_program,
    kernel_layout,
    per_cpu_offsets,
    possible_cpus,
    probe_program,
    running_kernel_offsets,
    walk_once,
)
from kstat.sources.syscalls import ProgramReader
from kstat.sources.walks import WalkBuffers
from kstat.text import from_host

VMLINUX_BTF: Final = Path(program_iterator.VMLINUX_BTF)

__all__ = [
    "CPU_ENTRY",
    "ITERATOR_NAME",
    "PER_CPU_METHODS",
    "PROBE_NAME",
    "RECORD",
    "VMLINUX_BTF",
    "IteratorReader",
    "KernelOffsets",
    "LinkedIterator",
    "ProgramIterator",
    "WalkBuffers",
    "forget_kernel_layout",
    "iterator_program",
    "kernel_layout",
    "per_cpu_offsets",
    "possible_cpus",
    "probe_program",
    "running_kernel_offsets",
]


def walk_call(link_fd: int) -> tuple[int, int, bytes]:
    """The bpf(2) call that opens a walk of the iterator linked at `link_fd`, as numbers and
    bytes, for a process that makes it itself (`kstat.sources.walks.walk_opener`)."""
    return iterator_create_call(link_fd)


def walk_call_failure(code: int) -> BpfError | UnsupportedKernel | PermissionDenied:
    """That call's failure with errno `code`, in the ABI's words."""
    return error_for(Command.ITER_CREATE, code)


def read_walk(link_fd: int, buffers: WalkBuffers) -> tuple[bytes, PassClocks]:
    """One walk of the iterator linked at `link_fd` (`walk_once`), its clocks a value."""
    data, clocks = walk_once(link_fd, buffers)
    return data, clocks.end()


@frozen
class Walk:
    """One walk of the iterator as the counter clock read it: the records' bytes, not yet
    decoded, and the clocks around the read."""

    data: bytes
    clocks: PassClocks
    record_size: int
    # Where a record's id is: after the CPUs' entries, when the iterator keeps them.
    header: int

    def ids(self) -> list[int]:
        """Every record's program id, at C speed (kstat's own iterator's included): the id is
        the first u32 of a record's 64 bytes."""
        usable = len(self.data) - len(self.data) % self.record_size
        return list(memoryview(self.data)[:usable].cast("I")[self.header // 4 :: self.record_size // 4])


@frozen
class _Pass:
    """A pass as read: its bytes, each record's value but kstat's own iterator's, in the order
    the kernel walked them, and which record was that iterator's (None if none was)."""

    data: bytes
    stats: list[ProgramStats]
    own_at: int | None


# A record's program id, at an offset of a walk's bytes.
_ID: Final = struct.Struct("<I")


# Records compared as one block before one by one: most of a host's programs are idle. A
# block found equal makes the next one twice as long, up to the longest.
_BLOCK_RECORDS: Final = 64
_LONGEST_BLOCK: Final = 4096


class IteratorReader:
    """`ProgramReader.read_pass` by iterator: the same programs, counters and changes.

    A pass is one read. While the kernel walks the same programs in the same order (no program
    came or went), the records are compared with the previous pass's by blocks (64 records,
    twice as many after each equal one) and only a block that differs is looked into: an idle
    program's previous value is reused without being decoded, and a program whose counters
    moved is rebuilt from what is known of it. Where programs came or went, the two passes'
    ids are merged record by record there. A program met for the first
    time gets its details (full name, footprint) through the syscall path, once; one gone
    before they could be read keeps what its record says (its kernel name, no footprint).
    """

    def __init__(
        self,
        syscalls: ProgramReader | None = None,
        *,
        per_cpu: bool = False,
        iterator: ProgramIterator | None = None,
    ) -> None:
        # `iterator`: one loaded already (the launch's baseline read by it), now this reader's.
        self._iterator = iterator or ProgramIterator(per_cpu=per_cpu)
        # Each record's size, and where its 64 bytes start (after the CPUs' entries).
        self._size = self._iterator.record_size
        self._header = self._size - RECORD.size
        cpus = self._iterator.cpus
        self.per_cpu = bool(cpus)
        # Where each entry's CPU goes in a per-CPU vector (indexed by CPU number, 0 for CPUs
        # that are not possible), unless the possible CPUs are 0..n-1, in order.
        self._vector_size = max(cpus) + 1 if cpus else 0
        self._cpu_slots = None if cpus == list(range(len(cpus))) else cpus
        self._entries = struct.Struct(f"<{2 * len(cpus)}Q")
        self._syscalls = syscalls or ProgramReader()
        own = self._syscalls.read_fd(self._iterator.program_fd)
        self.own_id = own.id
        # Which helper found the per-CPU offsets, and whether the kernel counts recursion
        # misses (5.12+; before, the records say 0, as bpf_prog_info says nothing).
        self.per_cpu_offsets_by = self._iterator.per_cpu_offsets_by
        self.counts_recursion_misses = self._iterator.counts_recursion_misses
        # How the iterator reads what it writes (program_iterator.BY_*), as this kernel took it.
        self.reads_by = self._iterator.reads_by
        self._previous: _Pass | None = None
        # The counter clock's walks (`read_walk`), on its thread.
        self._walk_buffers = WalkBuffers()
        # The tags and names of the walk being decoded, by their bytes: a host's copies of one
        # program share one string of each. Not sys.intern: its table keeps an entry for every
        # name ever met (0.4 MB at 10,000 programs, most names unique), these go with the walk.
        self._tags: dict[bytes, str] = {}
        self._names: dict[bytes, str] = {}
        # Walks given out (`walk`, on the clock's thread) and decoded (`decode`, on the details
        # stage's), each counted by its one thread: once the reader is closed and the last is
        # decoded, no walk is compared with it, and its bytes go (at 10,000 programs, 1 MB of
        # the report's peak).
        self._walks_given = 0
        self._walks_decoded = 0
        self._closed = False

    def read_pass(self) -> tuple[list[ProgramStats], ProgramChanges]:
        reading = self.read()
        return list(reading.programs), reading.changes

    def read(self) -> Reading:
        """One walk: every program's counters, the changes, and the clocks around the walk
        alone (decoding its records comes after)."""
        clocks = ClockStart()
        data = self._iterator.read()
        return self.reading_of(data, clocks.end())

    def read_walk(self) -> Walk:
        """The walk's bytes and the clocks around it, and nothing else: the counter clock's
        part of a read (a system call or two and a copy, almost no Python), safe on one thread
        while `decode` runs on another."""
        return self.walk(*read_walk(self._iterator.link_fd, self._walk_buffers))

    def walk(self, data: bytes, clocks: PassClocks) -> Walk:
        """A walk of this reader's iterator read elsewhere (`read_walk` of its `link_fd`)."""
        self._walks_given += 1
        return Walk(data, clocks, self._size, self._header)

    def decode(self, walk: Walk) -> Reading:
        """A walk's programs and what changed since the walk decoded before it: every walk is
        decoded once, in the order they were taken, on one thread at a time."""
        reading = self.reading_of(walk.data, walk.clocks)
        self._walks_decoded += 1
        self._forget_last_walk_if_done()
        return reading

    def _forget_last_walk_if_done(self) -> None:
        if self._closed and self._walks_decoded == self._walks_given:
            self._previous = None

    @property
    def link_fd(self) -> int:
        return self._iterator.link_fd

    def reading_of(self, data: bytes, read_clocks: PassClocks) -> Reading:
        """The reading of a walk by this reader's iterator: `read`'s own, or the one the command
        line took at launch before this reader existed (`kstat._baseline`). Walks are decoded
        in the order they were read: each is compared with the one before."""
        data = data[: len(data) - len(data) % self._size]
        try:
            current, changes = self._compare(data, self._previous)
        finally:
            self._tags.clear()
            self._names.clear()
        self._previous = current
        # The pass's own list, not a copy: no one changes it (a reading's programs are a
        # Sequence, and a pass's list is never changed once made), so passes share it.
        return Reading(current.stats, changes, read_clocks)

    def _compare(self, data: bytes, previous: _Pass | None) -> tuple[_Pass, ProgramChanges]:
        """This walk's records against the previous walk's: both are in id order (the kernel
        walks its program idr), so one merge walk pairs them. Where a block of records has the
        same bytes as before at these places (idle programs, the usual case: the ids are in the
        bytes, so the same programs), its values are taken whole without being looked into,
        and the next block is twice as long (up to `_LONGEST_BLOCK`); in a block that differs,
        the first record that does is found by halving, those before it taken whole. Only
        records that differ are decoded. Programs that came or went break a block only where
        they are: churn costs what changed."""
        if previous is not None and len(data) == len(previous.data):
            in_place = self._compare_in_place(data, previous)
            if in_place is not None:
                return in_place
        size, header, own_id = self._size, self._header, self.own_id
        id_at = _ID.unpack_from
        stats: list[ProgramStats] = []
        new: list[ProgramStats] = []
        moved: list[tuple[ProgramStats, ProgramStats]] = []
        vanished: list[ProgramStats] = []
        if previous is None:
            old_data, old_stats, old_own = b"", [], None
        else:
            old_data, old_stats, old_own = previous.data, previous.stats, previous.own_at
        own_at = None
        i = j = 0
        old_count, count = len(old_data) // size, len(data) // size
        run = _BLOCK_RECORDS
        # Blocks compared in place: `same(old[a:b], at)` is whether this walk's bytes from `at`
        # are those (a memcmp). Slicing both walks' bytes to compare them would copy each block
        # twice first: at 10,000 programs 1.3 MB a pass, dearer than the compares themselves.
        old = memoryview(old_data)
        same = data.startswith
        while j < count:
            if i < old_count:
                span = min(run, old_count - i, count - j)
                differs = not same(old[i * size : (i + span) * size], j * size)
                if differs:
                    # Up to the first record that differs.
                    span, run = _equal_records(data, old, i, j, span=span, size=size), _BLOCK_RECORDS
                else:
                    run = min(2 * run, _LONGEST_BLOCK)
                if span:
                    # Equal records: the same programs, idle (kstat's iterator among them
                    # only while the stats are off: its own counters stood still).
                    first = i - (old_own is not None and i > old_own)
                    if old_own is not None and i <= old_own < i + span:
                        own_at = j + old_own - i
                        stats += old_stats[first : first + span - 1]
                    else:
                        stats += old_stats[first : first + span]
                    i += span
                    j += span
                if not differs:
                    continue
                # Here, the record that differs.
                old_id = id_at(old_data, i * size + header)[0]
            else:
                old_id = None
            new_id = id_at(data, j * size + header)[0]
            if old_id == new_id:
                if i == old_own:
                    own_at = j  # kstat's own iterator
                else:
                    before = old_stats[i - (old_own is not None and i > old_own)]
                    after = self._decode(data[j * size : (j + 1) * size], before)
                    if after.load_time_ns != before.load_time_ns:  # the id was given to another
                        vanished.append(before)
                        new.append(after)
                        stats.append(after)
                    elif after.counters != before.counters:
                        moved.append((before, after))
                        stats.append(after)
                    else:  # the record moved, the counters did not: idle
                        stats.append(before)
                i += 1
                j += 1
            elif old_id is not None and old_id < new_id:
                if i != old_own:
                    vanished.append(old_stats[i - (old_own is not None and i > old_own)])
                i += 1
            else:
                if new_id == own_id:
                    own_at = j
                else:
                    found = self._decode(data[j * size : (j + 1) * size], None)
                    new.append(found)
                    stats.append(found)
                j += 1
        if i < old_count:
            first = i - (old_own is not None and i > old_own)
            vanished += old_stats[first:]
        return _Pass(data, stats, own_at), ProgramChanges(new=new, moved=moved, vanished=vanished)

    def _compare_in_place(self, data: bytes, previous: _Pass) -> tuple[_Pass, ProgramChanges] | None:
        """`_compare` for a walk as long as the previous one with the same ids at the same
        places (no program came or went: the usual pass), so that each record's value is at
        the same place in the list too; None, as soon as a record says otherwise. The records
        that differ are found by the same blocks (equal bytes, equal ids); the rest keep their
        values where they are, in the previous pass's list itself where none moved (nothing
        copied), else in one copy with those put in. A list copied in pieces around every
        record that moved costs three touches of every idle program's value (a slice, the
        copy, the slice let go), each a cache miss at 10,000 programs: more than the compares."""
        size, header = self._size, self._header
        id_at = _ID.unpack_from
        old_stats, own = previous.stats, previous.own_at
        stats = old_stats
        new: list[ProgramStats] = []
        moved: list[tuple[ProgramStats, ProgramStats]] = []
        vanished: list[ProgramStats] = []
        old = memoryview(previous.data)
        same = data.startswith
        count = len(data) // size
        j, run = 0, _BLOCK_RECORDS
        while j < count:
            span = min(run, count - j)
            if same(old[j * size : (j + span) * size], j * size):
                j += span
                run = min(2 * run, _LONGEST_BLOCK)
                continue
            j += _equal_records(data, old, j, j, span=span, size=size)
            run = _BLOCK_RECORDS
            if id_at(data, j * size + header) != id_at(previous.data, j * size + header):
                return None  # a program came or went: `_compare` merges the two walks
            if j != own:  # kstat's own iterator's record differs at every pass: not a program's
                at = j - (own is not None and j > own)
                before = old_stats[at]
                after = self._decode(data[j * size : (j + 1) * size], before)
                if after.load_time_ns != before.load_time_ns:  # the id was given to another
                    vanished.append(before)
                    new.append(after)
                elif after.counters != before.counters:
                    moved.append((before, after))
                else:  # the record moved, the counters did not: idle
                    after = before
                if after is not before:
                    if stats is old_stats:
                        stats = list(old_stats)
                    stats[at] = after
            j += 1
        return _Pass(data, stats, own), ProgramChanges(new=new, moved=moved, vanished=vanished)

    def _decode(self, record: bytes, before: ProgramStats | None) -> ProgramStats:
        program_id, type_id, tag, load_time_ns, name, run_count, run_time_ns, misses = RECORD.unpack_from(
            record, self._header
        )
        # The counter catalogue's counters, by name (the rest None); recursion misses None
        # where the kernel does not count them (before 5.12: the record's zero is no count).
        counters = Counters(
            run_time_ns=run_time_ns,
            run_count=run_count,
            recursion_misses=misses if self.counts_recursion_misses else None,
        )
        if self.per_cpu:
            entries = self._entries.unpack_from(record)
            counts, times = entries[0::2], entries[1::2]
            slots = self._cpu_slots
            if slots is not None:
                counts, times = (
                    _placed(counts, slots, self._vector_size),
                    _placed(times, slots, self._vector_size),
                )
            counters = counters._replace(per_cpu_run_time_ns=times, per_cpu_run_count=counts)
        if before is not None and before.load_time_ns == load_time_ns:
            # The same program, its counters moved (built directly: attrs.evolve costs more).
            return ProgramStats(
                id=before.id,
                type=before.type,
                tag=before.tag,
                load_time_ns=load_time_ns,
                counters=counters,
                kernel_name=before.kernel_name,
                facts=before.facts,
            )
        # Met for the first time (or an id the kernel reused): what its record says. Its full
        # name and footprint are the details stage's, later (a program gone by then keeps this).
        tag_text = self._tags.get(tag)
        if tag_text is None:
            tag_text = self._tags[tag] = tag.hex()
        name_text = self._names.get(name)
        if name_text is None:
            name_text = self._names[name] = from_host(name.rstrip(b"\0"))
        return ProgramStats(
            id=program_id,
            type=program_type_name(type_id),
            tag=tag_text,
            load_time_ns=load_time_ns,
            counters=counters,
            kernel_name=name_text,
        )

    @property
    def own_program_ids(self) -> frozenset[int]:
        return frozenset({self.own_id})

    def close(self) -> None:
        # The iterator's program and link only: walks read before may still be waiting to be
        # decoded (the details stage decodes the window's last walk after the clock stopped and
        # the reader closed), each against the walk before it. The last walk goes once decoded.
        self._iterator.close()
        self._closed = True
        self._forget_last_walk_if_done()


def _equal_records(data: bytes, old: memoryview, i: int, j: int, *, span: int, size: int) -> int:
    """How many records of a block that differs are equal before the first that does: the
    block's first half, compared in place, says which half that one is in, and so on down to
    one record (the walks' records from `i` in the old walk and `j` in this one)."""
    low, high = 0, span
    while high - low > 1:
        middle = (low + high) // 2
        if data.startswith(old[(i + low) * size : (i + middle) * size], (j + low) * size):
            low = middle
        else:
            high = middle
    return low


def _placed(values: tuple[int, ...], cpus: list[int], size: int) -> tuple[int, ...]:
    """Values in possible-CPU order as a vector indexed by CPU number (0 where no CPU is)."""
    vector = [0] * size
    for cpu, value in zip(cpus, values, strict=True):
        vector[cpu] = value
    return tuple(vector)
