"""The sampler: one snapshot of every program per interval, and the interval's delta, both
built off the event loop."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from operator import attrgetter
from typing import Final, Protocol

from attrs import define, evolve, field, frozen

from kstat._logging import get_logger
from kstat.core.delta import IntervalDelta, interval_delta
from kstat.core.filters import ProgramFilter
from kstat.core.model import (
    PassClocks,
    ProgramChanges,
    ProgramFacts,
    ProgramIdentity,
    ProgramStats,
    Reading,
    Snapshot,
)
from kstat.core.owner_cost import ProcessUsage
from kstat.errors import KstatError
from kstat.sources.attribution import Attributor
from kstat.sources.host import online_cpu_count
from kstat.sources.iterator import IteratorReader, Walk
from kstat.sources.own_programs import OwnPrograms
from kstat.sources.process_tree import ProcessTree
from kstat.sources.process_usage import processes_usage
from kstat.sources.syscalls import ProgramReader

log = get_logger(__name__)


@frozen
class Sample:
    """A snapshot, and the delta from the source's previous one (None for its first)."""

    snapshot: Snapshot
    delta: IntervalDelta | None


class PassReader(Protocol):
    """One counter read of every program: their counters, what changed since the previous
    read, and the clocks around the read itself."""

    def read(self) -> Reading: ...

    def close(self) -> None: ...

    @property
    def own_program_ids(self) -> frozenset[int]:
        """kstat's own programs that the reader leaves out (the iterator's)."""
        ...


SNAPSHOT_METHODS = ("auto", "iterator", "syscalls")


def open_reader(method: str = "auto", *, per_cpu: bool = False) -> tuple[PassReader, str]:
    """The reader for `method`, and which method it is: by default kstat's BPF iterator (one
    read for every program), else, on a kernel without iterators or BTF (OSError), with BTF
    kstat cannot read (BtfFormatError), lacking a feature the iterator needs (FeatureMissing)
    or refusing its load, the syscalls (four a program), saying why in one log line.
    `iterator` insists. With `per_cpu`, the iterator keeps each program's run time and runs per
    CPU too; the syscalls have only sums (bpf_prog_info), which is said once."""
    if method == "syscalls":
        _no_per_cpu(per_cpu, "snapshots by syscalls")
        return ProgramReader(), "syscalls"
    try:
        reader = IteratorReader(per_cpu=True) if per_cpu else IteratorReader()
    except (OSError, KstatError) as error:
        # One line: a verifier's refusal comes with its whole log.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if method == "iterator":
            raise KstatError(f"cannot snapshot by BPF iterator on this kernel: {reason}") from None
        log.info("snapshots by syscalls: the BPF iterator is not available here", reason=reason)
        _no_per_cpu(per_cpu, "the BPF iterator is not available here")
        return ProgramReader(), "syscalls"
    log.info(
        "snapshots by BPF iterator; its own program is left out of the report",
        program_id=reader.own_id,
        per_cpu_offsets_by=reader.per_cpu_offsets_by,
        per_cpu_counters=per_cpu,
    )
    return reader, "iterator"


def _no_per_cpu(asked: bool, why: str) -> None:
    if asked:
        log.warning(
            "no per-CPU counters: the syscalls' bpf_prog_info has only sums over every CPU", reason=why
        )


def _without(reading: Reading, ignored: frozenset[int], present: Collection[int]) -> Reading:
    """The reading without the ignored programs; `present`: the ignored ids it lists."""
    changes = reading.changes
    return Reading(
        _dropped(reading.programs, present, lambda program: program.id in ignored),
        ProgramChanges(
            new=[program for program in changes.new if program.id not in ignored],
            moved=[(before, after) for before, after in changes.moved if after.id not in ignored],
            vanished=[program for program in changes.vanished if program.id not in ignored],
        ),
        reading.clocks,
    )


_ID: Final = attrgetter("id")


