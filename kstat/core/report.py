"""The delta report: its values, and pure functions that build it from what a window saw.

No I/O, no clocks. The formulas live in the metric catalogue (`kstat.core.catalogue`); this
module only says over which span each program's counters grew:

- a program's span runs from its baseline to its last sighting; its baseline is its reading in
  the window's first snapshot, except that a program first seen later which the kernel says was
  loaded after the window began (`load_time`, CLOCK_BOOTTIME) has a baseline of zero: every one
  of its runs happened inside the window;
- elapsed time is the monotonic time between the window's first and last snapshot.
"""

from __future__ import annotations

import operator
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

import attrs
from attrs import frozen

from kstat.core.catalogue import METRICS, NS_PER_S, Kind, Number, Span, metric, values
from kstat.core.counters import COUNTERS, ZERO, Counters, by_cpu, counter, is_zero, summed
from kstat.core.distribution import IntervalValues
from kstat.core.model import ProgramFootprint, ProgramOwner, ProgramStats
from kstat.core.owner_cost import OwnersSection
from kstat.core.sighting import Sighting, is_unchanged, total_growth
from kstat.core.timestamps import format_timestamp


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
    program_filter: Mapping[str, Any] | None = None
    node: str | None = None
    snapshot_method: str | None = None
    achieved_interval: AchievedInterval | None = None


@frozen
class AchievedInterval:
    """How far apart the window's counter reads really were: the asked interval is what the
    rates' precision rests on, and a busy host can stretch it."""

    p50_ns: int
    p99_ns: int
    max_ns: int
    # Gaps longer than twice the interval asked for.
    slipped: int
    # The first gap when the baseline was read at launch (it spans kstat's start-up too), which
    # the figures above leave out; None when the window read its own baseline.
    startup_ns: int | None = None


@frozen
class KstatPrograms:
    """Other kstat instances' own programs the window met (their iterators and probes, known by
    name and tag): counted apart, in no line and no total, so that one kstat's report does not
    carry another's cost."""

    programs: int
    # The catalogue's metrics over their summed counters (runtime_ns, run_count, CPU %, ...).
    metrics: Mapping[str, Number]


@frozen
class ProgramReport:
    """One program's line: who it is, and every catalogue metric over its span.

    Fields beyond the Go tool's (name, type, id and the seed metrics) are None or empty when a
    report that does not carry them is read back.
    """

    name: str
    type: str
    id: int
    # Catalogue metric name -> value; the seed's six are always there.
    metrics: Mapping[str, Number]
    tag: str | None = None
    # Nanoseconds since boot (CLOCK_BOOTTIME): with id and tag, what identifies the program.
    load_time_ns: int | None = None
    # The kernel's own (at most 15-character) name; `name` is the full one from BTF.
    kernel_name: str | None = None
    loaded_during_window: bool | None = None
    unloaded_during_window: bool | None = None
    window_coverage_percent: float | None = None
    # When the interval with its highest CPU share ended (RFC 3339); None when not known.
    peak_cpu_percent_at: str | None = None
    owners: tuple[ProgramOwner, ...] = ()
    attachments: tuple[str, ...] = ()
    # The ids of the maps it uses; None when the report does not say.
    map_ids: tuple[int, ...] | None = None
    # Per CPU on which it ran (`--per-cpu`, the BPF iterator only): CPU -> the growth of the
    # per-CPU counters, named by the metric each splits (`run_count`, `runtime_ns`). None when
    # not read (syscalls, or not asked).
    per_cpu: Mapping[int, Mapping[str, int]] | None = None

    def value(self, name: str) -> Number | None:
        """A metric's value by catalogue name; None when this report does not carry it."""
        metric(name)  # an unknown name is a mistake, not a missing value
        return self.metrics.get(name)

    @property
    def counters(self) -> Counters:
        """How much each counter grew over the line's span, from its counter metrics (None for
        a counter the line does not carry)."""
        return counters_of(self.metrics, self.per_cpu)

    # Typed access to the metrics every report has (the library's API since 0.1).
    @property
    def runtime_ns(self) -> int:
        return int(self.metrics["runtime_ns"])

    @property
    def run_count(self) -> int:
        return int(self.metrics["run_count"])

    @property
    def events_per_sec(self) -> float:
        return float(self.metrics["events_per_sec"])

    @property
    def avg_runtime_ns(self) -> int:
        return int(self.metrics["avg_runtime_ns"])

    @property
    def estimated_cpu_percent(self) -> float:
        return float(self.metrics["estimated_cpu_percent"])

    @property
    def recursion_misses(self) -> int:
        return int(self.metrics["recursion_misses"])

    # kstat 0.1's own fields, kept for the library's users; absent (None) in the Go tool's reports.
    @property
    def mean_runtime_ns(self) -> float:
        """The unrounded mean; computed from the counters when a report did not carry it."""
        value = self.metrics.get("mean_runtime_ns")
        if value is None:
            return self.runtime_ns / self.run_count if self.run_count else 0.0
        return float(value)

    @property
    def estimated_cpu_percent_of_all_cpus(self) -> float | None:
        value = self.metrics.get("estimated_cpu_percent_of_all_cpus")
        return None if value is None else float(value)


