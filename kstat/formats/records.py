"""The record layout of NDJSON: flat lines with one fixed set of keys, for log stores.

The default NDJSON layout keys `program_stats` by program name, which a log store's dynamic
mapping turns into new fields for every program (Elasticsearch's 1,000-field limit falls at
about fifty programs). Here every line is one flat object with exactly `RECORD_KEYS`, in that
order, null where a key does not apply; no key ever comes from the data.

`kind` tells the lines apart:

- `program_seen`: a program met for the first time (at the window's start, or loaded later):
  who it is and its footprint (code size, verifier work, memory, maps);
- `program`: a program's delta over one interval, one line per program that did something;
- `total`: the interval's totals over every program (idle ones add zero);
- `summary` and `summary_total`: the window's report, one line per program and its totals;
- `program_cpu` and `summary_cpu` (with `--per-cpu`): after a program's `program` or `summary`
  line, one line per CPU on which it ran, `cpu` saying which: the catalogue's metrics over its
  runs and run time there (`estimated_cpu_percent` is then that CPU's share).

So the `program` lines of a program add up to its `summary` line, and the `total` lines add
up to `summary_total`, as the intervals add up to the report.

Names follow one convention: flat lower snake_case, units as suffixes (`_ns`, `_bytes`,
`_percent`, `_per_sec`), the report's names for what the report has (`id`, `name`, `type`,
`run_count`, ...), and `host_name` and `owner_*` after OpenTelemetry's `host.name` and
`process.*` with the dot made an underscore. No dots and no nesting: such keys are the same
field in Elasticsearch/OpenSearch, a plain column in ClickHouse, a label after Loki's `| json`,
and a plain path in jq.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from kstat.core.catalogue import METRICS, Kind, Metric, Number, Span, values
from kstat.core.counters import COUNTERS, ZERO
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramDetails, ProgramOwner, ProgramStats, Workload
from kstat.core.owner_cost import OWNER_METRICS, OwnerCost, OwnerMetric
from kstat.core.report import (
    ProgramReport,
    Report,
    counters_of,
    parse_timestamp,
    report_keys,
)
from kstat.core.timestamps import format_timestamp

# The first owner's workload (container, pod, unit), as `owner_<field>`.
_OWNER_WORKLOAD_KEYS: Final = tuple(f"owner_{attribute.name}" for attribute in attrs.fields(Workload))
_PROPERTIES: Final = tuple(metric for metric in METRICS if metric.kind is Kind.PROPERTY)
_OVER_TIME: Final = tuple(metric for metric in METRICS if metric.kind is not Kind.PROPERTY)
# A record holds numbers: per-CPU counters go out in records of their own.
_SCALAR_COUNTERS: Final = tuple(spec for spec in COUNTERS if not spec.per_cpu)

_OWNER_KEYS: Final = (
    "owner_group_by",
    "owner_group",
    "owner_program_ids",
    "owner_shared_program_ids",
    "owner_gone",
    *(f"owner_{metric.name}" for metric in OWNER_METRICS),
)

RECORD_KEYS: Final[tuple[str, ...]] = (
    "timestamp",
    "timestamp_ns",
    "kind",
    "host_name",
    # The snapshot that ended the interval (the window's first is 0); null in the summary.
    "sequence",
    "elapsed_ns",
    # The program's key in the report's program_stats (its name, or name#id when not unique).
    "key",
    "id",
    "name",
    "kernel_name",
    "type",
    "tag",
    "load_time_ns",
    "owner_pid",
    "owner_command",
    "owner_count",
    *_OWNER_WORKLOAD_KEYS,
    # Every attachment, comma-separated ("xdp:eth0,cgroup:/sys/fs/cgroup/x").
    "attachment",
    "attachment_count",
    "map_ids",
    "loaded",
    "unloaded",
    "window_coverage_percent",
    # When its (or the total's) interval with the highest CPU share ended (the summary).
    "peak_cpu_percent_at",
    "program_count",
    "idle_programs",
    "skipped_snapshots",
    # The CPU a `program_cpu` or `summary_cpu` line is of.
    "cpu",
    # The kernel's absolute counters at the interval's end (a `program` line of a program still
    # loaded): what a store can use to spot a program reloaded under the same name.
    *(f"counter_{spec.name}" for spec in _SCALAR_COUNTERS),
    # An owner's whole cost (`owner`, `owner_group`, `owner_total`): the container, pod or
    # unit a group is, its programs, and the owner catalogue's metrics as `owner_<metric>`.
    *_OWNER_KEYS,
    *(metric.name for metric in METRICS),
)

_EMPTY: Final[dict[str, Any]] = dict.fromkeys(RECORD_KEYS)


def _record(kind: str, wall_time_ns: int | None, host_name: str | None, **fields: Any) -> dict[str, Any]:
    """`fields` may say `timestamp` itself (a report's, kept as written)."""
    record = dict(_EMPTY)
    record |= {
        "timestamp": None if wall_time_ns is None else format_timestamp(wall_time_ns),
        "timestamp_ns": wall_time_ns,
        "kind": kind,
        "host_name": host_name,
    }
    unknown = fields.keys() - record.keys()
    if unknown:
        raise AssertionError(f"not record keys: {sorted(unknown)}")
    record |= fields
    return record


def _owner_fields(owners: Sequence[ProgramOwner]) -> dict[str, Any]:
    fields: dict[str, Any] = {"owner_count": len(owners)}
    if owners:
        first = owners[0]
        fields |= {"owner_pid": first.pid, "owner_command": first.command}
        for key, attribute in zip(_OWNER_WORKLOAD_KEYS, attrs.fields(Workload), strict=True):
            fields[key] = getattr(first.workload, attribute.name)
    return fields


def _attachment_fields(attachments: Sequence[str]) -> dict[str, Any]:
    return {"attachment": ",".join(attachments) or None, "attachment_count": len(attachments)}


def _json_number(metric: Metric, value: Number | None) -> Number | None:
    if value is None:
        return None
    return int(value) if metric.integral else float(value)


def _metric_fields(values: Mapping[str, Number | None], metrics: Iterable[Metric]) -> dict[str, Any]:
    return {metric.name: _json_number(metric, values.get(metric.name)) for metric in metrics}


def _seen(
    program: ProgramStats,
    key: str,
    details: ProgramDetails,
    *,
    wall_time_ns: int,
    sequence: int,
    host_name: str | None,
) -> dict[str, Any]:
    span = Span(ZERO, 0, None, program.footprint)
    properties = {metric.name: metric.compute(span) for metric in _PROPERTIES}
    return _record(
        "program_seen",
        wall_time_ns,
        host_name,
        sequence=sequence,
        key=key,
        id=program.id,
        name=program.name,
        kernel_name=program.kernel_name,
        type=program.type,
        tag=program.tag,
        load_time_ns=program.load_time_ns,
        map_ids=None if program.footprint is None else list(program.footprint.map_ids),
        **_owner_fields(details.owners),
        **_attachment_fields(details.attachments),
        **_metric_fields(properties, _PROPERTIES),
    )


def start_records(event: WindowStarted) -> Iterator[dict[str, Any]]:
    """A `program_seen` record for every program loaded when the window starts, made as they
    are written."""
    snapshot = event.snapshot
    programs = snapshot.programs
    for key, program in zip(report_keys(programs), programs, strict=True):
        yield _seen(
            program,
            key,
            program.details,
            wall_time_ns=snapshot.wall_time_ns,
            sequence=snapshot.sequence,
            host_name=event.node,
        )


def _identity(line: ProgramReport) -> dict[str, Any]:
    return {
        "id": line.id,
        "name": line.name,
        "kernel_name": line.kernel_name,
        "type": line.type,
        "tag": line.tag,
        "load_time_ns": line.load_time_ns,
        "map_ids": None if line.map_ids is None else list(line.map_ids),
        **_owner_fields(line.owners),
        **_attachment_fields(line.attachments),
    }


def _cpu_records(
    kind: str,
    line: ProgramReport,
    key: str,
    *,
    wall_time_ns: int | None,
    host_name: str | None,
    elapsed_ns: int,
    online_cpus: int | None,
    **fields: Any,
) -> list[dict[str, Any]]:
    """A line per CPU on which the program ran (none without per-CPU counters): every metric
    over its counters there."""
    if not line.per_cpu:
        return []
    identity = {"key": key, "id": line.id, "name": line.name, "type": line.type, "tag": line.tag}
    return [
        _record(
            kind,
            wall_time_ns,
            host_name,
            elapsed_ns=elapsed_ns,
            cpu=cpu,
            **identity,
            **fields,
            **_metric_fields(values(Span(counters_of(counts), elapsed_ns, online_cpus)), _OVER_TIME),
        )
        for cpu, counts in line.per_cpu.items()
    ]


def interval_records(event: IntervalEnded, host_name: str | None) -> list[dict[str, Any]]:
    """For one interval: `program_seen` for programs met in it, `program` for every program
    that did something, then the `total`."""
    delta = event.delta
    end = delta.end_wall_time_ns
    records = [
        _seen(
            change.last,
            key,
            change.details,
            wall_time_ns=end,
            sequence=delta.sequence,
            host_name=host_name,
        )
        for key, change in delta.active.items()
        if change.first_seen
    ]
    for key, line in delta.lines.items():
        change = delta.active[key]
        counters: dict[str, Any] = {}
        if not change.unloaded:
            counters = {
                f"counter_{spec.name}": getattr(change.last.counters, spec.name) for spec in _SCALAR_COUNTERS
            }
        records.append(
            _record(
                "program",
                end,
                host_name,
                sequence=delta.sequence,
                elapsed_ns=delta.elapsed_ns,
                key=key,
                **_identity(line),
                loaded=change.loaded,
                unloaded=change.unloaded,
                skipped_snapshots=delta.skipped_snapshots,
                **counters,
                # Footprint is the `program_seen` line's to say, once.
                **_metric_fields(line.metrics, _OVER_TIME),
            )
        )
        records += _cpu_records(
            "program_cpu",
            line,
            key,
            wall_time_ns=end,
            host_name=host_name,
            elapsed_ns=delta.elapsed_ns,
            online_cpus=delta.online_cpus,
            sequence=delta.sequence,
        )
    records.append(
        _record(
            "total",
            end,
            host_name,
            sequence=delta.sequence,
            elapsed_ns=delta.elapsed_ns,
            program_count=delta.program_count,
            idle_programs=delta.idle_programs,
            skipped_snapshots=delta.skipped_snapshots,
            **_metric_fields(delta.totals, METRICS),
        )
    )
    return records


def summary_records(report: Report, host_name: str | None) -> Iterator[dict[str, Any]]:
    """The window's report: a `summary` record per program, then the `summary_total` and the
    owners' records; made as they are written (at 10,000 programs, made whole, they were the
    peak of a window with NDJSON records)."""
    wall_time_ns = parse_timestamp(report.timestamp)
    elapsed_ns = report.collection_duration_ns
    for key, line in report.program_stats.items():
        yield _record(
            "summary",
            wall_time_ns,
            host_name,
            timestamp=report.timestamp,
            elapsed_ns=elapsed_ns,
            key=key,
            **_identity(line),
            loaded=line.loaded_during_window,
            unloaded=line.unloaded_during_window,
            window_coverage_percent=line.window_coverage_percent,
            peak_cpu_percent_at=line.peak_cpu_percent_at,
            **_metric_fields(line.metrics, METRICS),
        )
        yield from _cpu_records(
            "summary_cpu",
            line,
            key,
            wall_time_ns=wall_time_ns,
            host_name=host_name,
            elapsed_ns=elapsed_ns,
            online_cpus=report.online_cpus,
            timestamp=report.timestamp,
        )
    yield _record(
        "summary_total",
        wall_time_ns,
        host_name,
        timestamp=report.timestamp,
        elapsed_ns=elapsed_ns,
        program_count=report.num_programs,
        peak_cpu_percent_at=report.peak_cpu_percent_at,
        **_metric_fields(report.totals, METRICS),
    )
    yield from owner_records(report, host_name)


def _owner_metric_fields(values: Mapping[str, Number]) -> dict[str, Any]:
    def number(metric: OwnerMetric, value: Number | None) -> Number | None:
        if value is None:
            return None
        return int(value) if metric.integral else float(value)

    return {f"owner_{metric.name}": number(metric, values.get(metric.name)) for metric in OWNER_METRICS}


def _owner_record(cost: OwnerCost) -> dict[str, Any]:
    return {
        **_owner_fields([cost.owner]),
        "owner_count": None,
        "owner_program_ids": list(cost.program_ids),
        "owner_shared_program_ids": list(cost.shared_program_ids),
        "owner_gone": cost.gone,
        **_owner_metric_fields(cost.metrics),
    }


def owner_records(report: Report, host_name: str | None) -> list[dict[str, Any]]:
    """The report's owners section: an `owner` record per process holding programs, an
    `owner_group` record per container, pod and unit, then the `owner_total`; none when the
    report has no such section."""
    section = report.owners
    if section is None:
        return []
    wall_time_ns = parse_timestamp(report.timestamp)
    common = {"timestamp": report.timestamp, "elapsed_ns": report.collection_duration_ns}
    records = [
        _record("owner", wall_time_ns, host_name, **common, **_owner_record(cost)) for cost in section.owners
    ]
    records += [
        _record(
            "owner_group",
            wall_time_ns,
            host_name,
            **common,
            owner_group_by=group.by,
            owner_group=group.name,
            **_owner_metric_fields(group.metrics),
        )
        for group in section.groups
    ]
    records.append(
        _record("owner_total", wall_time_ns, host_name, **common, **_owner_metric_fields(section.total))
    )
    return records