def _dropped(
    programs: Sequence[ProgramStats], ids: Collection[int], unwanted: Callable[[ProgramStats], bool]
) -> Sequence[ProgramStats]:
    """`programs` without the unwanted ones, `ids` being the ids of every unwanted program there
    (a few: kstat's own). A reader lists its programs in id order (the kernel's), so each is
    found by bisection, and idle programs cost no step of Python each; in a list out of order,
    the one that is not found where bisection looks sends the whole list through `unwanted`.
    With none to drop, `programs` itself (a reading's programs are changed by no one)."""
    if not ids:
        return programs
    found = set()
    for program_id in ids:
        index = bisect.bisect_left(programs, program_id, key=_ID)
        if index == len(programs) or programs[index].id != program_id or not unwanted(programs[index]):
            return [program for program in programs if not unwanted(program)]
        found.add(index)
    kept = list(programs)
    for index in sorted(found, reverse=True):
        del kept[index]
    return kept


class IgnoredPresent:
    """Which of the ignored programs a reader's readings list, kept up from each reading's
    changes: the whole reading is looked through only on a reader's first reading or when the
    ignored ids are not those of the last (at 10,000 programs, a look at each program, every
    interval, for ids that are almost never there). It must be given every reading of its
    reader from the first it sees, in the order they were read, each once: each counter
    clock's own `CounterRead`s are."""

    __slots__ = ("_ids", "_of")

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._of: frozenset[int] | None = None

    def in_reading(self, reading: Reading, ignored: frozenset[int], fresh: bool) -> set[int]:
        ids = self._ids
        if fresh or ignored != self._of:
            ids.clear()
            ids.update(program.id for program in reading.programs if program.id in ignored)
            self._of = ignored
            return ids
        changes = reading.changes
        # Gone first: a freed id the kernel gave again in the same pass is there again.
        ids.difference_update(program.id for program in changes.vanished)
        ids.update(program.id for program in changes.new if program.id in ignored)
        return ids


def _finished(reading: Reading, ignored: frozenset[int], fresh: bool, present: IgnoredPresent) -> Reading:
    if ignored:
        reading = _without(reading, ignored, present.in_reading(reading, ignored, fresh))
    return evolve(reading, fresh_reader=True) if fresh else reading


class CounterRead:
    """One counter read as the counter clock took it: its clocks (the read's own moment), and
    what becomes its reading. An iterator's walk is decoded only when `reading()` is first
    called, so that the clock's thread does a few statements of Python a read: every read's
    `reading()` is called once, in the order of the reads, on one thread at a time (the
    details stage's), as the reader's comparison with its previous walk requires."""

    __slots__ = ("_decoded", "_fresh", "_ignored", "_present", "_reader", "_taken", "clocks")

    def __init__(
        self,
        taken: Walk | Reading,
        reader: IteratorReader | None,
        ignored: frozenset[int],
        fresh: bool,
        present: IgnoredPresent,
    ) -> None:
        self._taken = taken
        self._reader = reader
        self._ignored = ignored
        self._fresh = fresh
        # The reader's: which ignored programs its readings list, from one to the next.
        self._present = present
        self._decoded: Reading | None = taken if isinstance(taken, Reading) else None
        self.clocks: PassClocks = taken.clocks

    @classmethod
    def of(cls, reading: Reading) -> CounterRead:
        """A reading taken already (the window's baseline at launch), as it is."""
        return cls(reading, None, frozenset(), fresh=False, present=IgnoredPresent())

    def program_count(self) -> int:
        """How many programs the read found (kstat's own left out), without decoding it."""
        if self._decoded is not None:
            return len(self._decoded.programs)
        assert isinstance(self._taken, Walk)
        ids = self._taken.ids()
        return len(ids) - len(self._ignored.intersection(ids))

    def reading(self) -> Reading:
        if self._decoded is None:
            assert isinstance(self._taken, Walk) and self._reader is not None
            decoded = self._reader.decode(self._taken)
            self._decoded = _finished(decoded, self._ignored, self._fresh, self._present)
            self._taken = self._decoded  # the walk's bytes go
        return self._decoded


class SnapshotSource(Protocol):
    """Where a window's samples come from: the kernel, or a fake in tests."""

    async def take(self) -> Sample: ...


