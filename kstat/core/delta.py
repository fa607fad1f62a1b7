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
from collections.abc import Iterable, Iterator, Mapping, Sequence

from attrs import Factory, frozen

from kstat.core.catalogue import Number
from kstat.core.changes import changes
from kstat.core.counters import ZERO, summed
from kstat.core.model import ProgramChanges, ProgramIdentity, ProgramStats, Snapshot
from kstat.core.report import (
    Bounds,
    LineRow,
    ProgramReport,
    disambiguated,
    line_metrics,
    line_row,
    program_report,
    program_row,
    report_key,
    total_values,
)
from kstat.core.sighting import Sighting

# Kept for sinks written against kstat 0.2: an interval's change is a Sighting.
ProgramChange = Sighting


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
    # Every program that was new, moved or went away in the interval (each one did something:
    # `Sighting.active`), in id order.
    changes: tuple[Sighting, ...]
    # Programs seen in the interval: those loaded at its end, plus those that went away in it.
    program_count: int
    # The same programs by key, and their lines: the report's fields over this interval alone.
    # Idle programs have zeros and no line.
    active: Mapping[str, Sighting]
    lines: Mapping[str, ProgramReport]
    # Every metric over every program in the interval (idle ones add zero).
    totals: Mapping[str, Number]
    # Each line's metrics by key: the very mapping that is its `metrics`, worked out once when
    # the delta is made, for sinks that need a busy program's figures but not its whole line
    # (the summary, NDJSON, StatsD). A delta made by hand has them from its lines.
    figures: Mapping[str, Mapping[str, Number]] = Factory(
        lambda delta: {key: line.metrics for key, line in delta.lines.items()}, takes_self=True
    )

    @property
    def idle_programs(self) -> int:
        return self.program_count - len(self.lines)

    def line_row(self, key: str) -> LineRow:
        """A line's fields (`kstat.core.report.line_row`), from the interval's sighting and
        figures where the delta made them: no `ProgramReport` made for a sink that encodes it."""
        lines = self.lines
        if isinstance(lines, _DeltaLines):
            return lines.row(key)
        return line_row(lines[key])

    @property
    def skipped_snapshots(self) -> int:
        """Snapshots merged into this delta: none for an interval between two consecutive ones."""
        return self.sequence - self.previous_sequence - 1


def changes_between(previous: Snapshot, current: Snapshot) -> ProgramChanges:
    """The general path, for two snapshots that did not come from one reader's passes in a row:
    the specification itself (`kstat.core.changes`). The sampler's own intervals use the
    reader's bookkeeping instead, which a test holds to the same answer."""
    return changes(previous.programs, current.programs)


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

    # New: loaded after the previous pass began, all its runs are in this interval; loaded
    # inside the window but missed until now, its runs are in the window and count here;
    # otherwise it was there before the window, unseen, and starts counting from here.
    found = [
        Sighting(
            program,
            ZERO if program.load_time_ns > window_start else program.counters,
            loaded=program.load_time_ns > start,
        )
        for program in changes.new
    ]
    found += [Sighting(program, earlier.counters, first_seen=False) for earlier, program in changes.moved]
    # A program gone by the end was last seen by the pass at the interval's start.
    found += [
        Sighting(
            program,
            program.counters,
            first_seen=False,
            gone_after_boottime_ns=start,
        )
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
        changes=[(key_of(sighting.last), sighting) for sighting in found],
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
    merged: dict[ProgramIdentity, tuple[str, Sighting]] = {}
    gone_before_last = 0
    for delta in deltas:
        for key, sighting in delta.active.items():
            identity = sighting.last.identity
            earlier = merged.get(identity)
            merged[identity] = (key, sighting if earlier is None else sighting.merged_after(earlier[1]))
            if sighting.unloaded and delta is not last:
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
    changes: Iterable[tuple[str, Sighting]],
    program_count: int,
) -> IntervalDelta:
    ordered = sorted(
        ((key, sighting) for key, sighting in changes if sighting.active),
        key=lambda pair: (pair[1].last.id, pair[1].last.load_time_ns),
    )
    keys = disambiguated([key for key, _ in ordered], [sighting.last.load_time_ns for _, sighting in ordered])
    by_key = dict(
        sorted(zip(keys, (sighting for _, sighting in ordered), strict=True), key=lambda pair: pair[0])
    )
    bounds = Bounds(start_boottime_ns, end_boottime_ns, elapsed_ns, online_cpus)
    figures = {key: line_metrics(sighting, bounds) for key, sighting in by_key.items()}
    return IntervalDelta(
        previous_sequence=previous_sequence,
        sequence=sequence,
        start_wall_time_ns=start_wall_time_ns,
        end_wall_time_ns=end_wall_time_ns,
        start_boottime_ns=start_boottime_ns,
        end_boottime_ns=end_boottime_ns,
        elapsed_ns=elapsed_ns,
        online_cpus=online_cpus,
        changes=tuple(sighting for _, sighting in ordered),
        program_count=program_count,
        active=by_key,
        lines=_DeltaLines(by_key, figures, bounds),
        totals=total_values(summed(sighting.grown for sighting in by_key.values()), elapsed_ns, online_cpus),
        figures=figures,
    )


class _DeltaLines(Mapping[str, ProgramReport]):
    """An interval's lines by key, each made when first read (and kept): the summary, NDJSON
    and StatsD go by the delta's figures and sightings, so in a window with only those sinks
    no busy program's line is ever made (at 200 busy programs, a fifth of a steady interval's
    work was making lines nobody read)."""

    __slots__ = ("_bounds", "_by_key", "_figures", "_made")

    def __init__(
        self, by_key: Mapping[str, Sighting], figures: Mapping[str, Mapping[str, Number]], bounds: Bounds
    ) -> None:
        self._by_key, self._figures, self._bounds = by_key, figures, bounds
        self._made: dict[str, ProgramReport] = {}

    def row(self, key: str) -> LineRow:
        return program_row(self._by_key[key], self._bounds, self._figures[key], None)

    def __getitem__(self, key: str) -> ProgramReport:
        line = self._made.get(key)
        if line is None:
            # Sinks on other threads may make one line twice: equal lines, the same metrics.
            line = self._made[key] = program_report(
                self._by_key[key], self._bounds, metrics=self._figures[key]
            )
        return line

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __repr__(self) -> str:
        return f"<{len(self)} interval lines>"