@frozen
class Report:
    """The delta report over a window, in the Go tool's JSON shape plus kstat's fields.

    Fields other than the Go tool's are None when a report that lacks them is read back.
    """

    timestamp: str
    program_stats: Mapping[str, ProgramReport]
    # Catalogue metric name -> the total over every program in the report.
    totals: Mapping[str, Number]
    num_programs: int
    collection_duration_ns: int
    # None: a report written without a version (the Go tool, kstat 0.1).
    schema_version: int | None = None
    generator: str | None = None
    requested_duration_ns: int | None = None
    interval_ns: int | None = None
    start_time: str | None = None
    end_time: str | None = None
    snapshots: int | None = None
    online_cpus: int | None = None
    kernel_release: str | None = None
    stats_enabled_by: str | None = None
    # How the programs were read: "iterator" (kstat's BPF iterator) or "syscalls".
    snapshot_method: str | None = None
    stopped_by: str | None = None
    # The selection the report covers (totals included); None when it covers every program.
    filter: Mapping[str, Any] | None = None
    # A long run's programs that unloaded long ago and are no longer listed (their runs are in
    # the totals); None when every program the run saw is listed.
    programs_left_out: int | None = None
    # The node the report is of (NODE_NAME, else the hostname).
    node: str | None = None
    # When the interval with the highest total CPU share ended (RFC 3339).
    peak_cpu_percent_at: str | None = None
    # How far apart the counter reads really were (median, p99, longest gap, slips).
    achieved_interval: AchievedInterval | None = None
    # Counters the kernel did not provide (`recursion_misses` before Linux 5.12): their metrics
    # are absent, and the seed's fields for them, which the Go tool's shape requires, say 0.
    unavailable_counters: tuple[str, ...] | None = None
    # Other kstat instances' programs, counted apart (None: the window met none).
    kstat_programs: KstatPrograms | None = None
    # "kernel_name" when program_stats is keyed as the Go tool keys it (`--keys kernel-name`);
    # None for kstat's own keys (the full name, `<name>#<id>` where names are shared).
    program_keys: str | None = None
    # With kernel-name keys: the keys of programs whose kernel name an earlier program's key
    # already is (`<kernel name>#<id>`), the rows the Go tool would have dropped.
    colliding_keys: tuple[str, ...] | None = None
    # Each process holding programs: its own CPU and memory beside its programs' kernel CPU
    # (its whole cost), and per container, pod and unit. None: the report does not say.
    owners: OwnersSection | None = None

    @property
    def programs(self) -> tuple[ProgramReport, ...]:
        """Every program's line, in key order."""
        return tuple(self.program_stats.values())

    @property
    def written_by_go_tool(self) -> bool:
        """Whether the Go collect-kernel-stats tool wrote it: every report kstat ever wrote says
        when its window started and how many snapshots it took (0.1's first shape already did),
        and since 0.2 its schema and generator; the Go tool's says none of it."""
        return (
            self.schema_version is None
            and self.generator is None
            and self.snapshots is None
            and self.start_time is None
        )

    @property
    def window_known(self) -> bool:
        """Whether the report gives its window's length (the Go tool's first version wrote 0):
        without it, rates are unknown."""
        return self.collection_duration_ns > 0

    def total(self, name: str) -> Number | None:
        """A metric's total by catalogue name; None when this report does not carry it."""
        metric(name)
        return self.totals.get(name)

    @property
    def total_runtime_ns(self) -> int:
        return int(self.totals["runtime_ns"])

    @property
    def total_run_count(self) -> int:
        return int(self.totals["run_count"])

    @property
    def total_events_per_sec(self) -> float:
        return float(self.totals["events_per_sec"])

    @property
    def total_estimated_cpu_percent(self) -> float:
        return float(self.totals["estimated_cpu_percent"])

    @property
    def total_recursion_misses(self) -> int:
        return int(self.totals["recursion_misses"])

    @property
    def total_estimated_cpu_percent_of_all_cpus(self) -> float | None:
        value = self.totals.get("estimated_cpu_percent_of_all_cpus")
        return None if value is None else float(value)

    # Deprecated in 0.3: a value does not carry its codec (the core cannot import a format).
    # `kstat.report_to_dict(report)` and `kstat.report_from_dict(data)` replace these.
    def to_dict(self) -> dict[str, Any]:
        """Deprecated: `kstat.report_to_dict(report)`."""
        return _codec("report_to_dict", "to_dict")(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Any) -> Report:
        """Deprecated: `kstat.report_from_dict(data)`."""
        return _codec("report_from_dict", "from_dict")(data)  # type: ignore[no-any-return]

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


