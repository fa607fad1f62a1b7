"""The OpenTelemetry mapping: kstat's programs as OTLP metrics, from the metric catalogue.

Pure values, no OpenTelemetry import: a sink turns them into the SDK's `MetricsData` and hands
them to the official OTLP exporter (kstat's `otlp` sink does). Every catalogue metric that the
catalogue exports (`View.EXPORT`) and names for Prometheus is mapped:
- a COUNTER (runs, run time, recursion misses) is a cumulative, monotonic Sum, counted since
  kstat started or the program was loaded, whichever is later (that moment is its start time);
- a PROPERTY (a program's footprint) is a Gauge, sent when asked for (`footprint=True`), as the
  Prometheus exposition's gauges are;
- a GAUGE of the catalogue (a rate over a span) is not sent: the cumulative Sums give it
  exactly over any span a backend asks for.

Names follow OpenTelemetry's conventions and translate back to kstat's Prometheus names: the
Prometheus name without its unit (`kstat_program_run_time_seconds` is `kstat.program.run_time`
in seconds), so a Collector's Prometheus exporter shows `kstat_program_run_time_seconds_total`.
Each point carries the program's `id`, `name` and `type` (as Prometheus labels them) and what
the info series says of it, under `ebpf.program.*` and `kstat.owner.*`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Final

from attrs import define, field, frozen

from kstat.core.catalogue import METRICS, Kind, Metric, Number, Span, View
from kstat.core.counters import Counters, grown
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramDetails, ProgramIdentity, ProgramStats, Snapshot

SCOPE_NAME: Final = "kstat"

# kstat's units (the catalogue's) in UCUM, as OpenTelemetry writes units.
_UNITS: Final = {
    "ns": "s",
    "bytes": "By",
    "runs": "{run}",
    "misses": "{miss}",
    "maps": "{map}",
    "instructions": "{instruction}",
}
_UNIT_SUFFIXES: Final = ("_seconds", "_bytes")


class Shape(enum.Enum):
    SUM = "sum"
    GAUGE = "gauge"


Attributes = tuple[tuple[str, str | int], ...]


@frozen
class Point:
    attributes: Attributes
    value: Number
    # Unix nanoseconds: when counting began (Sums), and the reading's own moment.
    start_time_unix_nano: int
    time_unix_nano: int


@frozen
class OtlpMetric:
    name: str
    description: str
    unit: str
    shape: Shape
    # Sums: cumulative and monotonic (the kernel's counters only grow).
    monotonic: bool
    points: tuple[Point, ...]


@frozen
class MetricMapping:
    """How one catalogue metric is sent."""

    metric: Metric
    name: str
    unit: str
    shape: Shape
    divisor: int


def mapping_of(metric: Metric) -> MetricMapping:
    exposition = metric.prometheus
    assert exposition is not None
    base = exposition.name
    for suffix in _UNIT_SUFFIXES:
        base = base.removesuffix(suffix)
    name = (
        "kstat.program." + base.removeprefix("kstat_program_") if base.startswith("kstat_program_") else base
    )
    return MetricMapping(
        metric,
        name,
        _UNITS.get(metric.unit, metric.unit),
        Shape.SUM if metric.kind is Kind.COUNTER else Shape.GAUGE,
        exposition.divisor,
    )


def mappings(*, footprint: bool = False) -> tuple[MetricMapping, ...]:
    """The catalogue's exported metrics as they are sent (counters, and footprint if asked)."""
    kinds = (Kind.COUNTER, Kind.PROPERTY) if footprint else (Kind.COUNTER,)
    return tuple(
        mapping_of(entry)
        for entry in METRICS
        if View.EXPORT in entry.views and entry.prometheus is not None and entry.kind in kinds
    )