@define
class CounterTaker:
    """The counter stage: one read of every program's counters, and nothing else.

    It runs on the window's counter clock (its own thread), on time: whatever is slower to learn
    about a program (names, footprint, owners, attachments) is the details stage's.
    """

    _reader: PassReader = field(factory=ProgramReader)
    # Programs no reading lists (kstat's own iterator, when another reader takes the pass).
    ignored_ids: frozenset[int] = frozenset()
    # A reader to take over at the next read (set from another thread: the iterator, loaded
    # while the syscalls read on), and the lock that hands it over.
    _successor: PassReader | None = None
    _handover: threading.Lock = field(factory=threading.Lock)
    # Which ignored programs the readings list, from one to the next.
    _present: IgnoredPresent = field(factory=IgnoredPresent)

    def read(self) -> Reading:
        return self.take().reading()

    def take(self) -> CounterRead:
        """The read itself, for the counter clock: by the iterator, the walk's bytes and time
        stamps alone, decoded when `CounterRead.reading()` is called (on the details stage's
        thread, in the order of the reads); by syscalls, the reading (its reads are its
        decoding)."""
        fresh = False
        with self._handover:
            successor, self._successor = self._successor, None
        if successor is not None:
            self._reader.close()
            self._reader, fresh = successor, True
        reader = self._reader
        ignored = self.ignored_ids | reader.own_program_ids
        if isinstance(reader, IteratorReader):
            return CounterRead(reader.read_walk(), reader, ignored, fresh, self._present)
        reading = _finished(reader.read(), ignored, fresh, self._present)
        return CounterRead(reading, None, ignored, fresh, self._present)

    @property
    def reader(self) -> PassReader:
        """The reader of the latest read (a successor handed over reads from the next one)."""
        return self._reader

    def hand_over(self, successor: PassReader) -> None:
        """`successor` reads from the next read on (its programs are left out from now on)."""
        with self._handover:
            self._successor = successor
            self.ignored_ids |= successor.own_program_ids

    def close(self) -> None:
        """Gives back what the readers hold (the iterator's program and link)."""
        with self._handover:
            successor, self._successor = self._successor, None
        if successor is not None:
            successor.close()
        self._reader.close()


@define
class Describer:
    """The details stage's lookups: for the programs a reading met first, their full names and
    footprint (by syscalls) and their owners and attachments, into their facts.

    Facts already learnt for a program (by another reader of the same window) are taken as they
    are: a fresh reader mid-window costs no lookups for programs the window knows.
    """

    _syscalls: ProgramReader = field(factory=ProgramReader)
    _attributor: Attributor = field(factory=Attributor)
    # What is known of every program loaded, by identity: kept to what is loaded now.
    known: dict[ProgramIdentity, ProgramFacts] = field(factory=dict)
    # The window's process tree when its filter names one: no other program is reported, so no
    # other is described (on a shared host, most of them). Its owners decide, so they come first.
    process_tree: ProcessTree | None = None

    def describe(self, reading: Reading) -> None:
        self.describe_many([reading])

    def describe_many(self, readings: Sequence[Reading]) -> None:
        """The facts of every program the readings met first, looked up in one batch: one owner
        walk and one attachment scan for all of them, however many readings piled up."""
        known = self.known
        fresh: list[ProgramStats] = []
        unattributed: list[ProgramStats] = []
        for reading in readings:
            if reading.fresh_reader:
                # A reader that took over: its programs are new objects, the same programs.
                for program in reading.programs:
                    facts = known.get(program.identity)
                    if facts is not None and facts is not program.facts:
                        program.facts.learn(facts)
            for program in reading.changes.new:
                facts = known.get(program.identity)
                if facts is not None and facts is not program.facts:
                    program.facts.learn(facts)
                if not program.facts.described:
                    fresh.append(program)
                if not program.facts.attributed:
                    unattributed.append(program)
        details = self._attributor.details_of_new(unattributed)
        for program in unattributed:
            facts = program.facts
            facts.details = details.get(program.identity, facts.details)
            facts.attributed = True
        tree = self.process_tree
        if fresh and tree is not None:
            fresh = [program for program, held in zip(fresh, tree.holds_all(fresh), strict=True) if held]
        if fresh:
            self._syscalls.describe_all(fresh)
        for reading in readings:
            for program in reading.changes.new:
                known[program.identity] = program.facts
            for program in reading.changes.vanished:
                known.pop(program.identity, None)


