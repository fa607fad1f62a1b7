"""The summary: what the whole window saw of each program, turned into the report at the end.

The sampler hands it every snapshot directly (never through a channel that could drop one), so
the first and last snapshots, and every program's first and last sighting, are always there.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from attrs import define, evolve, field

from kstat.host import online_cpu_count
from kstat.model import ProgramDetails, ProgramIdentity, ProgramStats, Snapshot
from kstat.report import ProgramSighting, Report, WindowFacts, build_report


@define
class _Sighting:
    first: ProgramStats
    last: ProgramStats
    first_sequence: int
    last_sequence: int
    # Boot-time clock at the start of the pass that last saw the program.
    last_seen_boottime_ns: int
    details: ProgramDetails


@define
class Summary:
    """Accumulates snapshots of one window; `report()` gives the delta report so far."""

    first_snapshot: Snapshot | None = None
    last_snapshot: Snapshot | None = None
    snapshot_count: int = 0
    _sightings: dict[ProgramIdentity, _Sighting] = field(factory=dict)

    def observe(self, snapshot: Snapshot) -> None:
        if self.first_snapshot is None:
            self.first_snapshot = snapshot
        self.last_snapshot = snapshot
        self.snapshot_count += 1
        sightings = self._sightings
        sequence, boottime = snapshot.sequence, snapshot.boottime_at_start_ns
        for program in snapshot.programs:
            identity = program.identity
            seen = sightings.get(identity)
            if seen is None:
                details = snapshot.details_of(program)
                sightings[identity] = _Sighting(program, program, sequence, sequence, boottime, details)
            else:
                seen.last = program
                seen.last_sequence = sequence
                seen.last_seen_boottime_ns = boottime

    def copy(self) -> Summary:
        """An independent copy, to extend with a snapshot without touching this one."""
        return Summary(
            self.first_snapshot,
            self.last_snapshot,
            self.snapshot_count,
            {identity: evolve(seen) for identity, seen in self._sightings.items()},
        )

    def sightings(self) -> list[ProgramSighting]:
        first, last = self.first_snapshot, self.last_snapshot
        if first is None or last is None:
            return []
        window_start, window_end = first.boottime_at_start_ns, last.boottime_at_start_ns
        return [
            ProgramSighting(
                first=seen.first,
                last=seen.last,
                # load_time is CLOCK_BOOTTIME, the clock the snapshot also records.
                loaded_during_window=seen.first.load_time_ns > window_start,
                in_first_snapshot=seen.first_sequence == first.sequence,
                unloaded_during_window=seen.last_sequence != last.sequence,
                window_coverage_percent=_coverage_percent(
                    max(window_start, seen.first.load_time_ns),
                    seen.last_seen_boottime_ns,
                    window_start,
                    window_end,
                ),
                details=seen.details,
            )
            for seen in self._sightings.values()
        ]

    def report(
        self,
        *,
        requested_duration_ns: int | None,
        interval_ns: int,
        online_cpus: int,
        kernel_release: str,
        stats_enabled_by: str,
        stopped_by: str | None,
        program_filter: dict[str, Any] | None = None,
    ) -> Report:
        first, last = self.first_snapshot, self.last_snapshot
        if first is None or last is None:
            raise ValueError("no snapshot was taken, so there is no window to report on")
        window = WindowFacts(
            start_wall_time_ns=first.wall_time_ns,
            end_wall_time_ns=last.wall_time_ns,
            elapsed_ns=last.monotonic_ns - first.monotonic_ns,
            requested_duration_ns=requested_duration_ns,
            interval_ns=interval_ns,
            snapshot_count=self.snapshot_count,
            online_cpus=online_cpus,
            kernel_release=kernel_release,
            stats_enabled_by=stats_enabled_by,
            stopped_by=stopped_by,
            program_filter=program_filter,
        )
        return build_report(window, self.sightings())


def _coverage_percent(existed_from: int, existed_until: int, window_start: int, window_end: int) -> float:
    """The share of the window a program was loaded for, as far as the snapshots can tell."""
    if window_end <= window_start:
        return 100.0
    share = (existed_until - existed_from) / (window_end - window_start) * 100
    return min(100.0, max(0.0, share))


def interval_report(previous: Snapshot, current: Snapshot, online_cpus: int | None = None) -> Report:
    """The delta report between two snapshots of a window: what one interval added.

    The same rules as the window's report apply (a program loaded inside the interval counts
    from zero), so for every program the intervals' deltas add up to the window's. Sinks that
    stream intervals (NDJSON, StatsD, third parties) usually ask for the same pair, each from
    its own thread, so the last few results are shared.
    """
    cpus = online_cpus if online_cpus is not None else online_cpu_count()
    key = (id(previous), id(current), cpus)
    with _recent_intervals_lock:
        for recent_key, _held, report in _recent_intervals:
            # Each entry holds its snapshots, so their ids cannot have been reused meanwhile.
            if recent_key == key:
                return report
    summary = Summary()
    summary.observe(previous)
    summary.observe(current)
    report = summary.report(
        requested_duration_ns=None,
        interval_ns=current.monotonic_ns - previous.monotonic_ns,
        online_cpus=cpus,
        kernel_release="",
        stats_enabled_by="",
        stopped_by=None,
    )
    with _recent_intervals_lock:
        _recent_intervals.append((key, (previous, current), report))
    return report


_RECENT_INTERVALS_KEPT = 4
_recent_intervals: deque[tuple[tuple[int, int, int], tuple[Snapshot, Snapshot], Report]] = deque(
    maxlen=_RECENT_INTERVALS_KEPT
)
_recent_intervals_lock = threading.Lock()