def point_attributes(program: ProgramStats, details: ProgramDetails) -> Attributes:
    found: list[tuple[str, str | int]] = [
        ("id", program.id),
        ("name", program.name),
        ("type", program.type),
        ("ebpf.program.kernel_name", program.kernel_name),
        ("ebpf.program.tag", program.tag),
    ]
    if details.owners:
        found.append(("kstat.owners", ",".join(f"{owner.pid}/{owner.command}" for owner in details.owners)))
    if details.attachments:
        found.append(("kstat.attachments", ",".join(details.attachments)))
    for owner in details.owners[:1]:
        workload = owner.workload
        for key, value in (
            ("kstat.owner.pod", workload.pod),
            ("kstat.owner.namespace", workload.namespace),
            ("kstat.owner.container", workload.container_name),
            ("kstat.owner.unit", workload.unit),
        ):
            if value:
                found.append((key, value))
    return tuple(found)


@define
class _Counted:
    baseline: Counters
    since_unix_nano: int
    attributes: Attributes
    last: ProgramStats


def resource_attributes(node: str | None, version: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Where the metrics come from: kstat on a node, in a pod and container where the
    downward API says (POD_NAME, POD_NAMESPACE, CONTAINER_NAME); OTEL_RESOURCE_ATTRIBUTES,
    read by the SDK, adds to and overrides these."""
    found = {"service.name": "kstat", "service.version": version}
    if node:
        found["host.name"] = node
        found["k8s.node.name"] = node
    for variable, key in (
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("CONTAINER_NAME", "k8s.container.name"),
    ):
        if environ.get(variable):
            found[key] = environ[variable]
    return found


@define
class OtlpState:
    """The window's programs as OTLP needs them, updated from the events; `metrics()` gives
    every metric's points at the last reading."""

    footprint: bool = False
    node: str | None = None
    _programs: dict[ProgramIdentity, _Counted] = field(factory=dict)
    _time_unix_nano: int = 0
    _mappings: tuple[MetricMapping, ...] = ()

    def __attrs_post_init__(self) -> None:
        self._mappings = mappings(footprint=self.footprint)

    def start(self, event: WindowStarted) -> None:
        snapshot = event.snapshot
        self.node = event.node
        self._programs = {}
        for program in snapshot.programs:
            self._count(program, snapshot.details_of(program), program.counters, snapshot.wall_time_ns)
        self._time_unix_nano = snapshot.wall_time_ns

    def interval(self, event: IntervalEnded) -> None:
        current: Snapshot = event.current
        for change in event.delta.changes:
            last = change.last
            if change.unloaded:
                self._programs.pop(last.identity, None)
                continue
            counted = self._programs.get(last.identity)
            if counted is None:
                # Loaded inside the window: counted from zero since the pass before its load.
                since = event.previous.wall_time_ns if change.loaded else current.wall_time_ns
                self._count(last, change.details, change.baseline, since)
            else:
                counted.last = last
        self._time_unix_nano = current.wall_time_ns

    def _count(self, program: ProgramStats, details: ProgramDetails, baseline: Counters, since: int) -> None:
        self._programs[program.identity] = _Counted(
            baseline, since, point_attributes(program, details), program
        )

    def metrics(self) -> list[OtlpMetric]:
        found = []
        now = self._time_unix_nano
        for mapping in self._mappings:
            metric = mapping.metric
            points = []
            for counted in self._programs.values():
                last = counted.last
                if mapping.shape is Shape.SUM:
                    span = Span(grown(last.counters, counted.baseline), 0, None)
                else:
                    span = Span(grown(last.counters, last.counters), 0, None, last.footprint)
                value = metric.compute(span)
                if value is None:
                    continue
                shown: Number = value / mapping.divisor if mapping.divisor != 1 else value
                points.append(Point(counted.attributes, shown, counted.since_unix_nano, now))
            found.append(
                OtlpMetric(
                    mapping.name,
                    metric.prometheus.help if metric.prometheus is not None else metric.description,
                    mapping.unit,
                    mapping.shape,
                    mapping.shape is Shape.SUM,
                    tuple(points),
                )
            )
        return found


def state_of(events: Iterable[WindowStarted | IntervalEnded], *, footprint: bool = False) -> OtlpState:
    state = OtlpState(footprint=footprint)
    for event in events:
        if isinstance(event, WindowStarted):
            state.start(event)
        else:
            state.interval(event)
    return state
