"""The delta report: pure functions over sightings of programs in a window. No I/O, no clocks.

Formulas (also in the README):
    runtime_ns              = run_time_ns(last) - run_time_ns(baseline)
    run_count               = run_cnt(last) - run_cnt(baseline)
    events_per_sec          = run_count / elapsed_s
    avg_runtime_ns          = runtime_ns // run_count, 0 when run_count is 0
    mean_runtime_ns         = runtime_ns / run_count (unrounded), 0.0 when run_count is 0
    estimated_cpu_percent   = runtime_ns / elapsed_ns * 100          (share of one CPU)
    estimated_cpu_percent_of_all_cpus = estimated_cpu_percent / online_cpus
where elapsed is measured on the monotonic clock between the first and last snapshot, and the
baseline is the program's reading in the first snapshot; a program first seen later that the
kernel says was loaded after the window began has a baseline of zero (every one of its runs
happened inside the window).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import frozen

from kstat.model import NO_DETAILS, ProgramDetails, ProgramOwner, ProgramStats

NS_PER_S = 1_000_000_000


@frozen
class ProgramSighting:
    """What the window saw of one program: its first and last reading and how they relate."""

    first: ProgramStats
    last: ProgramStats
    # Loaded after the window's first pass began: its counters started inside the window.
    loaded_during_window: bool
    # Read by the window's first pass: that reading is its baseline, whatever its load time,
    # so that consecutive windows (NDJSON intervals) never count the same runs twice.
    in_first_snapshot: bool
    # Missing from the window's last snapshot: reported up to its last sighting.
    unloaded_during_window: bool
    # The share of the window between its load (or the window's start) and its last sighting.
    window_coverage_percent: float = 100.0
    details: ProgramDetails = NO_DETAILS

    @property
    def counted_from_zero(self) -> bool:
        """First seen after the first snapshot, but loaded inside the window: every run counts."""
        return self.loaded_during_window and not self.in_first_snapshot

    @property
    def baseline_run_time_ns(self) -> int:
        return 0 if self.counted_from_zero else self.first.run_time_ns

    @property
    def baseline_run_count(self) -> int:
        return 0 if self.counted_from_zero else self.first.run_count

    @property
    def baseline_recursion_misses(self) -> int:
        return 0 if self.counted_from_zero else self.first.recursion_misses


@frozen
class WindowFacts:
    """The facts about a window that the report states besides per-program deltas."""

    start_wall_time_ns: int
    end_wall_time_ns: int
    elapsed_ns: int
    requested_duration_ns: int | None
    interval_ns: int
    snapshot_count: int
    online_cpus: int
    kernel_release: str
    stats_enabled_by: str
    stopped_by: str | None
    program_filter: dict[str, Any] | None = None


@frozen
class ProgramReport:
    """One program's line in the report; the first nine fields are the seed's."""

    name: str
    type: str
    id: int
    runtime_ns: int
    run_count: int
    events_per_sec: float
    avg_runtime_ns: int
    estimated_cpu_percent: float
    recursion_misses: int
    tag: str
    # Nanoseconds since boot (CLOCK_BOOTTIME): with id and tag, what identifies the program.
    load_time_ns: int
    estimated_cpu_percent_of_all_cpus: float
    # avg_runtime_ns without the seed's truncation: 20.9 ns, not 20.
    mean_runtime_ns: float
    loaded_during_window: bool
    unloaded_during_window: bool
    window_coverage_percent: float
    # The kernel's own (at most 15-character) name; `name` is the full one from BTF.
    kernel_name: str
    owners: tuple[ProgramOwner, ...]
    attachments: tuple[str, ...]


@frozen
class Report:
    """The delta report over a window, in the seed's JSON shape plus kstat's extra fields."""

    timestamp: str
    program_stats: dict[str, ProgramReport]
    total_runtime_ns: int
    total_run_count: int
    total_events_per_sec: float
    total_estimated_cpu_percent: float
    num_programs: int
    collection_duration_ns: int
    total_recursion_misses: int
    total_estimated_cpu_percent_of_all_cpus: float
    requested_duration_ns: int | None
    interval_ns: int
    start_time: str
    end_time: str
    snapshots: int
    online_cpus: int
    kernel_release: str
    stats_enabled_by: str
    stopped_by: str | None
    # The selection the report covers (totals included); None when it covers every program.
    filter: dict[str, Any] | None

    @property
    def programs(self) -> tuple[ProgramReport, ...]:
        """Every program's line, in key order."""
        return tuple(self.program_stats.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as the seed's JSON shape (plus kstat's fields), ready for json.dumps."""
        # Imported here: the converter module needs this one's classes first.
        from kstat._serialize import report_to_dict  # noqa: PLC0415 - a cycle otherwise

        return report_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report back from `to_dict()` output or a saved JSON file's content."""
        from kstat._serialize import report_from_dict  # noqa: PLC0415 - a cycle otherwise

        return report_from_dict(data)

    def program(self, name_or_id: str | int) -> ProgramReport:
        """The line for a report key, a program name (when unique) or a program id."""
        if isinstance(name_or_id, str) and name_or_id in self.program_stats:
            return self.program_stats[name_or_id]
        matches = [
            line
            for line in self.program_stats.values()
            if (line.id == name_or_id if isinstance(name_or_id, int) else line.name == name_or_id)
        ]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise KeyError(f"no program {name_or_id!r} in the report")
        raise KeyError(f"{len(matches)} programs are named {name_or_id!r}; look one up by id")


