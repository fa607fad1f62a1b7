"""The Prometheus exposition, encoded: the text format (0.0.4) and OpenMetrics (1.0.0).

A pure encoder, kept up to date from a window's events by what changed: each program's sample
lines are encoded when it is first met (its info series, its footprint) and again only when its
counters move, so that a render is a join of bytes already made, whatever the number of
programs. Transports (kstat's HTTP endpoint, or a third party's) serve what `render` gives.

What a program costs in series, its budget: one per counter of the counter catalogue that the
metric catalogue exposes (`kstat_program_runs_total`, `..._run_time_seconds_total`,
`..._recursion_misses_total`, with the labels `id`, `name` and `type`) and one info series,
`kstat_program_info`, that carries everything else about it (kernel name, tag, owners,
attachments, pod, namespace, container, unit), to join on `id`. Its footprint (code size,
verifier work, memory, maps: the catalogue's PROPERTY metrics) is fixed while it is loaded;
it is exposed as gauges only when asked (`footprint=True`). `series_per_program()` says how
many that is; a test holds the exposition to it.

Per CPU (only where the counters carry per-CPU vectors: `--per-cpu`, by BPF iterator), each
per-CPU counter of the counter catalogue is exposed under its sum's name with `_cpu_` after
`kstat_program` (`kstat_program_cpu_runs_total`, `kstat_program_cpu_run_time_seconds_total`) and
a `cpu` label beside `id`, `name` and `type`: one series per program and CPU on which it ran, so
a program costs up to that many more series per CPU. Without per-CPU counters these families are
not in the exposition at all.

The two formats differ only in their family lines (OpenMetrics names a counter's family
without `_total` and an info family without `_info`, escapes `"` in HELP, and ends with
`# EOF`): the sample lines are encoded once and shared by both.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from attrs import define, field, frozen

from kstat.core.catalogue import METRICS, Kind, Metric, Number, Span
from kstat.core.counters import PER_CPU_COUNTERS, ZERO, Counters, counter, grown
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramDetails, ProgramIdentity, ProgramOwner, ProgramStats
from kstat.formats.owner_series import OwnerSeries

TEXT_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"

COUNTER_LABELS: Final = ("id", "name", "type")
PLACE_LABELS: Final = ("pod", "namespace", "container", "unit")
INFO_LABELS: Final = ("id", "name", "kernel_name", "type", "tag", "owners", "attachments", *PLACE_LABELS)
INFO_FAMILY: Final = "kstat_program"


class Format(enum.Enum):
    TEXT = "text"
    OPENMETRICS = "openmetrics"

    @property
    def content_type(self) -> str:
        return OPENMETRICS_CONTENT_TYPE if self is Format.OPENMETRICS else TEXT_CONTENT_TYPE


def negotiate(accept: str) -> Format:
    """The format an `Accept` header asks for: OpenMetrics when it names it (Prometheus does),
    else the text format, which every scraper reads."""
    for part in accept.split(","):
        media_type, _, parameters = part.partition(";")
        if media_type.strip().lower() != "application/openmetrics-text":
            continue
        quality = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return Format.OPENMETRICS
    return Format.TEXT


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, output: Format) -> str:
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if output is Format.OPENMETRICS else escaped


def format_value(value: float) -> str:
    """A sample's value: integers as integers, other numbers as Python's shortest repr (both
    formats and every Prometheus parser read either)."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _encoded(text: str) -> bytes:
    # Host names are decoded with replacement before they get here; a lone surrogate (a path
    # kept round-trippable) must still not stop the exposition.
    return text.encode("utf-8", "replace")


@frozen
class Family:
    """One metric family: its name as OpenMetrics has it (a counter's without `_total`)."""

    name: str
    type: str  # "counter", "gauge" or "info"
    help: str

    @property
    def sample_name(self) -> str:
        if self.type == "counter":
            return self.name + "_total"
        if self.type == "info":
            return self.name + "_info"
        return self.name

    def header(self, output: Format) -> bytes:
        if output is Format.OPENMETRICS:
            name, kind = self.name, self.type
        else:
            # The text format has no info type: an info series is a gauge of 1.
            name, kind = self.sample_name, "gauge" if self.type == "info" else self.type
        return _encoded(f"# HELP {name} {_escape_help(self.help, output)}\n# TYPE {name} {kind}\n")


def _program_family(metric: Metric) -> Family:
    exposition = metric.prometheus
    assert exposition is not None
    return Family(exposition.name, "counter" if metric.kind is Kind.COUNTER else "gauge", exposition.help)


