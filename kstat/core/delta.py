"""One interval's delta, computed once: which programs ran, appeared or went away, and by how much.

The sampler builds it on its worker thread right after each pass, and every sink receives the
same value in an `IntervalEnded` event; no sink pairs snapshots or calls report math itself.

The delta is incremental. The reader says which programs are new since its previous pass, which
moved (their counters changed) and which vanished; every other program is idle, and an idle
program costs nothing here beyond being counted. For a sink that lagged, consecutive deltas
merge into one that spans them all, so its deltas still add up to the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from attrs import evolve, frozen

from kstat.core.catalogue import Number
from kstat.core.model import ProgramChanges, ProgramDetails, ProgramIdentity, ProgramStats, Snapshot
from kstat.core.report import (
    ProgramReport,
    ProgramSighting,
    coverage_percent,
    disambiguated,
    program_report,
    report_key,
    total_values,
)


@frozen
class ProgramChange:
    """One program that ran, appeared or went away during an interval."""

    # Its last reading in the interval (for a program that went away, its last sighting).
    program: ProgramStats
    # Its key in this interval's lines (the report's keying rule).
    key: str
    baseline_run_time_ns: int
    baseline_run_count: int
    baseline_recursion_misses: int
    # First seen in this interval.
    first_seen: bool
    # Loaded after the interval began, so every one of its runs is in it (baseline zero).
    loaded: bool
    # Gone by the interval's end.
    unloaded: bool
    # CLOCK_BOOTTIME at the start of the pass that last saw it.
    last_seen_boottime_ns: int
    details: ProgramDetails

    @property
    def run_time_ns(self) -> int:
        return self.program.run_time_ns - self.baseline_run_time_ns

    @property
    def run_count(self) -> int:
        return self.program.run_count - self.baseline_run_count

    @property
    def recursion_misses(self) -> int:
        return self.program.recursion_misses - self.baseline_recursion_misses

    @property
    def active(self) -> bool:
        """Did anything happen to it: runs, runtime, misses, a load, an unload, or its first
        sighting (when its footprint is told)."""
        return bool(
            self.first_seen
            or self.loaded
            or self.unloaded
            or self.run_time_ns
            or self.run_count
            or self.recursion_misses
        )


@frozen
class IntervalDelta:
    """What one interval (or several merged, for a sink that lagged) added to the window."""

    previous_sequence: int
    sequence: int
    start_wall_time_ns: int
    end_wall_time_ns: int
    # CLOCK_BOOTTIME at the start of the interval's first and last passes.
    start_boottime_ns: int
    end_boottime_ns: int
    elapsed_ns: int
    online_cpus: int
    # Every program that was new, moved or went away in the interval.
    changes: tuple[ProgramChange, ...]
    # Programs seen in the interval: those loaded at its end, plus those that went away in it.
    program_count: int
    # The programs that did something (`ProgramChange.active`), by key, and their lines: the
    # report's fields over this interval alone. Idle programs have zeros and no line.
    active: Mapping[str, ProgramChange]
    lines: Mapping[str, ProgramReport]
    # Every metric over every program in the interval (idle ones add zero).
    totals: Mapping[str, Number]

    @property
    def idle_programs(self) -> int:
        return self.program_count - len(self.lines)

    @property
    def skipped_snapshots(self) -> int:
        """Snapshots merged into this delta: none for an interval between two consecutive ones."""
        return self.sequence - self.previous_sequence - 1


def changes_between(previous: Snapshot, current: Snapshot) -> ProgramChanges:
    """The general path, for two snapshots that did not come from one reader's passes in a row.

    O(programs): each is looked up in the other snapshot. The sampler's own intervals use the
    reader's bookkeeping instead (see `ProgramReader.read_all`).
    """
    before: dict[ProgramIdentity, ProgramStats] = {program.identity: program for program in previous.programs}
    new: list[ProgramStats] = []
    moved: list[tuple[ProgramStats, ProgramStats]] = []
    for program in current.programs:
        earlier = before.pop(program.identity, None)
        if earlier is None:
            new.append(program)
        elif earlier is not program and (
            earlier.run_time_ns != program.run_time_ns
            or earlier.run_count != program.run_count
            or earlier.recursion_misses != program.recursion_misses
        ):
            moved.append((earlier, program))
    return ProgramChanges(new=new, moved=moved, vanished=list(before.values()))


def interval_delta(
    previous: Snapshot,
    current: Snapshot,
    changes: ProgramChanges,
    *,
    online_cpus: int,
    name_counts: Mapping[str, int] | None = None,
    counted_vanished: bool = False,
    window_start_boottime_ns: int | None = None,
) -> IntervalDelta:
    """The delta from `previous` to `current`, given what changed between them.

    A program met for the first time that the kernel says was loaded after the window began
    (`window_start_boottime_ns`, CLOCK_BOOTTIME; by default the interval's start) has had every
    run inside the window, so all its runs count here, even if a pass missed it earlier.

    `name_counts` counts the names of the programs in `current` (and, with `counted_vanished`,
    of those that vanished too): the sampler keeps it up to date incrementally. Without it, it
    is counted here, which costs a pass over the programs.
    """
    if name_counts is None:
        name_counts = Counter(program.name for program in current.programs)
    vanished_names = Counter() if counted_vanished else Counter(program.name for program in changes.vanished)

    def key_of(program: ProgramStats) -> str:
        count = name_counts.get(program.name, 0) + vanished_names[program.name]
        return report_key(program.name, program.id, count)

    start = previous.boottime_at_start_ns
    end = current.boottime_at_start_ns
    window_start = start if window_start_boottime_ns is None else window_start_boottime_ns

    def change(
        program: ProgramStats,
        baseline: ProgramStats | None,
        *,
        first_seen: bool,
        loaded: bool,
        unloaded: bool,
    ) -> ProgramChange:
        """`baseline` None: counted from zero."""
        return ProgramChange(
            program=program,
            key=key_of(program),
            baseline_run_time_ns=0 if baseline is None else baseline.run_time_ns,
            baseline_run_count=0 if baseline is None else baseline.run_count,
            baseline_recursion_misses=0 if baseline is None else baseline.recursion_misses,
            first_seen=first_seen,
            loaded=loaded,
            unloaded=unloaded,
            # A program gone by the end was last seen by the pass at the interval's start.
            last_seen_boottime_ns=start if unloaded else end,
            details=(previous if unloaded else current).details_of(program),
        )

    # New: loaded after the previous pass began, all its runs are in this interval; loaded
    # inside the window but missed until now, its runs are in the window and count here;
    # otherwise it was there before the window, unseen, and starts counting from here.
    found = [
        change(
            program,
            None if program.load_time_ns > window_start else program,
            first_seen=True,
            loaded=program.load_time_ns > start,
            unloaded=False,
        )
        for program in changes.new
    ]
    found += [
        change(program, earlier, first_seen=False, loaded=False, unloaded=False)
        for earlier, program in changes.moved
    ]
    found += [
        change(program, program, first_seen=False, loaded=False, unloaded=True)
        for program in changes.vanished
    ]
    return _delta(
        previous_sequence=previous.sequence,
        sequence=current.sequence,
        start_wall_time_ns=previous.wall_time_ns,
        end_wall_time_ns=current.wall_time_ns,
        start_boottime_ns=start,
        end_boottime_ns=end,
        elapsed_ns=current.monotonic_ns - previous.monotonic_ns,
        online_cpus=online_cpus,
        changes=found,
        program_count=len(current.programs) + len(changes.vanished),
    )


def merge_deltas(deltas: Sequence[IntervalDelta]) -> IntervalDelta:
    """One delta spanning consecutive ones (what a sink that fell behind gets instead).

    A program's baseline comes from the first delta it appears in and its reading from the
    last, so nothing is counted twice or lost, programs that went away in between included.
    """
    if len(deltas) == 1:
        return deltas[0]
    first, last = deltas[0], deltas[-1]
    merged: dict[ProgramIdentity, ProgramChange] = {}
    gone_before_last = 0
    for delta in deltas:
        for change in delta.changes:
            identity = change.program.identity
            earlier = merged.get(identity)
            merged[identity] = (
                change
                if earlier is None
                else evolve(
                    change,
                    baseline_run_time_ns=earlier.baseline_run_time_ns,
                    baseline_run_count=earlier.baseline_run_count,
                    baseline_recursion_misses=earlier.baseline_recursion_misses,
                    first_seen=earlier.first_seen,
                    loaded=earlier.loaded or change.loaded,
                )
            )
            if change.unloaded and delta is not last:
                gone_before_last += 1
    return _delta(
        previous_sequence=first.previous_sequence,
        sequence=last.sequence,
        start_wall_time_ns=first.start_wall_time_ns,
        end_wall_time_ns=last.end_wall_time_ns,
        start_boottime_ns=first.start_boottime_ns,
        end_boottime_ns=last.end_boottime_ns,
        elapsed_ns=sum(delta.elapsed_ns for delta in deltas),
        online_cpus=last.online_cpus,
        changes=merged.values(),
        # The last delta counts what was loaded at its end and what went in it; the programs
        # that went away before it are added.
        program_count=last.program_count + gone_before_last,
    )


def _delta(
    *,
    previous_sequence: int,
    sequence: int,
    start_wall_time_ns: int,
    end_wall_time_ns: int,
    start_boottime_ns: int,
    end_boottime_ns: int,
    elapsed_ns: int,
    online_cpus: int,
    changes: Iterable[ProgramChange],
    program_count: int,
) -> IntervalDelta:
    ordered = tuple(sorted(changes, key=lambda change: (change.program.id, change.program.load_time_ns)))
    active = [change for change in ordered if change.active]
    keys = disambiguated(
        [change.key for change in active], [change.program.load_time_ns for change in active]
    )
    by_key = dict(sorted(zip(keys, active, strict=True), key=lambda pair: pair[0]))
    lines = {
        key: program_report(_sighting(change, start_boottime_ns, end_boottime_ns), elapsed_ns, online_cpus)
        for key, change in by_key.items()
    }
    return IntervalDelta(
        previous_sequence=previous_sequence,
        sequence=sequence,
        start_wall_time_ns=start_wall_time_ns,
        end_wall_time_ns=end_wall_time_ns,
        start_boottime_ns=start_boottime_ns,
        end_boottime_ns=end_boottime_ns,
        elapsed_ns=elapsed_ns,
        online_cpus=online_cpus,
        changes=ordered,
        program_count=program_count,
        active=by_key,
        lines=lines,
        totals=total_values(lines.values(), elapsed_ns, online_cpus),
    )


def _sighting(change: ProgramChange, start_boottime_ns: int, end_boottime_ns: int) -> ProgramSighting:
    return ProgramSighting(
        last=change.program,
        baseline_run_time_ns=change.baseline_run_time_ns,
        baseline_run_count=change.baseline_run_count,
        baseline_recursion_misses=change.baseline_recursion_misses,
        loaded_during_window=change.loaded,
        unloaded_during_window=change.unloaded,
        window_coverage_percent=coverage_percent(
            max(start_boottime_ns, change.program.load_time_ns),
            change.last_seen_boottime_ns,
            start_boottime_ns,
            end_boottime_ns,
        ),
        details=change.details,
        # A program's footprint is said once, in the interval it was first seen in.
        with_footprint=change.first_seen,
    )
