"""The sampler: one snapshot of every program per interval, and the interval's delta, both
built off the event loop."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

from attrs import define, field, frozen

from kstat._logging import get_logger
from kstat.core.delta import IntervalDelta, interval_delta
from kstat.core.filters import ProgramFilter
from kstat.core.model import ProgramChanges, ProgramDetails, ProgramIdentity, ProgramStats, Snapshot
from kstat.errors import KstatError
from kstat.sources.attribution import Attributor
from kstat.sources.host import online_cpu_count
from kstat.sources.iterator import IteratorReader
from kstat.sources.syscalls import ProgramReader

log = get_logger(__name__)


@frozen
class Sample:
    """A snapshot, and the delta from the source's previous one (None for its first)."""

    snapshot: Snapshot
    delta: IntervalDelta | None


class PassReader(Protocol):
    """One pass over every program: its stats, and what changed since the previous pass."""

    def read_pass(self) -> tuple[list[ProgramStats], ProgramChanges]: ...

    def close(self) -> None: ...

    @property
    def own_program_ids(self) -> frozenset[int]:
        """kstat's own programs that the reader leaves out (the iterator's)."""
        ...


SNAPSHOT_METHODS = ("auto", "iterator", "syscalls")


def open_reader(method: str = "auto") -> tuple[PassReader, str]:
    """The reader for `method`, and which method it is: by default kstat's BPF iterator (one
    read for every program), else, on a kernel without iterators or BTF or where the load is
    refused, the syscalls (four a program), saying why in one log line. `iterator` insists."""
    if method == "syscalls":
        return ProgramReader(), "syscalls"
    try:
        reader = IteratorReader()
    except (KeyError, OSError, KstatError) as error:
        # One line: a verifier's refusal comes with its whole log.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if method == "iterator":
            raise KstatError(f"cannot snapshot by BPF iterator on this kernel: {reason}") from None
        log.info("snapshots by syscalls: the BPF iterator is not available here", reason=reason)
        return ProgramReader(), "syscalls"
    log.info("snapshots by BPF iterator; its own program is left out of the report", program_id=reader.own_id)
    return reader, "iterator"


def _without(
    programs: Sequence[ProgramStats], changes: ProgramChanges, ignored: frozenset[int]
) -> tuple[list[ProgramStats], ProgramChanges]:
    return [program for program in programs if program.id not in ignored], ProgramChanges(
        new=[program for program in changes.new if program.id not in ignored],
        moved=[(before, after) for before, after in changes.moved if after.id not in ignored],
        vanished=[program for program in changes.vanished if program.id not in ignored],
    )


class SnapshotSource(Protocol):
    """Where a window's samples come from: the kernel, or a fake in tests."""

    async def take(self) -> Sample: ...


def _midpoint(before: int, after: int) -> int:
    return before + (after - before) // 2


@define
class SnapshotTaker:
    """Reads all programs with one reader; each pass, and its delta, runs on a worker thread.

    A pass costs a few syscalls per program, so thousands of programs would hold the event loop
    for milliseconds; the thread keeps the sinks and signal handling responsive meanwhile.
    """

    program_filter: ProgramFilter = field(factory=ProgramFilter)
    next_sequence: int = 0
    online_cpus: int = field(factory=online_cpu_count)
    _reader: PassReader = field(factory=ProgramReader)
    _attributor: Attributor = field(factory=Attributor)
    _verdicts: dict[ProgramIdentity, bool] = field(factory=dict)
    _previous: Snapshot | None = None
    # How many programs of the previous snapshot have each name (for report keys), kept up to
    # date with what each pass changed rather than recounted.
    _name_counts: Counter[str] = field(factory=Counter)
    # CLOCK_BOOTTIME when the first pass began: programs loaded after it count from zero.
    _window_start_boottime_ns: int | None = None
    # Programs no snapshot lists (kstat's own iterator, when another reader takes the pass).
    ignored_ids: frozenset[int] = frozenset()

    def take_blocking(self) -> Sample:
        monotonic_before = time.monotonic_ns()
        boottime_before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall_before = time.time_ns()
        programs, changes = self._reader.read_pass()
        if self.ignored_ids:
            programs, changes = _without(programs, changes, self.ignored_ids)
        monotonic_after = time.monotonic_ns()
        wall_after = time.time_ns()
        # After the clocks: owners and attachments are not part of the counters' moment.
        details = self._attributor.details_for(programs, changes)
        if not self.program_filter.is_empty:
            programs, changes = self._selected(programs, changes, details)
            details = {program.identity: details[program.identity] for program in programs}
        sequence = self.next_sequence
        self.next_sequence += 1
        snapshot = Snapshot(
            sequence=sequence,
            monotonic_ns=_midpoint(monotonic_before, monotonic_after),
            boottime_at_start_ns=boottime_before,
            wall_time_ns=_midpoint(wall_before, wall_after),
            pass_duration_ns=monotonic_after - monotonic_before,
            programs=tuple(programs),
            details=details,
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

    def _selected(
        self,
        programs: Sequence[ProgramStats],
        changes: ProgramChanges,
        details: Mapping[ProgramIdentity, ProgramDetails],
    ) -> tuple[list[ProgramStats], ProgramChanges]:
        """The programs the filter selects, and their changes. What it looks at (names, type,
        owners) is fixed per program, so each program is judged once, when first met."""
        verdicts = self._verdicts
        selects = self.program_filter.selects
        for program in changes.new:
            verdicts[program.identity] = selects(program, details[program.identity])
        selected = ProgramChanges(
            new=[program for program in changes.new if verdicts[program.identity]],
            moved=[(before, after) for before, after in changes.moved if verdicts[after.identity]],
            # Forgotten as they go, so churn cannot grow the verdicts.
            vanished=[program for program in changes.vanished if verdicts.pop(program.identity, False)],
        )
        return [program for program in programs if verdicts[program.identity]], selected

    async def take(self) -> Sample:
        # trio loads here, not with the module: `kstat list` and the analyses never need it.
        import trio  # noqa: PLC0415

        # Not abandoned on cancel: a pass is short, and finishing it closes its fds.
        return await trio.to_thread.run_sync(self.take_blocking)

    def close(self) -> None:
        """Gives back what the reader holds (the iterator's program and link)."""
        self._reader.close()