@define
class SnapshotBuilder:
    """The details stage's arithmetic: a described reading becomes the window's snapshot, its
    programs filtered, and the interval's delta from the snapshot before."""

    program_filter: ProgramFilter = field(factory=ProgramFilter)
    next_sequence: int = 0
    online_cpus: int = field(factory=online_cpu_count)
    # The tree the filter's `process_tree` names, followed by the window (None: no such criterion).
    process_tree: ProcessTree | None = None
    # Recognises other kstat instances' own programs, which the snapshot sets apart.
    own_programs: OwnPrograms | None = None
    _verdicts: dict[ProgramIdentity, bool] = field(factory=dict)
    # Other kstat instances' programs met so far, and their latest readings.
    _apart: dict[ProgramIdentity, ProgramStats] = field(factory=dict)

    _previous: Snapshot | None = None
    # How many programs of the previous snapshot have each name (for report keys), kept up to
    # date with what each reading changed rather than recounted.
    _name_counts: Counter[str] = field(factory=Counter)
    # CLOCK_BOOTTIME when the first read began: programs loaded after it count from zero.
    _window_start_boottime_ns: int | None = None
    # Read the CPU and memory of the processes holding the programs, each pass (/proc, here in
    # the details stage, never on the counter clock); their pids, worked out again only when
    # programs came or went.
    read_processes: bool = True
    _owner_pids: tuple[int, ...] = ()
    # How many of the snapshot's programs each owner pid holds (a program held twice by one
    # process counts twice).
    _programs_held: Counter[int] = field(factory=Counter)

    def __attrs_post_init__(self) -> None:
        root = self.program_filter.process_tree
        if root is not None and self.process_tree is None:
            # A single pass (`kstat list`): the tree as /proc shows it now.
            self.process_tree = ProcessTree(root, follow_with_perf=False)

    def build(self, reading: Reading) -> Sample:
        programs, changes = reading.programs, reading.changes
        kstat_programs: tuple[ProgramStats, ...] = ()
        if self.own_programs is not None:
            programs, changes, kstat_programs = self._set_apart(programs, changes, self.own_programs)
        if not self.program_filter.is_empty:
            programs, changes = self._selected(programs, changes)
        clocks = reading.clocks
        sequence = self.next_sequence
        self.next_sequence += 1
        snapshot = Snapshot(
            sequence=sequence,
            monotonic_ns=clocks.monotonic_ns,
            boottime_at_start_ns=clocks.boottime_start_ns,
            wall_time_ns=clocks.wall_time_ns,
            pass_duration_ns=clocks.duration_ns,
            programs=tuple(programs),
            kstat_programs=kstat_programs,
            processes=self._processes(programs, changes),
        )
        previous, self._previous = self._previous, snapshot
        names = self._name_counts
        if previous is None:
            self._window_start_boottime_ns = snapshot.boottime_at_start_ns
            names.update(program.name for program in programs)
            return Sample(snapshot, None)
        names.update(program.name for program in changes.new)
        delta = interval_delta(
            previous,
            snapshot,
            changes,
            online_cpus=self.online_cpus,
            name_counts=names,
            counted_vanished=True,
            window_start_boottime_ns=self._window_start_boottime_ns,
        )
        for program in changes.vanished:
            # Names that are gone are forgotten, so churn with ever-new names cannot grow this.
            names[program.name] -= 1
            if names[program.name] <= 0:
                del names[program.name]
        return Sample(snapshot, delta)

    def _processes(
        self, programs: Sequence[ProgramStats], changes: ProgramChanges
    ) -> tuple[ProcessUsage, ...]:
        if not self.read_processes:
            return ()
        held = self._programs_held
        if self._previous is None:
            held.clear()
            held.update(owner.pid for program in programs for owner in program.details.owners)
            self._owner_pids = tuple(sorted(held))
        elif changes.new or changes.vanished:
            # Kept up to date from what came and went: programs that did not cost nothing.
            held.subtract(owner.pid for program in changes.vanished for owner in program.details.owners)
            held.update(owner.pid for program in changes.new for owner in program.details.owners)
            for pid in [pid for pid, count in held.items() if count <= 0]:
                del held[pid]
            self._owner_pids = tuple(sorted(held))
        return processes_usage(self._owner_pids) if self._owner_pids else ()

    def _selected(
        self, programs: Sequence[ProgramStats], changes: ProgramChanges
    ) -> tuple[list[ProgramStats], ProgramChanges]:
        """The programs the filter selects, and their changes. What it looks at (names, type,
        owners, the process tree) is fixed per program, so each program is judged once, when
        first met."""
        verdicts = self._verdicts
        selects = self.program_filter.selects
        tree = self.process_tree
        if tree is not None:
            # Every pass, new programs or not: the kernel's records of forks must be taken in
            # before its ring fills up.
            tree.refresh()
        in_tree = tree.holds_all(changes.new) if tree is not None else [True] * len(changes.new)
        for program, held in zip(changes.new, in_tree, strict=True):
            verdicts[program.identity] = held and selects(program, program.details)
        if tree is not None:
            for program in changes.vanished:
                tree.forget(program.identity)
        selected = ProgramChanges(
            new=[program for program in changes.new if verdicts[program.identity]],
            moved=[(before, after) for before, after in changes.moved if verdicts[after.identity]],
            # Forgotten as they go, so churn cannot grow the verdicts.
            vanished=[program for program in changes.vanished if verdicts.pop(program.identity, False)],
        )
        return [program for program in programs if verdicts[program.identity]], selected

    def _set_apart(
        self, programs: Sequence[ProgramStats], changes: ProgramChanges, own: OwnPrograms
    ) -> tuple[Sequence[ProgramStats], ProgramChanges, tuple[ProgramStats, ...]]:
        """Other kstat instances' own programs out of the reading, and their readings now (a
        few at most). Judged once per program, when first met, by kernel name and tag."""
        apart = self._apart
        for program in changes.new:
            if own.recognises(program):
                apart[program.identity] = program
        if not apart:
            return programs, changes, ()
        for _, after in changes.moved:
            if after.identity in apart:
                apart[after.identity] = after
        gone = {program.identity for program in changes.vanished if program.identity in apart}
        for identity in gone:
            del apart[identity]
        ids = {identity.id for identity in apart}

        def kept(program: ProgramStats) -> bool:
            return program.id not in ids or program.identity not in apart

        kept_changes = ProgramChanges(
            new=[program for program in changes.new if kept(program)],
            moved=[(before, after) for before, after in changes.moved if kept(after)],
            vanished=[program for program in changes.vanished if program.identity not in gone],
        )
        # Every program set apart is in the reading (met new, not gone since).
        return (
            _dropped(programs, ids, lambda program: not kept(program)),
            kept_changes,
            tuple(apart.values()),
        )