def counter_metrics() -> tuple[Metric, ...]:
    """The catalogue's counters that the exposition shows per program."""
    return tuple(entry for entry in METRICS if entry.kind is Kind.COUNTER and entry.prometheus is not None)


def footprint_metrics() -> tuple[Metric, ...]:
    """The catalogue's properties (a program's footprint) that can be shown per program."""
    return tuple(entry for entry in METRICS if entry.kind is Kind.PROPERTY and entry.prometheus is not None)


@frozen
class PerCpuFamily:
    """A per-CPU counter's family: which counter, and what divides it into base units."""

    counter: str
    family: Family
    divisor: int


def per_cpu_families() -> tuple[PerCpuFamily, ...]:
    """One family per per-CPU counter, named after the counter it splits."""
    found = []
    for spec in PER_CPU_COUNTERS:
        split = None if spec.splits is None else counter(spec.splits)
        metric = next(
            (entry for entry in counter_metrics() if split is not None and entry.name == split.metric), None
        )
        if metric is None or metric.prometheus is None:
            continue
        exposition = metric.prometheus
        name = exposition.name.replace("kstat_program_", "kstat_program_cpu_", 1)
        found.append(
            PerCpuFamily(
                spec.name,
                Family(name, "counter", spec.description[:1].upper() + spec.description[1:]),
                exposition.divisor,
            )
        )
    return tuple(found)


def series_per_program(*, footprint: bool = False) -> int:
    """The exposition's series budget for one program: its counters, its info series and,
    when asked, its footprint gauges (a counter this kernel lacks is left out, never 0)."""
    return len(counter_metrics()) + 1 + (len(footprint_metrics()) if footprint else 0)


INFO: Final = Family(INFO_FAMILY, "info", "What each loaded program is, where it runs and who holds it")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs) + "}"


def _places(owners: Sequence[ProgramOwner]) -> dict[str, str]:
    """The first owner's pod, namespace, container and unit that say (empty where none does)."""
    found = dict.fromkeys(PLACE_LABELS, "")
    for owner in owners:
        workload = owner.workload
        for label, value in zip(
            PLACE_LABELS,
            (workload.pod, workload.namespace, workload.container_name, workload.unit),
            strict=True,
        ):
            if value is not None and not found[label]:
                found[label] = value
    return found


def info_labels(program: ProgramStats, details: ProgramDetails) -> dict[str, str]:
    """The labels of a program's info series."""
    return {
        "id": str(program.id),
        "name": program.name,
        "kernel_name": program.kernel_name,
        "type": program.type,
        "tag": program.tag,
        "owners": ",".join(owner.label for owner in details.owners),
        "attachments": ",".join(details.attachments),
        **_places(details.owners),
    }


@define
class _Shown:
    """One program as the exposition has it: the counters it counts from, the start of each of
    its counter lines (name and labels), and its lines, one per per-program family (b"" where
    a value is unknown)."""

    baseline: Counters
    labels: str
    counter_prefixes: list[bytes]
    lines: list[bytes]
    # Per per-CPU family: its lines for every CPU on which the program ran (b"" where none).
    cpu_lines: list[bytes] = field(factory=list)


@frozen
class Health:
    """kstat's own state, shown beside the programs."""

    stats_enabled_by: str | None = None
    last_pass_duration_s: float = 0.0
    last_snapshot_time_s: float = 0.0
    snapshots: int = 0
    failed_sinks: tuple[str, ...] = ()


@frozen
class Series:
    """A series of kstat's own (the process's CPU and memory, the endpoint's connections) that
    a transport adds at render time: its family, value and labels."""

    family: Family
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@frozen
class Rendered:
    """One render of the exposition, in the format it was asked in."""

    body: bytes
    content_type: str
    programs: int
    series: int