def _codec(name: str, method: str) -> Any:
    """The report codec's function, for the deprecated methods only (removed in kstat 0.4)."""
    import importlib  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    warnings.warn(
        f"Report.{method}() is deprecated; use kstat.{name}() (removed in kstat 0.4)",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module("kstat.formats.report_json"), name)


def report_key(name: str, program_id: int, name_count: int) -> str:
    """A program's key in program_stats: its name where unique, `<name>#<id>` where not."""
    return name if name and name_count == 1 else f"{name}#{program_id}"


V = TypeVar("V")


def in_key_order(keys: Iterable[str], values: Iterable[V]) -> dict[str, V]:
    """Each value by its key (the keys unique), in the keys' order: as the Go tool's map is
    written. The pairs are taken one at a time, never held as a list of pairs."""
    by_key = dict(zip(keys, values, strict=True))
    return {key: by_key[key] for key in sorted(by_key)}


def report_keys(programs: Sequence[ProgramStats]) -> list[str]:
    """Keys for program_stats. An id can appear twice when the kernel reused it for a
    different program inside the window; those keys get the load time as well, so that
    nothing is merged or overwritten."""
    name_counts = Counter(program.name for program in programs)
    keys = [report_key(program.name, program.id, name_counts[program.name]) for program in programs]
    return disambiguated(keys, [program.load_time_ns for program in programs])


def disambiguated(keys: Sequence[str], load_times_ns: Sequence[int]) -> list[str]:
    key_counts = Counter(keys)
    return [
        f"{key}@{load_time}" if key_counts[key] > 1 else key
        for key, load_time in zip(keys, load_times_ns, strict=True)
    ]


# `Report.program_keys` of a report keyed as the Go tool keys it.
KERNEL_NAME_KEYS: Final = "kernel_name"


def kernel_name_keys(programs: Sequence[tuple[str, int, int]]) -> tuple[list[str], list[str]]:
    """Keys as the Go tool gives them, from each program's (kernel name, id, load time): its
    kernel name, the kernel's at most 15 characters. Where programs share one the Go tool keeps
    one of them (whichever its map's random order writes last) and drops the others; here the
    first by id keeps the bare name and each other is `<kernel name>#<id>`, so that nothing is
    dropped. Returns the keys, in the order given, and the suffixed ones."""
    taken: set[str] = set()
    keys: list[str] = [""] * len(programs)
    for index in sorted(range(len(programs)), key=lambda at: (programs[at][1], programs[at][2])):
        name, program_id, _ = programs[index]
        keys[index] = name if name not in taken else f"{name}#{program_id}"
        taken.add(name)
    keys = disambiguated(keys, [load_time_ns for _, _, load_time_ns in programs])
    bare = {name for name, _, _ in programs}
    return keys, sorted(key for key in keys if key not in bare)