def events_per_sec(run_count: int, elapsed_ns: int) -> float:
    return run_count * NS_PER_S / elapsed_ns if elapsed_ns > 0 else 0.0


def avg_runtime_ns(runtime_ns: int, run_count: int) -> int:
    # Integer nanoseconds, truncated, as the seed's Go time.Duration division gave it.
    return runtime_ns // run_count if run_count > 0 else 0


def cpu_percent(runtime_ns: int, elapsed_ns: int) -> float:
    return runtime_ns * 100 / elapsed_ns if elapsed_ns > 0 else 0.0


def report_keys(programs: Sequence[ProgramStats]) -> list[str]:
    """Keys for program_stats: the name where it is unique, `<name>#<id>` where it is not.

    An id can appear twice when the kernel reused it for a different program inside the window;
    those keys get the load time as well so that nothing is merged or overwritten.
    """
    name_counts = Counter(program.name for program in programs)
    keys = [
        program.name if program.name and name_counts[program.name] == 1 else f"{program.name}#{program.id}"
        for program in programs
    ]
    key_counts = Counter(keys)
    return [
        f"{key}@{program.load_time_ns}" if key_counts[key] > 1 else key
        for key, program in zip(keys, programs, strict=True)
    ]


def program_report(sighting: ProgramSighting, elapsed_ns: int, online_cpus: int) -> ProgramReport:
    last = sighting.last
    runtime_ns = last.run_time_ns - sighting.baseline_run_time_ns
    run_count = last.run_count - sighting.baseline_run_count
    cpu = cpu_percent(runtime_ns, elapsed_ns)
    return ProgramReport(
        name=last.name,
        type=last.type,
        id=last.id,
        runtime_ns=runtime_ns,
        run_count=run_count,
        events_per_sec=events_per_sec(run_count, elapsed_ns),
        avg_runtime_ns=avg_runtime_ns(runtime_ns, run_count),
        estimated_cpu_percent=cpu,
        recursion_misses=last.recursion_misses - sighting.baseline_recursion_misses,
        tag=last.tag,
        load_time_ns=last.load_time_ns,
        estimated_cpu_percent_of_all_cpus=cpu / online_cpus,
        mean_runtime_ns=runtime_ns / run_count if run_count > 0 else 0.0,
        loaded_during_window=sighting.loaded_during_window,
        unloaded_during_window=sighting.unloaded_during_window,
        window_coverage_percent=sighting.window_coverage_percent,
        kernel_name=last.kernel_name,
        owners=sighting.details.owners,
        attachments=sighting.details.attachments,
    )


def build_report(window: WindowFacts, sightings: Iterable[ProgramSighting]) -> Report:
    """The report for a window from what it saw of each program."""
    ordered = sorted(sightings, key=lambda sighting: (sighting.last.id, sighting.last.load_time_ns))
    keys = report_keys([sighting.last for sighting in ordered])
    lines = {
        key: program_report(sighting, window.elapsed_ns, window.online_cpus)
        for key, sighting in sorted(zip(keys, ordered, strict=True), key=lambda pair: pair[0])
    }
    total_runtime_ns = sum(line.runtime_ns for line in lines.values())
    total_run_count = sum(line.run_count for line in lines.values())
    total_cpu = cpu_percent(total_runtime_ns, window.elapsed_ns)
    return Report(
        timestamp=format_timestamp(window.end_wall_time_ns),
        program_stats=lines,
        total_runtime_ns=total_runtime_ns,
        total_run_count=total_run_count,
        total_events_per_sec=events_per_sec(total_run_count, window.elapsed_ns),
        total_estimated_cpu_percent=total_cpu,
        num_programs=len(lines),
        collection_duration_ns=window.elapsed_ns,
        total_recursion_misses=sum(line.recursion_misses for line in lines.values()),
        total_estimated_cpu_percent_of_all_cpus=total_cpu / window.online_cpus,
        requested_duration_ns=window.requested_duration_ns,
        interval_ns=window.interval_ns,
        start_time=format_timestamp(window.start_wall_time_ns),
        end_time=format_timestamp(window.end_wall_time_ns),
        snapshots=window.snapshot_count,
        online_cpus=window.online_cpus,
        kernel_release=window.kernel_release,
        stats_enabled_by=window.stats_enabled_by,
        stopped_by=window.stopped_by,
        filter=window.program_filter,
    )


def format_timestamp(wall_time_ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as Go's time.Time marshals (2024-01-15T10:30:00.123Z)."""
    seconds, nanoseconds = divmod(wall_time_ns, NS_PER_S)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f".{nanoseconds:09d}".rstrip("0").rstrip(".")
    return f"{base}{fraction}Z"
