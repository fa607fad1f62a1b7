"""The summary: the sink that turns a window's events into its report.

It is fed like every other sink, but its lane never skips: it sees the window's first snapshot
and every interval's delta, so every program's first and last sighting is there. Its work per
interval follows the programs that changed (the delta's `changes`), not every program loaded;
the report is built once, at the end, over every program the window saw.

Its report is exactly the sum of the intervals' deltas: a program's baseline is the one the
delta it first appeared in gave it, so a sink adding up intervals always arrives at the report.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import trio
from attrs import define, evolve, field

from kstat.core.distribution import IntervalValues
from kstat.core.events import Event, IntervalEnded, WindowStarted
from kstat.core.model import ProgramIdentity, Snapshot
from kstat.core.owner_cost import NO_USAGE, OwnersSection, ProcessSpan, owners_section
from kstat.core.report import (
    NOTHING_LEFT_OUT,
    AchievedInterval,
    Bounds,
    LeftOut,
    Report,
    WindowFacts,
    WindowSighting,
    build_report,
)
from kstat.core.sighting import Sighting
from kstat.core.sketch import QuantileSketch
from kstat.formats.report_json import SCHEMA_VERSION

# The values of a program of the window's first snapshot that has not done anything yet: the
# same for every such program (read only: one that does something gets values of its own).
_IDLE_FROM_START: Final = IntervalValues(0)


@define
class Summary:
    """Accumulates a window's events; `report()` gives the delta report so far.

    `retain_unloaded` bounds a long run's memory: beyond that many unloaded programs, the oldest
    are no longer listed, their runs kept in the totals (`programs_left_out` says how many).
    """

    generator: str = "kstat"
    started: WindowStarted | None = None
    last_snapshot: Snapshot | None = None
    snapshot_count: int = 0
    # Replaced, never changed, so that a copy of the summary (for a report mid-window) is a
    # shallow copy of a dict.
    _sightings: dict[ProgramIdentity, Sighting] = field(factory=dict)
    retain_unloaded: int | None = None
    # Unloaded programs still listed, oldest first (only kept when retention is bounded).
    _unloaded: deque[ProgramIdentity] = field(factory=deque)
    _left_out: LeftOut = NOTHING_LEFT_OUT
    # The intervals so far, and each program's and the total's per-interval values ranked.
    _intervals: int = 0
    # Only programs that did something have values of their own: one of the window's first
    # snapshot that never did is known as idle since the first interval (`_IDLE_FROM_START`).
    _distributions: dict[ProgramIdentity, IntervalValues] = field(factory=dict)
    _total_distribution: IntervalValues = field(factory=lambda: IntervalValues(0))
    # The gaps between consecutive reads, and those longer than twice the interval.
    _gaps: QuantileSketch = field(factory=QuantileSketch)
    _slipped: int = 0
    # The first gap of a window whose baseline was read at launch.
    _startup_ns: int | None = None
    # Other kstat instances' programs (set apart by the snapshots), as the window saw them.
    _kstat_programs: dict[ProgramIdentity, Sighting] = field(factory=dict)
    # Set once the event stream has ended (every event of the window is in).
    done: trio.Event = field(factory=trio.Event)
    # The owner processes the window read, by (pid, start time): their baseline and last
    # reading (kept when they exit: what they used is theirs), and the pids of the last read.
    _processes: dict[tuple[int, int], ProcessSpan] = field(factory=dict)
    _processes_now: frozenset[int] = frozenset()
    # Programs first met after the window's first snapshot (only those: a host's churn, not
    # its thousands of programs), whose intervals count from their first values.
    _met_later: set[ProgramIdentity] = field(factory=set)

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        """The sink side: read events until the scheduler closes the channel."""
        try:
            async for event in events:
                self.observe(event)
        finally:
            self.done.set()

    def observe(self, event: Event) -> None:
        if isinstance(event, WindowStarted):
            self._start(event)
        elif isinstance(event, IntervalEnded):
            self._interval(event)

    def _start(self, event: WindowStarted) -> None:
        snapshot = event.snapshot
        self.started = event
        self.last_snapshot = snapshot
        self.snapshot_count = 1
        start = snapshot.boottime_at_start_ns
        # A program loaded after the first pass began, and read by it, keeps that reading as its
        # baseline (consecutive windows never count its early runs twice); it still says it
        # was loaded during the window.
        self._sightings = {
            program.identity: Sighting(program, program.counters, loaded=program.load_time_ns > start)
            for program in snapshot.programs
        }
        self._intervals = 0
        self._distributions = {}
        self._met_later = set()
        self._total_distribution = IntervalValues(0)
        self._kstat_programs = {
            program.identity: Sighting(program, program.counters, loaded=program.load_time_ns > start)
            for program in snapshot.kstat_programs
        }
        self._processes = {}
        self._follow_processes(snapshot)

    def _interval(self, event: IntervalEnded) -> None:
        sightings = self._sightings
        delta = event.delta
        self._record_distributions(event)
        self._record_gap(event)
        window_start = self.started.snapshot.boottime_at_start_ns if self.started is not None else 0
        for change in delta.changes:
            program = change.last
            identity = program.identity
            seen = sightings.get(identity)
            if seen is None:
                # Its baseline is the one the interval gave it, so the intervals add up to this.
                sightings[identity] = evolve(
                    change, first_seen=True, loaded=program.load_time_ns > window_start
                )
                self._met_later.add(identity)
            else:
                sightings[identity] = seen.read_again(
                    program, gone_after_boottime_ns=change.gone_after_boottime_ns
                )
            if change.unloaded and self.retain_unloaded is not None:
                self._unloaded.append(identity)
        self._follow_kstat_programs(event.previous, event.current, window_start)
        self._follow_processes(event.current)
        self.last_snapshot = event.current
        self.snapshot_count += delta.skipped_snapshots + 1
        if self.retain_unloaded is not None:
            while len(self._unloaded) > self.retain_unloaded:
                self._leave_out(self._unloaded.popleft())

    def _follow_kstat_programs(self, previous: Snapshot, current: Snapshot, window_start: int) -> None:
        """Other kstats' programs, a few at most, followed whole each interval: their span is the
        churn rule's (from zero when loaded inside the window), up to their last sighting."""
        if not current.kstat_programs and not previous.kstat_programs:
            return
        followed = dict(self._kstat_programs)
        here = set()
        for program in current.kstat_programs:
            here.add(program.identity)
            seen = followed.get(program.identity)
            if seen is None:
                loaded = program.load_time_ns > window_start
                followed[program.identity] = (
                    Sighting.from_zero(program) if loaded else Sighting.from_now(program)
                )
            else:
                followed[program.identity] = seen.read_again(program)
        for identity, seen in followed.items():
            if identity not in here and not seen.unloaded:
                followed[identity] = seen.read_again(
                    seen.last, gone_after_boottime_ns=previous.boottime_at_start_ns
                )
        self._kstat_programs = followed

    def _follow_processes(self, snapshot: Snapshot) -> None:
        """The owners' readings of a snapshot: a process first read now has that reading as its
        baseline, or zero when it started after the window began (all it used is inside)."""
        if not snapshot.processes and not self._processes:
            return
        window_start = self.started.snapshot.boottime_at_start_ns if self.started is not None else 0
        followed = dict(self._processes)
        for usage in snapshot.processes:
            key = (usage.pid, usage.start_boottime_ns)
            seen = followed.get(key)
            if seen is None:
                started_inside = self.started is not None and usage.start_boottime_ns > window_start
                followed[key] = ProcessSpan(NO_USAGE if started_inside else usage.counters, usage.counters)
            else:
                followed[key] = ProcessSpan(seen.baseline, usage.counters)
        self._processes = followed
        self._processes_now = frozenset(usage.pid for usage in snapshot.processes)

    def process_spans(self) -> dict[int, ProcessSpan]:
        """What the window saw of each owner process, by pid (the latest process of a pid
        reused); `gone` for those the last read did not find."""
        found: dict[int, tuple[int, ProcessSpan]] = {}
        for (pid, start), seen in self._processes.items():
            if pid not in found or start > found[pid][0]:
                found[pid] = (start, seen)
        now = self._processes_now
        return {pid: seen if pid in now else evolve(seen, gone=True) for pid, (_, seen) in found.items()}

    def owners(self) -> OwnersSection | None:
        """The window's owners section: each owner's whole cost over the window."""
        if self.started is None or self.last_snapshot is None:
            return None
        # The sightings themselves (`owner_cost.Held`): no object made for each program.
        held = [seen for seen in self._sightings.values() if seen.last.facts.details.owners]
        return owners_section(held, self.process_spans(), self.bounds().elapsed_ns)

    def _record_gap(self, event: IntervalEnded) -> None:
        delta = event.delta
        if delta.skipped_snapshots or self.started is None:
            return  # merged intervals are no gaps (the summary itself never lags)
        if self.started.baseline_at_launch and self._startup_ns is None:
            self._startup_ns = delta.elapsed_ns  # kstat's start-up, not the clock's doing
            return
        self._gaps.add(float(delta.elapsed_ns))
        if delta.elapsed_ns > 2 * self.started.interval_ns:
            self._slipped += 1

    def achieved_interval(self) -> AchievedInterval | None:
        gaps = self._gaps
        if gaps.count == 0 and self._startup_ns is None:
            return None
        return AchievedInterval(
            p50_ns=round(gaps.quantile(0.5) or 0) if gaps.count else 0,
            p99_ns=round(gaps.quantile(0.99) or 0) if gaps.count else 0,
            max_ns=round(gaps.maximum) if gaps.count else 0,
            slipped=self._slipped,
            startup_ns=self._startup_ns,
        )

    def _record_distributions(self, event: IntervalEnded) -> None:
        """The interval's values into each active program's sketches and the total's; idle
        programs are counted as zeros later, by the number of intervals they were there for."""
        delta = event.delta
        before = self._intervals
        self._intervals += 1
        distributions = self._distributions
        end = delta.end_wall_time_ns
        active = delta.active
        # The delta's figures, not its lines: no line is made for the summary.
        for key, metrics in delta.figures.items():
            change = active[key]
            identity = change.last.identity
            values = distributions.get(identity)
            if values is None:
                # Idle so far: since the first interval if the first snapshot had it.
                from_start = identity in self._sightings and identity not in self._met_later
                values = distributions[identity] = IntervalValues(0 if from_start else before)
            values.record(metrics, end)
            if change.unloaded:
                values.finish(self._intervals)
        self._total_distribution.record(delta.totals, end)

    def _leave_out(self, identity: ProgramIdentity) -> None:
        self._distributions.pop(identity, None)
        self._met_later.discard(identity)
        self._left_out = self._left_out.adding(self._sightings.pop(identity))

    def copy(self) -> Summary:
        """An independent copy, to extend with an interval without touching this one."""
        return Summary(
            self.generator,
            self.started,
            self.last_snapshot,
            self.snapshot_count,
            dict(self._sightings),
            self.retain_unloaded,
            deque(self._unloaded),
            self._left_out,
            self._intervals,
            {identity: values.copy() for identity, values in self._distributions.items()},
            self._total_distribution.copy(),
            self._gaps.copy(),
            self._slipped,
            self._startup_ns,
            self._kstat_programs,
            processes=self._processes,
            processes_now=self._processes_now,
            met_later=set(self._met_later),
        )

    def sightings(self) -> list[WindowSighting]:
        if self.started is None or self.last_snapshot is None:
            return []
        distributions, intervals, later = self._distributions, self._intervals, self._met_later
        return [
            WindowSighting(
                seen,
                distributions.get(identity, None if identity in later else _IDLE_FROM_START),
                intervals,
            )
            for identity, seen in self._sightings.items()
        ]

    def bounds(self) -> Bounds:
        started, last = self.started, self.last_snapshot
        if started is None or last is None:
            raise ValueError("no snapshot was taken, so there is no window to report on")
        first = started.snapshot
        return Bounds(
            first.boottime_at_start_ns,
            last.boottime_at_start_ns,
            last.monotonic_ns - first.monotonic_ns,
            started.online_cpus,
        )

    def report(self, *, stopped_by: str | None, snapshot_method: str | None = None) -> Report:
        """The report so far; `snapshot_method`, where given, is what read the window in the
        end (the iterator, which took over from the syscalls' baseline)."""
        started, last = self.started, self.last_snapshot
        if started is None or last is None:
            raise ValueError("no snapshot was taken, so there is no window to report on")
        first = started.snapshot
        window = WindowFacts(
            start_wall_time_ns=first.wall_time_ns,
            end_wall_time_ns=last.wall_time_ns,
            elapsed_ns=last.monotonic_ns - first.monotonic_ns,
            requested_duration_ns=started.requested_duration_ns,
            interval_ns=started.interval_ns,
            snapshot_count=self.snapshot_count,
            online_cpus=started.online_cpus,
            kernel_release=started.kernel_release,
            stats_enabled_by=started.stats_enabled_by,
            snapshot_method=snapshot_method or started.snapshot_method,
            achieved_interval=self.achieved_interval(),
            stopped_by=stopped_by,
            program_filter=started.program_filter,
            node=started.node,
        )
        return build_report(
            window,
            self.bounds(),
            self.sightings(),
            schema_version=SCHEMA_VERSION,
            generator=self.generator,
            left_out=self._left_out,
            total_distribution=(
                self._total_distribution.metrics(self._intervals) if self._intervals else None
            ),
            total_peak_at_ns=self._total_distribution.peak_time_ns,
            kstat_programs=self._kstat_programs.values(),
            owners=self.owners(),
        )


def report_of_events(events: list[Event] | tuple[Event, ...], *, stopped_by: str | None = None) -> Report:
    """The report a window with these events has (for tests and tools replaying a stream)."""
    summary = Summary()
    for event in events:
        summary.observe(event)
    return summary.report(stopped_by=stopped_by)