def keyed_by_kernel_name(report: Report) -> Report:
    """The report with program_stats keyed as the Go tool keys it (`kernel_name_keys`), for
    scripts that join on those keys; every program still listed, and the keys the Go tool would
    not have had said in `colliding_keys`."""
    lines = report.program_stats
    if isinstance(lines, _Lines):
        # From what the window saw: no line is made for its key alone.
        seen = [one.sighting.last for one in lines._by_key.values()]
        keys, colliding = kernel_name_keys([(last.kernel_name, last.id, last.load_time_ns) for last in seen])
        rekeyed: Mapping[str, ProgramReport] = _Lines(
            in_key_order(keys, lines._by_key.values()), lines._bounds
        )
    else:
        read = list(lines.values())
        # A report read back without kernel names (the Go tool's, kstat 0.1's first) holds them
        # as its names.
        keys, colliding = kernel_name_keys(
            [(line.kernel_name or line.name, line.id, line.load_time_ns or 0) for line in read]
        )
        rekeyed = in_key_order(keys, read)
    return attrs.evolve(
        report, program_stats=rekeyed, program_keys=KERNEL_NAME_KEYS, colliding_keys=tuple(colliding)
    )


def counters_of(
    metrics: Mapping[str, Number], per_cpu: Mapping[int, Mapping[str, int]] | None = None
) -> Counters:
    """Counters from a line's (or a total's) counter metrics, and its per-CPU splits from its
    `per_cpu` (CPU -> the split counters' metrics); None where a metric is missing."""
    found: list[int | tuple[int, ...] | None] = []
    for spec in COUNTERS:
        if spec.per_cpu:
            found.append(_vector(spec.splits, per_cpu))
            continue
        value = None if spec.metric is None else metrics.get(spec.metric)
        found.append(None if value is None else int(value))
    return Counters._make(found)


def _vector(splits: str | None, per_cpu: Mapping[int, Mapping[str, int]] | None) -> tuple[int, ...] | None:
    """A per-CPU counter's vector (by CPU number) from a line's `per_cpu`; None without one."""
    if per_cpu is None or splits is None:
        return None
    name = counter(splits).metric or splits
    vector = [0] * (max(per_cpu, default=-1) + 1)
    for cpu, counts in per_cpu.items():
        vector[cpu] = int(counts.get(name, 0))
    return tuple(vector)


@frozen
class Bounds:
    """Where a span starts and ends: CLOCK_BOOTTIME at the start of its first and last passes
    (the clock of `load_time`), and the monotonic time between them."""

    start_boottime_ns: int
    end_boottime_ns: int
    elapsed_ns: int
    online_cpus: int | None


def program_report(
    sighting: Sighting,
    bounds: Bounds,
    *,
    distribution: Mapping[str, Number] | None = None,
    peak_cpu_percent_at_ns: int | None = None,
    metrics: Mapping[str, Number] | None = None,
) -> ProgramReport:
    """One program's line over a span: every catalogue metric of its counters' growth (and, for
    a window, the distribution of its intervals); `metrics`, those figures where the caller
    has them already (lines whose figures are alike share one mapping)."""
    if metrics is None:
        metrics = line_metrics(sighting, bounds, distribution)
    return ProgramReport(*program_row(sighting, bounds, metrics, peak_cpu_percent_at_ns))


def program_row(
    sighting: Sighting, bounds: Bounds, metrics: Mapping[str, Number], peak_cpu_percent_at_ns: int | None
) -> LineRow:
    """`program_report`'s fields as a `LineRow`, its figures given: what a writer reads of a
    window's or an interval's lines straight from what they saw, no `ProgramReport` made (written
    out flat: 10,000 lines a report, through the properties they took twice the time)."""
    last = sighting.last
    facts = last.facts
    footprint = facts.footprint if sighting.first_seen else None
    details = facts.details
    return (
        facts.name or last.kernel_name,
        last.type,
        last.id,
        metrics,
        last.tag,
        last.load_time_ns,
        last.kernel_name,
        sighting.loaded,
        sighting.gone_after_boottime_ns is not None,
        sighting.coverage_percent(bounds.start_boottime_ns, bounds.end_boottime_ns),
        None if peak_cpu_percent_at_ns is None else format_timestamp(peak_cpu_percent_at_ns),
        details.owners,
        details.attachments,
        None if footprint is None else footprint.map_ids,
        _per_cpu(sighting.grown),
    )