@define
class SnapshotTaker:
    """The three stages in one call, on one thread: for a single pass (`kstat list`, a report
    so far) and for windows whose counter read may wait for the details (tests, benchmarks).

    A window proper runs the counter stage on its counter clock and the details stage behind it
    (kstat.engine.scheduler), so that the read is never late for the details.
    """

    program_filter: ProgramFilter = field(factory=ProgramFilter)
    next_sequence: int = 0
    online_cpus: int = field(factory=online_cpu_count)
    _reader: PassReader = field(factory=ProgramReader)
    _attributor: Attributor = field(factory=Attributor)
    # As SnapshotBuilder's: the window's tree (shared, with its verdicts), kstat's programs.
    process_tree: ProcessTree | None = None
    own_programs: OwnPrograms | None = field(factory=OwnPrograms)
    # Programs no snapshot lists (kstat's own iterator, when another reader takes the pass).
    ignored_ids: frozenset[int] = frozenset()
    # Facts the window already knows, by identity (a report so far looks nothing up again).
    known: dict[ProgramIdentity, ProgramFacts] = field(factory=dict)
    _counters: CounterTaker = field(init=False)
    _describer: Describer = field(init=False)
    _builder: SnapshotBuilder = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._counters = CounterTaker(self._reader, self.ignored_ids)
        self._describer = Describer(
            attributor=self._attributor, known=self.known, process_tree=self.process_tree
        )
        self._builder = SnapshotBuilder(
            self.program_filter,
            self.next_sequence,
            self.online_cpus,
            process_tree=self.process_tree,
            own_programs=self.own_programs,
        )

    def take_blocking(self) -> Sample:
        reading = self._counters.read()
        self._describer.describe(reading)
        return self._builder.build(reading)

    async def take(self) -> Sample:
        # trio loads here, not with the module: `kstat list` and the analyses never need it.
        import trio  # noqa: PLC0415

        # Not abandoned on cancel: a pass is short, and finishing it closes its fds.
        return await trio.to_thread.run_sync(self.take_blocking)

    def close(self) -> None:
        """Gives back what the reader holds (the iterator's program and link)."""
        self._counters.close()