@define
class Exposition:
    """The exposition of one window, updated from its events; `render` encodes it.

    Not thread-safe: update and render from one thread at a time (kstat's endpoint does both on
    one worker, and serves the bytes).
    """

    footprint: bool = False
    health: Health = field(factory=Health)
    node: str | None = None
    snapshot_method: str | None = None
    version: str = ""
    _programs: dict[ProgramIdentity, _Shown] = field(factory=dict)
    _counters: tuple[Metric, ...] = field(factory=counter_metrics)
    _footprint_metrics: tuple[Metric, ...] = ()
    _families: tuple[Family, ...] = ()
    _counter_names: tuple[str, ...] = ()
    _counter_computes: tuple[tuple[Callable[[Span], Number | None], int], ...] = ()
    _per_cpu_families: tuple[PerCpuFamily, ...] = field(factory=per_cpu_families)
    # Whether any program's counters came per CPU: only then are the per-CPU families shown.
    _per_cpu_seen: bool = False
    # Each owner process's own CPU and memory beside its programs' (`kstat_owner_*`).
    _owners: OwnerSeries = field(factory=OwnerSeries)

    def __attrs_post_init__(self) -> None:
        self._footprint_metrics = footprint_metrics() if self.footprint else ()
        expositions = [metric.prometheus for metric in self._counters]
        self._counter_names = tuple(f"{entry.name}_total" for entry in expositions if entry is not None)
        self._counter_computes = tuple(
            (metric.compute, entry.divisor)
            for metric, entry in zip(self._counters, expositions, strict=True)
            if entry is not None
        )
        self._families = (
            *map(_program_family, self._counters),
            INFO,
            *map(_program_family, self._footprint_metrics),
        )

    @property
    def programs(self) -> int:
        return len(self._programs)

    def start(self, event: WindowStarted) -> None:
        snapshot = event.snapshot
        self._programs = {}
        for program in snapshot.programs:
            # Already loaded: counted from this reading (rate() and increase() read it).
            self._show(program, snapshot.details_of(program), program.counters)
        self._owners.start(event)
        self.node = event.node
        self.snapshot_method = event.snapshot_method
        self.health = Health(
            stats_enabled_by=event.stats_enabled_by,
            last_pass_duration_s=snapshot.pass_duration_ns / 1e9,
            last_snapshot_time_s=snapshot.wall_time_ns / 1e9,
            snapshots=snapshot.sequence + 1,
        )

    def interval(self, event: IntervalEnded) -> None:
        programs = self._programs
        for change in event.delta.changes:
            last = change.last
            identity = last.identity
            if change.unloaded:
                programs.pop(identity, None)
                continue
            shown = programs.get(identity)
            if shown is None:
                # First met: counted from the delta's baseline (zeros when it was loaded after
                # kstat started).
                self._show(last, change.details, change.baseline)
            else:
                self._count(shown, last.counters)
        self._owners.interval(event)
        current = event.current
        self.health = Health(
            stats_enabled_by=self.health.stats_enabled_by,
            last_pass_duration_s=current.pass_duration_ns / 1e9,
            last_snapshot_time_s=current.wall_time_ns / 1e9,
            # Numbered by the sampler: a sink that lagged still counts every pass.
            snapshots=current.sequence + 1,
            failed_sinks=event.failed_sinks,
        )

    def _show(self, program: ProgramStats, details: ProgramDetails, baseline: Counters) -> None:
        labels = _labels(zip(COUNTER_LABELS, (str(program.id), program.name, program.type), strict=True))
        prefixes = [_encoded(f"{name}{labels} ") for name in self._counter_names]
        shown = _Shown(baseline, labels, prefixes, [b""] * len(prefixes))
        lines = shown.lines
        lines.append(_encoded(f"{INFO.sample_name}{_labels(info_labels(program, details).items())} 1\n"))
        if self._footprint_metrics:
            span = Span(ZERO, 0, None, program.footprint)
            for metric in self._footprint_metrics:
                exposition = metric.prometheus
                assert exposition is not None
                value = metric.compute(span)
                lines.append(
                    b""
                    if value is None
                    else _encoded(f"{exposition.name}{labels} {format_value(value / exposition.divisor)}\n")
                )
        self._count(shown, program.counters)
        self._programs[program.identity] = shown

    def _count(self, shown: _Shown, counters: Counters) -> None:
        """A program's counter lines, again: its counters moved. The hot path of an interval
        in which every program ran, so it does no more than compute and join."""
        growth = grown(counters, shown.baseline)
        span = Span(growth, 0, None)
        if self._per_cpu_families:
            self._count_per_cpu(shown, growth)
        lines = shown.lines
        prefixes = shown.counter_prefixes
        for index, (compute, divisor) in enumerate(self._counter_computes):
            value = compute(span)
            if value is None:
                lines[index] = b""
            elif divisor == 1 and type(value) is int:
                lines[index] = b"%b%d\n" % (prefixes[index], value)
            else:
                lines[index] = b"%b%b\n" % (prefixes[index], format_value(value / divisor).encode())

    def _count_per_cpu(self, shown: _Shown, growth: Counters) -> None:
        found = []
        for entry in self._per_cpu_families:
            vector = getattr(growth, entry.counter)
            if not isinstance(vector, tuple):
                found.append(b"")
                continue
            self._per_cpu_seen = True
            labels = shown.labels[:-1]  # the program's labels, `cpu` added
            name, divisor = entry.family.sample_name, entry.divisor
            found.append(
                b"".join(
                    _encoded(f'{name}{labels},cpu="{cpu}"}} {_in_units(value, divisor)}\n')
                    for cpu, value in enumerate(vector)
                    if value
                )
            )
        shown.cpu_lines = found

    def render(self, output: Format, extra: Sequence[Series] = ()) -> Rendered:
        """The whole exposition in one format: every program's families, then kstat's own."""
        chunks: list[bytes] = []
        programs = list(self._programs.values())
        series = 0
        for index, family in enumerate(self._families):
            lines = [line for shown in programs if (line := shown.lines[index])]
            series += len(lines)
            chunks.append(family.header(output))
            chunks.append(b"".join(lines))
        if self._per_cpu_seen:
            for index, entry in enumerate(self._per_cpu_families):
                lines = [
                    line
                    for shown in programs
                    if index < len(shown.cpu_lines) and (line := shown.cpu_lines[index])
                ]
                series += sum(line.count(b"\n") for line in lines)
                chunks.append(entry.family.header(output))
                chunks.append(b"".join(lines))
        for name, kind, documentation, samples in self._owners.samples():
            family = Family(name.removesuffix("_total"), kind, documentation)
            chunks.append(family.header(output))
            for labels, value in samples:
                chunks.append(_encoded(f"{family.sample_name}{_labels(labels)} {format_value(value)}\n"))
                series += 1
        own = list(self._own(extra))
        for family, samples in own:
            chunks.append(family.header(output))
            for labels, value in samples:
                chunks.append(
                    _encoded(
                        f"{family.sample_name}{_labels(labels) if labels else ''} {format_value(value)}\n"
                    )
                )
                series += 1
        if output is Format.OPENMETRICS:
            chunks.append(b"# EOF\n")
        return Rendered(b"".join(chunks), output.content_type, len(programs), series)

    def _own(
        self, extra: Sequence[Series]
    ) -> Iterator[tuple[Family, list[tuple[tuple[tuple[str, str], ...], float]]]]:
        health = self.health
        yield _gauge(
            "kstat_programs_loaded", "eBPF programs loaded (that the filter selects)", len(self._programs)
        )
        yield (
            Family(
                "kstat_stats_enabled", "gauge", "1 while kstat holds the kernel's run-time stats on, by how"
            ),
            [] if health.stats_enabled_by is None else [((("method", health.stats_enabled_by),), 1)],
        )
        yield _gauge(
            "kstat_snapshot_duration_seconds", "How long kstat's last pass over every program took",
            health.last_pass_duration_s,
        )  # fmt: skip
        yield _gauge(
            "kstat_last_snapshot_timestamp_seconds", "When kstat's last pass was taken (Unix time)",
            health.last_snapshot_time_s,
        )  # fmt: skip
        yield (
            Family("kstat_snapshots", "counter", "Passes kstat has taken over every program"),
            [((), health.snapshots)],
        )
        yield (
            Family("kstat_sink_failed", "gauge", "1 for each of kstat's sinks that has failed"),
            [((("sink", name),), 1) for name in health.failed_sinks],
        )
        yield _gauge("kstat_sinks_failed", "How many of kstat's sinks have failed", len(health.failed_sinks))
        build = {
            "version": self.version,
            "node": self.node or "",
            "snapshot_method": self.snapshot_method or "",
        }
        yield (
            Family("kstat", "info", "The kstat serving this endpoint: its version, node and snapshot method"),
            [(tuple(build.items()), 1)],
        )
        grouped: dict[Family, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for series in extra:
            grouped.setdefault(series.family, []).append((series.labels, series.value))
        yield from grouped.items()


def _in_units(value: int, divisor: int) -> str:
    return format_value(value / divisor if divisor > 1 else value)


def _gauge(
    name: str, documentation: str, value: float
) -> tuple[Family, list[tuple[tuple[tuple[str, str], ...], float]]]:
    return Family(name, "gauge", documentation), [((), value)]


def exposition_of(events: Iterable[WindowStarted | IntervalEnded], *, footprint: bool = False) -> Exposition:
    """The exposition after a sequence of events (for tests and tools that replay a window)."""
    exposition = Exposition(footprint=footprint)
    for event in events:
        if isinstance(event, WindowStarted):
            exposition.start(event)
        else:
            exposition.interval(event)
    return exposition