def line_metrics(
    sighting: Sighting, bounds: Bounds, distribution: Mapping[str, Number] | None = None
) -> dict[str, Number]:
    """A line's figures: its span's, then its distribution's."""
    return {**_span_values(sighting.span(bounds.elapsed_ns, bounds.online_cpus)), **(distribution or {})}


_PER_CPU_NAMES: Final = tuple(spec.name for spec in COUNTERS if spec.per_cpu)


_per_cpu_counters: Final = operator.attrgetter(*_PER_CPU_NAMES)
_NO_PER_CPU: Final = (None,) * len(_PER_CPU_NAMES)


def _per_cpu(grown: Counters) -> dict[int, dict[str, int]] | None:
    """A line's per-CPU growth, CPUs where it ran only; None where no per-CPU counter was read."""
    found = _per_cpu_counters(grown)
    # One name gives the value itself, several a tuple of them.
    if (found if len(_PER_CPU_NAMES) > 1 else (found,)) == _NO_PER_CPU:
        return None
    return by_cpu(grown)


# The figures of a span in which nothing grew, but for the program's own (its footprint), by
# (counters, elapsed, CPUs): a host's idle programs share them. One entry: one report's spans.
_IDLE_FIGURES: dict[tuple[Counters, int, int | None], dict[str, Number]] = {}


def _span_values(span: Span) -> dict[str, Number]:
    """`values(span)`: the same figures in the same order. For a span in which no counter grew
    (an idle program's), only its footprint's (the catalogue's properties) are worked out; the
    rest are the same for every such span of the report, worked out once."""
    if not (is_unchanged(span.counters) or is_zero(span.counters)):
        # Without a footprint (an interval's line after the first), no property has a value,
        # and a distribution never has one over a single span: only the rest are worked out.
        return values(span, None if span.footprint is not None else _OF_COUNTERS)
    try:
        key = (span.counters, span.elapsed_ns, span.online_cpus)
        figures = _IDLE_FIGURES.get(key)
    except TypeError:  # counters that do not hash: worked out as they are
        return values(span)
    if figures is None:
        _IDLE_FIGURES.clear()
        known = values(span, _NOT_PROPERTIES)
        # Every property in its place (0 until worked out), so that the copy keeps the order.
        figures = _IDLE_FIGURES[key] = {
            entry.name: known.get(entry.name, 0)
            for entry in METRICS
            if entry.kind is Kind.PROPERTY or entry.name in known
        }
    found = dict(figures)
    for entry in _PROPERTIES:
        value = entry.compute(span)
        if value is None:
            del found[entry.name]
        else:
            found[entry.name] = value
    return found


_PROPERTIES: Final = tuple(entry for entry in METRICS if entry.kind is Kind.PROPERTY)
_NOT_PROPERTIES: Final = tuple(entry for entry in METRICS if entry.kind is not Kind.PROPERTY)
_OF_COUNTERS: Final = tuple(entry for entry in METRICS if entry.kind in (Kind.COUNTER, Kind.GAUGE))


@frozen
class LeftOut:
    """Programs a long run no longer lists (unloaded long ago), still counted in the totals."""

    programs: int = 0
    # How much their counters grew while the window saw them.
    counters: Counters = ZERO

    def adding(self, sighting: Sighting) -> LeftOut:
        return LeftOut(self.programs + 1, summed([sighting.grown], self.counters))


NOTHING_LEFT_OUT: Final = LeftOut()


def total_values(
    counters: Counters,
    elapsed_ns: int,
    online_cpus: int | None,
    footprint: ProgramFootprint | None = None,
) -> dict[str, Number]:
    """Every metric over several programs' summed counters, and over their combined
    `footprint` where given."""
    return values(Span(counters, elapsed_ns, online_cpus, footprint))


def unavailable_counters(total: Counters) -> tuple[str, ...]:
    """The counters a total lacks: the kernel did not provide them for some program (per-CPU
    splits, read only when asked, are not the kernel's lack)."""
    return tuple(
        spec.name for spec, value in zip(COUNTERS, total, strict=True) if value is None and not spec.per_cpu
    )


@frozen
class WindowSighting:
    """A program as a window's report states it: what the window saw of it, and the
    distribution of its per-interval values (worked out when its line is made)."""

    sighting: Sighting
    values: IntervalValues | None = None
    # The window's intervals, for the idle ones `values` knows only by their number.
    intervals: int = 0

    @property
    def distribution(self) -> Mapping[str, Number]:
        values = self.values
        return {} if values is None or self.intervals == 0 else values.metrics(self.intervals)

    @property
    def peak_cpu_percent_at_ns(self) -> int | None:
        return None if self.values is None else self.values.peak_time_ns


# A report line's fields in `ProgramReport`'s order, as a plain tuple: what a writer reads of a
# window's lines without making a `ProgramReport` of each (10,000 lines per report).
LineRow: TypeAlias = tuple[
    str,  # name
    str,  # type
    int,  # id
    Mapping[str, Number],  # metrics
    str | None,  # tag
    int | None,  # load_time_ns
    str | None,  # kernel_name
    bool | None,  # loaded_during_window
    bool | None,  # unloaded_during_window
    float | None,  # window_coverage_percent
    str | None,  # peak_cpu_percent_at
    tuple[ProgramOwner, ...],  # owners
    tuple[str, ...],  # attachments
    tuple[int, ...] | None,  # map_ids
    Mapping[int, Mapping[str, int]] | None,  # per_cpu
]
if tuple(field.name for field in attrs.fields(ProgramReport)) != (
    "name", "type", "id", "metrics", "tag", "load_time_ns", "kernel_name", "loaded_during_window",
    "unloaded_during_window", "window_coverage_percent", "peak_cpu_percent_at", "owners",
    "attachments", "map_ids", "per_cpu",
):  # fmt: skip
    raise AssertionError("LineRow's fields and ProgramReport's disagree")


def line_row(line: ProgramReport) -> LineRow:
    """A line's fields as a `LineRow`."""
    return (
        line.name,
        line.type,
        line.id,
        line.metrics,
        line.tag,
        line.load_time_ns,
        line.kernel_name,
        line.loaded_during_window,
        line.unloaded_during_window,
        line.window_coverage_percent,
        line.peak_cpu_percent_at,
        line.owners,
        line.attachments,
        line.map_ids,
        line.per_cpu,
    )


def line_rows(lines: Mapping[str, ProgramReport]) -> Iterator[tuple[str, LineRow]]:
    """Each line's key and fields, in key order: a window's lines straight from what it saw of
    each program, others' through their `ProgramReport`."""
    if isinstance(lines, _Lines):
        return lines.rows()
    return ((key, line_row(line)) for key, line in lines.items())


# How many idle lines' figures a report keeps to share: a host's idle programs with equal
# footprints share one, but where every footprint differs each would be kept for the report's
# life (a mapping of 30 metrics per program, some 15 MB at 10,000 programs).
_SHARED_FIGURES_KEPT: Final = 256


class _Lines(Mapping[str, ProgramReport]):
    """A window's report lines by key, each made when it is read: a report of 10,000 programs
    is written line by line, never held whole (its totals come from the counters)."""

    __slots__ = ("_bounds", "_by_key", "_idle_metrics")

    def __init__(self, by_key: dict[str, WindowSighting], bounds: Bounds) -> None:
        self._by_key, self._bounds = by_key, bounds
        # The figures of lines in which nothing grew, by what they depend on (the footprint
        # told, the intervals' values): most of a host's programs, one mapping each kind.
        self._idle_metrics: dict[tuple[int, ProgramFootprint | None, int, int], Mapping[str, Number]] = {}

    def __getitem__(self, key: str) -> ProgramReport:
        return ProgramReport(*self._row(self._by_key[key]))

    def rows(self) -> Iterator[tuple[str, LineRow]]:
        """`line_rows`: every line's fields, no `ProgramReport` made."""
        row = self._row
        for key, seen in self._by_key.items():
            yield key, row(seen)

    def _row(self, seen: WindowSighting) -> LineRow:
        sighting = seen.sighting
        grown = sighting.grown
        if is_unchanged(grown):
            footprint = sighting.last.facts.footprint if sighting.first_seen else None
            # By identity: the shared "nothing grew" and the intervals' values are the
            # window's own objects, alive as long as the report.
            idle = (id(grown), footprint, id(seen.values), seen.intervals)
            shared = self._idle_metrics
            metrics = shared.get(idle)
            if metrics is None:
                if len(shared) >= _SHARED_FIGURES_KEPT:
                    shared.clear()
                metrics = shared[idle] = line_metrics(sighting, self._bounds, seen.distribution)
        else:
            metrics = line_metrics(sighting, self._bounds, seen.distribution)
        return program_row(sighting, self._bounds, metrics, seen.peak_cpu_percent_at_ns)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def __repr__(self) -> str:
        return f"<{len(self)} report lines>"


def build_report(
    window: WindowFacts,
    bounds: Bounds,
    programs: Iterable[WindowSighting],
    *,
    schema_version: int,
    generator: str,
    left_out: LeftOut = NOTHING_LEFT_OUT,
    total_distribution: Mapping[str, Number] | None = None,
    total_peak_at_ns: int | None = None,
    kstat_programs: Iterable[Sighting] = (),
    owners: OwnersSection | None = None,
) -> Report:
    """The report for a window from what it saw of each program (and what it no longer lists),
    and the distribution of the total's per-interval values."""
    # In no order: the lines go in their keys' order, and the keys and the sums do not depend
    # on it (a sort by id held a key for each program: 0.6 MB of the report's peak at 10,000).
    seen_all = programs if isinstance(programs, list) else list(programs)
    lasts = [seen.sighting.last for seen in seen_all]
    # The programs' combined footprint, when every one of them has one.
    combined = (
        ProgramFootprint.combined(last.footprint for last in lasts if last.footprint is not None)
        if lasts and all(last.footprint is not None for last in lasts)
        else None
    )
    lines = _Lines(in_key_order(report_keys(lasts), seen_all), bounds)
    del lasts
    total = total_growth((seen.sighting.grown for seen in seen_all), left_out.counters)
    return Report(
        timestamp=format_timestamp(window.end_wall_time_ns),
        program_stats=lines,
        totals={
            **total_values(total, window.elapsed_ns, window.online_cpus, combined),
            **(total_distribution or {}),
        },
        num_programs=len(lines),
        collection_duration_ns=window.elapsed_ns,
        schema_version=schema_version,
        generator=generator,
        requested_duration_ns=window.requested_duration_ns,
        interval_ns=window.interval_ns,
        start_time=format_timestamp(window.start_wall_time_ns),
        end_time=format_timestamp(window.end_wall_time_ns),
        snapshots=window.snapshot_count,
        online_cpus=window.online_cpus,
        kernel_release=window.kernel_release,
        stats_enabled_by=window.stats_enabled_by,
        snapshot_method=window.snapshot_method,
        stopped_by=window.stopped_by,
        filter=window.program_filter,
        programs_left_out=left_out.programs if left_out.programs else None,
        node=window.node,
        peak_cpu_percent_at=None if total_peak_at_ns is None else format_timestamp(total_peak_at_ns),
        unavailable_counters=unavailable_counters(total) or None,
        achieved_interval=window.achieved_interval,
        kstat_programs=kstat_programs_apart(kstat_programs, window.elapsed_ns, window.online_cpus),
        owners=owners,
    )


def kstat_programs_apart(
    sightings: Iterable[Sighting], elapsed_ns: int, online_cpus: int | None
) -> KstatPrograms | None:
    """What other kstat instances' programs did over the span, as one (None: there were none)."""
    seen = list(sightings)
    if not seen:
        return None
    grown = summed(sighting.grown for sighting in seen)
    return KstatPrograms(len(seen), total_values(grown, elapsed_ns, online_cpus))


_RFC3339: Final = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9})\d*)?(?:Z|([+-])(\d\d):(\d\d))", re.IGNORECASE
)


def parse_timestamp(text: str) -> int | None:
    """Nanoseconds since the epoch from an RFC 3339 time (as kstat and the Go tool write them);
    None when `text` is not one."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        return None
    # Only reports read back need it (calendar and datetime: 0.5 MB of a window's memory).
    import calendar  # noqa: PLC0415

    base, fraction, sign, hours, minutes = found.groups()
    try:
        seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    if sign is not None:
        offset = int(hours) * 3600 + int(minutes) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds * NS_PER_S + int((fraction or "").ljust(9, "0"))
