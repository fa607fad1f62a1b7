"""Reports to and from JSON: one cattrs converter, the only place that knows the wire shape.

Written strictly, read leniently. Every report kstat writes carries `schema_version`; reading
accepts every shape kstat or the Go `collect-kernel-stats` tool ever wrote:

- the Go tool's report: `timestamp`, `collection_duration_ns`, `program_stats` (each program:
  name, type, id and the six seed metrics), the seed's totals and `num_programs`;
- its first version, with `collection_duration_sec` instead of `_ns` (always 0: it was never
  set) and extra per-program fields (`tag`, `memlock_bytes`, ...);
- kstat 0.1's reports (no `schema_version`), whose later fields came one commit at a time.

Only the Go tool's fields are required, but for the window's length: a report without one (or
with 0) reads with a `collection_duration_ns` of 0, its rates unknown. Anything else is optional
(None or empty when absent), and fields this version does not know are ignored. A file that is
not a report gets a `ReportFormatError` naming the field and what is wrong with it.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from kstat.core import catalogue
from kstat.core.catalogue import METRICS, NS_PER_S, Metric, Number
from kstat.core.counters import summed
from kstat.core.model import ProgramOwner, Workload
from kstat.core.owner_cost import (
    OWNER_METRICS,
    OwnerCost,
    OwnerGroupCost,
    OwnerMetric,
    OwnersSection,
)
from kstat.core.report import (
    AchievedInterval,
    KstatPrograms,
    LineRow,
    ProgramReport,
    Report,
    line_row,
    line_rows,
    total_values,
)
from kstat.errors import KstatError
from kstat.formats.bounded_json import parse_json
from kstat.formats.program_json import WORKLOAD_FIELDS, owner_to_dict

if TYPE_CHECKING:
    import cattrs

# 1: kstat 0.1 and the Go tool (no `schema_version` field); 2: the catalogue's fields, and
# `schema_version` and `generator` themselves.
SCHEMA_VERSION: Final = 2

# Per program, in the order they are written: the Go tool's identity fields, the seed metrics,
# then kstat's own. Non-seed metrics go after `load_time_ns`, as kstat 0.1 wrote them.
_IDENTITY_FIELDS: Final = ("name", "type", "id")
# The Go tool's per-program fields in its order (a fixed shape, so written out here); which
# metrics are the seed's is the catalogue's to say.
_SEED_FIELD_ORDER: Final = (
    "runtime_ns",
    "run_count",
    "events_per_sec",
    "avg_runtime_ns",
    "estimated_cpu_percent",
    "recursion_misses",
)
_SEED_METRICS: Final = tuple(catalogue.metric(name) for name in _SEED_FIELD_ORDER)
if {entry.name for entry in METRICS if entry.seed} != set(_SEED_FIELD_ORDER):
    raise AssertionError("the catalogue's seed metrics and the Go tool's fields disagree")
_OTHER_METRICS: Final = tuple(metric for metric in METRICS if not metric.seed)
_LEADING_TOTALS: Final = (
    "total_runtime_ns",
    "total_run_count",
    "total_events_per_sec",
    "total_estimated_cpu_percent",
)


class ReportFormatError(KstatError):
    """Data that is not a report; the message names the field and what is wrong with it."""


_ACHIEVED_FIELDS: Final = tuple(attribute.name for attribute in attrs.fields(AchievedInterval))

# --- writing --------------------------------------------------------------------------------


def _json_number(metric: Metric, value: Number) -> Number:
    return int(value) if metric.integral else float(value)


# (name, its JSON number's type) of each metric, in the order written: the seed's, then the
# others.
_SEED_FIELDS: Final = tuple((metric.name, int if metric.integral else float) for metric in _SEED_METRICS)
_OTHER_FIELDS: Final = tuple((metric.name, int if metric.integral else float) for metric in _OTHER_METRICS)
# A line's owners as written, by the owners' tuple (programs with the same owners share one):
# the tuple, kept so that its id is not reused, and its list of objects.
_OwnersWritten = dict[int, tuple[tuple[ProgramOwner, ...], list[dict[str, Any]]]]


# A line's metrics as written (the seed's fields, then the others), by the mapping's identity
# (kept, so that its id is not reused): the idle lines of a window's report (most of a host's
# programs) share one mapping, converted once.
_MetricsWritten = dict[int, tuple[Mapping[str, Number], dict[str, Number], dict[str, Number]]]


# How many metrics' fields and owners' objects an encoder keeps to share: lines share a few
# (one loader's owners, idle programs' figures), and where none is shared, each kept would
# hold a line's worth for the whole report (some 20 MB at 10,000 programs whose footprints all
# differ); past this many, it starts again.
_SHARED_KEPT: Final = 256


def program_to_dict(line: ProgramReport) -> dict[str, Any]:
    """One program's line, in the report's field order."""
    return _program_dict(line_row(line), {}, {})


class LineEncoder:
    """`program_to_dict` for the lines of one report or interval, to be encoded: the owners'
    objects made once for lines that share them (one loader's programs; the lines then share
    those objects too), and the metrics' fields once for lines that share one mapping."""

    def __init__(self) -> None:
        self._owners: _OwnersWritten = {}
        self._metrics: _MetricsWritten = {}

    def __call__(self, line: ProgramReport) -> dict[str, Any]:
        return _program_dict(line_row(line), self._owners, self._metrics)

    def row(self, row: LineRow) -> dict[str, Any]:
        """The same from a line's fields (`line_rows`)."""
        return _program_dict(row, self._owners, self._metrics)


def _metric_fields(metrics: Mapping[str, Number]) -> tuple[dict[str, Number], dict[str, Number]]:
    get = metrics.get
    # The Go tool's shape requires every seed field; a counter this kernel lacks says 0 there,
    # and the report's `unavailable_counters` says why.
    seed = {name: number(get(name, 0)) for name, number in _SEED_FIELDS}
    others = {name: number(found) for name, number in _OTHER_FIELDS if (found := get(name)) is not None}
    return seed, others


def _program_dict(
    row: LineRow, owners_written: _OwnersWritten, metrics_written: _MetricsWritten
) -> dict[str, Any]:
    """`program_to_dict`, the owners' objects and the metrics' fields made once for lines that
    share them (10,000 lines per report: written out flat rather than through helpers)."""
    (
        name,
        type_name,
        program_id,
        metrics,
        tag,
        load_time_ns,
        kernel_name,
        loaded,
        unloaded,
        coverage,
        peak_at,
        owners,
        attachments,
        map_ids,
        per_cpu,
    ) = row
    fields = metrics_written.get(id(metrics))
    if fields is None or fields[0] is not metrics:
        if len(metrics_written) >= _SHARED_KEPT:
            metrics_written.clear()
        fields = metrics_written[id(metrics)] = (metrics, *_metric_fields(metrics))
    _, seed, others = fields
    data: dict[str, Any] = {"name": name, "type": type_name, "id": program_id, **seed}
    # Fields a report read back did not carry stay out, rather than turning into nulls.
    if tag is not None:
        data["tag"] = tag
    if load_time_ns is not None:
        data["load_time_ns"] = load_time_ns
    data.update(others)
    if kernel_name is not None:
        data["kernel_name"] = kernel_name
    if loaded is not None:
        data["loaded_during_window"] = loaded
    if unloaded is not None:
        data["unloaded_during_window"] = unloaded
    if coverage is not None:
        data["window_coverage_percent"] = coverage
    if peak_at is not None:
        data["peak_cpu_percent_at"] = peak_at
    written = owners_written.get(id(owners))
    if written is None or written[0] is not owners:
        if len(owners_written) >= _SHARED_KEPT:
            owners_written.clear()
        written = owners_written[id(owners)] = (owners, [owner_to_dict(owner) for owner in owners])
    data["owners"] = written[1]
    data["attachments"] = list(attachments)
    if map_ids is not None:
        data["map_ids"] = list(map_ids)
    if per_cpu is not None:
        # JSON keys are strings: the CPU's number as text.
        data["per_cpu"] = {str(cpu): dict(values) for cpu, values in per_cpu.items()}
    return data


def totals_to_dict(totals: Mapping[str, Number]) -> dict[str, Number]:
    """`total_<metric>` fields in catalogue order."""
    return {
        metric.total_name: _json_number(metric, totals[metric.name])
        for metric in METRICS
        if metric.name in totals
    }


def _unstructure_report(report: Report, *, with_programs: bool = True) -> dict[str, Any]:
    """The report's JSON data; without its programs (`program_stats` empty), for an encoder
    that writes them one by one."""
    totals = totals_to_dict(report.totals)
    data: dict[str, Any] = {
        "timestamp": report.timestamp,
        "program_stats": (
            {key: program_to_dict(line) for key, line in report.program_stats.items()}
            if with_programs
            else {}
        ),
    }
    # The Go tool's order: these totals, num_programs, the duration; then every other total.
    data |= {name: totals[name] for name in _LEADING_TOTALS if name in totals}
    data["num_programs"] = report.num_programs
    data["collection_duration_ns"] = report.collection_duration_ns
    data["total_recursion_misses"] = totals.get("total_recursion_misses", 0)
    data |= {name: value for name, value in totals.items() if name not in data}
    data |= {
        "schema_version": report.schema_version,
        "generator": report.generator,
        "requested_duration_ns": report.requested_duration_ns,
        "interval_ns": report.interval_ns,
        "start_time": report.start_time,
        "end_time": report.end_time,
        "snapshots": report.snapshots,
        "online_cpus": report.online_cpus,
        "kernel_release": report.kernel_release,
        "stats_enabled_by": report.stats_enabled_by,
        "stopped_by": report.stopped_by,
        "filter": None if report.filter is None else dict(report.filter),
    }
    if report.programs_left_out is not None:
        data["programs_left_out"] = report.programs_left_out
    if report.node is not None:
        data["node"] = report.node
    if report.peak_cpu_percent_at is not None:
        data["peak_cpu_percent_at"] = report.peak_cpu_percent_at
    if report.snapshot_method is not None:
        data["snapshot_method"] = report.snapshot_method
    if report.unavailable_counters is not None:
        data["unavailable_counters"] = list(report.unavailable_counters)
    apart = report.kstat_programs
    if apart is not None:
        data["kstat_programs"] = kstat_programs_to_dict(apart)
    if report.program_keys is not None:
        data["program_keys"] = report.program_keys
        data["colliding_keys"] = list(report.colliding_keys or ())
    if report.owners is not None:
        data["owners"] = owners_to_dict(report.owners)
    achieved = report.achieved_interval
    if achieved is not None:
        data["achieved_interval"] = {
            "p50_ns": achieved.p50_ns,
            "p99_ns": achieved.p99_ns,
            "max_ns": achieved.max_ns,
            "slipped": achieved.slipped,
        }
        if achieved.startup_ns is not None:
            data["achieved_interval"]["startup_ns"] = achieved.startup_ns
    return data


def kstat_programs_to_dict(apart: KstatPrograms) -> dict[str, Any]:
    """`{"programs": N, "runtime_ns": ..., ...}`: the count, then the metrics in catalogue order."""
    data: dict[str, Any] = {"programs": apart.programs}
    for metric in METRICS:
        value = apart.metrics.get(metric.name)
        if value is not None:
            data[metric.name] = _json_number(metric, value)
    return data


def _owner_number(metric: OwnerMetric, value: Number) -> Number:
    return int(value) if metric.integral else float(value)


def owner_metrics_to_dict(metrics: Mapping[str, Number]) -> dict[str, Number]:
    """An owner's (or a group's) metrics in the owner catalogue's order."""
    return {
        metric.name: _owner_number(metric, metrics[metric.name])
        for metric in OWNER_METRICS
        if metrics.get(metric.name) is not None
    }


def owner_cost_to_dict(cost: OwnerCost) -> dict[str, Any]:
    """One owner: who (as a program's owners say it), its programs, then its whole cost."""
    data = owner_to_dict(cost.owner)
    data["program_ids"] = list(cost.program_ids)
    if cost.shared_program_ids:
        data["shared_program_ids"] = list(cost.shared_program_ids)
    if cost.gone:
        data["gone"] = True
    if cost.unread:
        data["unread"] = True
    return data | owner_metrics_to_dict(cost.metrics)


def owners_to_dict(section: OwnersSection) -> dict[str, Any]:
    """`{"processes": [...], "groups": [...], "total": {...}}`."""
    return {
        "processes": [owner_cost_to_dict(cost) for cost in section.owners],
        "groups": [
            {
                "by": group.by,
                "name": group.name,
                "pids": list(group.pids),
                **owner_metrics_to_dict(group.metrics),
            }
            for group in section.groups
        ],
        "total": owner_metrics_to_dict(section.total),
    }


# --- reading --------------------------------------------------------------------------------


# The largest number a report holds: a u64 counter's. Sums over 10,000 programs stay finite.
_LARGEST: Final = 2**64


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:19] + "…"
        return f"a string ({json.dumps(shown, ensure_ascii=False)})"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _where(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _whole(value: Any, where: str) -> int:
    """A count, an id, a size, a time: whole, not negative, and within 64 bits (the kernel's
    counters are u64), so that no sum of a report's numbers can overflow."""
    # JSON has one number type: 12.0 is a whole number too (a float64 that a tool wrote).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected a whole number")
    if isinstance(value, float) and not value.is_integer():
        raise ReportFormatError(f"{where} is {value!r}, expected a whole number")
    if not 0 <= value <= _LARGEST:
        raise ReportFormatError(f"{where} is {value!r}, expected a whole number from 0 to 2^64")
    return int(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected a number")
    if not -_LARGEST <= value <= _LARGEST:
        raise ReportFormatError(f"{where} is {value!r}, beyond any number a report holds (2^64)")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected a string")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected true or false")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected an object")
    return value


def _required(data: dict[str, Any], name: str, path: str) -> Any:
    if name not in data:
        raise ReportFormatError(f"no {_where(path, name)}")
    return data[name]


def _optional(data: dict[str, Any], name: str, path: str, read: Any) -> Any:
    value = data.get(name)
    return None if value is None else read(value, _where(path, name))


def _metric_value(metric: Metric, value: Any, where: str) -> Number:
    return _whole(value, where) if metric.integral else _number(value, where)


def _owners(value: Any, where: str) -> tuple[ProgramOwner, ...]:
    if not isinstance(value, list):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected a list")
    owners = []
    for index, item in enumerate(value):
        entry = _object(item, f"{where}[{index}]")
        place = f"{where}[{index}]"
        workload = Workload(**{name: _optional(entry, name, place, _text) for name in WORKLOAD_FIELDS})
        owners.append(
            ProgramOwner(
                pid=_whole(_required(entry, "pid", place), f"{place}.pid"),
                command=_text(entry.get("command", ""), f"{place}.command"),
                workload=workload,
            )
        )
    return tuple(owners)


def _whole_numbers(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected a list")
    return tuple(_whole(item, f"{where}[{index}]") for index, item in enumerate(value))


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected a list")
    return tuple(_text(item, f"{where}[{index}]") for index, item in enumerate(value))


def program_from_dict(data: Any, path: str) -> ProgramReport:
    """One program's line, from a report or an NDJSON interval line; `path` names it in errors."""
    line = _object(data, path)
    metrics: dict[str, Number] = {}
    for metric in METRICS:
        value = line.get(metric.name)
        if value is None:
            if metric.seed:
                raise ReportFormatError(f"no {_where(path, metric.name)}")
            continue
        metrics[metric.name] = _metric_value(metric, value, _where(path, metric.name))
    return ProgramReport(
        name=_text(_required(line, "name", path), _where(path, "name")),
        type=_text(_required(line, "type", path), _where(path, "type")),
        id=_whole(_required(line, "id", path), _where(path, "id")),
        metrics=metrics,
        tag=_optional(line, "tag", path, _text),
        load_time_ns=_optional(line, "load_time_ns", path, _whole),
        kernel_name=_optional(line, "kernel_name", path, _text),
        loaded_during_window=_optional(line, "loaded_during_window", path, _flag),
        unloaded_during_window=_optional(line, "unloaded_during_window", path, _flag),
        window_coverage_percent=_optional(line, "window_coverage_percent", path, _number),
        peak_cpu_percent_at=_optional(line, "peak_cpu_percent_at", path, _text),
        owners=_optional(line, "owners", path, _owners) or (),
        attachments=_optional(line, "attachments", path, _texts) or (),
        map_ids=_optional(line, "map_ids", path, _whole_numbers),
        per_cpu=_optional(line, "per_cpu", path, _per_cpu),
    )


def _per_cpu(value: Any, where: str) -> dict[int, dict[str, int]]:
    """`{"0": {"run_count": 5, "runtime_ns": 900}, ...}`: CPU numbers as text, whole counts."""
    found: dict[int, dict[str, int]] = {}
    for cpu, counts in _object(value, where).items():
        place = f"{where}.{cpu}"
        if not (cpu.isascii() and cpu.isdigit() and len(cpu) <= 5):
            raise ReportFormatError(f"{place} is not a CPU number")
        found[int(cpu)] = {
            name: _whole(count, f"{place}.{name}") for name, count in _object(counts, place).items()
        }
    return found


def programs_from_dict(data: Any, path: str = "program_stats") -> dict[str, ProgramReport]:
    found = _object(data, path)
    return {
        key: program_from_dict(line, f'{path}["{key}"]' if not key.isidentifier() else f"{path}.{key}")
        for key, line in found.items()
    }


def _collection_duration_ns(data: dict[str, Any]) -> int:
    """The window's length; 0 when the report does not give it (`Report.window_known`)."""
    if data.get("collection_duration_ns") is not None:
        return _whole(data["collection_duration_ns"], "collection_duration_ns")
    if data.get("collection_duration_sec") is not None:
        # The Go tool's first version: the window in seconds, as a float64, never set (so 0).
        return round(_number(data["collection_duration_sec"], "collection_duration_sec") * NS_PER_S)
    return 0


def _structure_report(data: Any, _: type) -> Report:
    report = _object(data, "the top level")
    if "program_stats" not in report:
        raise ReportFormatError("no program_stats")
    lines = programs_from_dict(report["program_stats"])
    elapsed_ns = _collection_duration_ns(report)
    online_cpus = _optional(report, "online_cpus", "", _whole)
    # Totals absent from the file are computed from its programs (same formulas).
    totals: dict[str, Number] = total_values(
        summed(line.counters for line in lines.values()), elapsed_ns, online_cpus
    )
    for metric in METRICS:
        value = report.get(metric.total_name)
        if value is not None:
            totals[metric.name] = _metric_value(metric, value, metric.total_name)
    program_filter = report.get("filter")
    return Report(
        timestamp=_optional(report, "timestamp", "", _text) or "",
        program_stats=lines,
        totals=totals,
        num_programs=_optional(report, "num_programs", "", _whole) or len(lines),
        collection_duration_ns=elapsed_ns,
        schema_version=_optional(report, "schema_version", "", _whole),
        generator=_optional(report, "generator", "", _text),
        requested_duration_ns=_optional(report, "requested_duration_ns", "", _whole),
        interval_ns=_optional(report, "interval_ns", "", _whole),
        start_time=_optional(report, "start_time", "", _text),
        end_time=_optional(report, "end_time", "", _text),
        snapshots=_optional(report, "snapshots", "", _whole),
        online_cpus=online_cpus,
        kernel_release=_optional(report, "kernel_release", "", _text),
        stats_enabled_by=_optional(report, "stats_enabled_by", "", _text),
        snapshot_method=_optional(report, "snapshot_method", "", _text),
        stopped_by=_optional(report, "stopped_by", "", _text),
        filter=None if program_filter is None else _object(program_filter, "filter"),
        programs_left_out=_optional(report, "programs_left_out", "", _whole),
        node=_optional(report, "node", "", _text),
        peak_cpu_percent_at=_optional(report, "peak_cpu_percent_at", "", _text),
        unavailable_counters=_optional(report, "unavailable_counters", "", _texts),
        achieved_interval=_optional(report, "achieved_interval", "", _achieved_interval),
        kstat_programs=_optional(report, "kstat_programs", "", _kstat_programs),
        program_keys=_optional(report, "program_keys", "", _text),
        colliding_keys=_optional(report, "colliding_keys", "", _texts),
        owners=_optional(report, "owners", "", _owners_section),
    )


def _owner_metrics(data: dict[str, Any], where: str) -> dict[str, Number]:
    return {
        metric.name: (
            _whole(data[metric.name], _where(where, metric.name))
            if metric.integral
            else _number(data[metric.name], _where(where, metric.name))
        )
        for metric in OWNER_METRICS
        if data.get(metric.name) is not None
    }


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ReportFormatError(f"{where} is {_kind_of(value)}, expected a list")
    return value


def _owners_section(value: Any, where: str) -> OwnersSection:
    data = _object(value, where)
    place = _where(where, "processes")
    costs = []
    for index, item in enumerate(_list(data.get("processes", []), place)):
        at = f"{place}[{index}]"
        entry = _object(item, at)
        (owner,) = _owners([entry], place)
        costs.append(
            OwnerCost(
                pid=owner.pid,
                command=owner.command,
                workload=owner.workload,
                program_ids=_optional(entry, "program_ids", at, _whole_numbers) or (),
                shared_program_ids=_optional(entry, "shared_program_ids", at, _whole_numbers) or (),
                gone=_optional(entry, "gone", at, _flag) or False,
                unread=_optional(entry, "unread", at, _flag) or False,
                metrics=_owner_metrics(entry, at),
            )
        )
    groups = []
    place = _where(where, "groups")
    for index, item in enumerate(_list(data.get("groups", []), place)):
        at = f"{place}[{index}]"
        entry = _object(item, at)
        groups.append(
            OwnerGroupCost(
                by=_text(_required(entry, "by", at), _where(at, "by")),
                name=_text(_required(entry, "name", at), _where(at, "name")),
                pids=_optional(entry, "pids", at, _whole_numbers) or (),
                metrics=_owner_metrics(entry, at),
            )
        )
    total = _optional(data, "total", where, _object) or {}
    return OwnersSection(tuple(costs), tuple(groups), _owner_metrics(total, _where(where, "total")))


def _kstat_programs(value: Any, where: str) -> KstatPrograms:
    data = _object(value, where)
    metrics = {
        metric.name: _metric_value(metric, data[metric.name], _where(where, metric.name))
        for metric in METRICS
        if data.get(metric.name) is not None
    }
    return KstatPrograms(_whole(_required(data, "programs", where), _where(where, "programs")), metrics)


def _achieved_interval(value: Any, where: str) -> AchievedInterval:
    data = _object(value, where)
    return AchievedInterval(
        **{
            name: _whole(_required(data, name, where), _where(where, name))
            for name in _ACHIEVED_FIELDS
            if name != "startup_ns"
        },
        startup_ns=_optional(data, "startup_ns", where, _whole),
    )


@functools.cache
def _converter() -> cattrs.Converter:
    """The one converter, made on first use: writing a report by the streaming encoder (what
    the collecting commands do) never needs it, nor cattrs' import."""
    import cattrs  # noqa: PLC0415

    converter = cattrs.Converter()
    converter.register_unstructure_hook(Report, _unstructure_report)
    converter.register_unstructure_hook(ProgramReport, program_to_dict)
    converter.register_structure_hook(Report, _structure_report)
    return converter


def report_to_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data: the Go tool's fields first, programs by key."""
    data: dict[str, Any] = _converter().unstructure(report)
    return data


def report_from_dict(data: Any) -> Report:
    """A report from JSON data that any kstat version or the Go tool wrote.

    Raises ReportFormatError, naming the field, for data that is not a report.
    """
    report: Report = _converter().structure(data, Report)
    return report


def report_to_json(report: Report) -> str:
    """Indented JSON with a final newline, as the Go tool's MarshalIndent printed it."""
    return report_to_json_bytes(report).decode()


def report_to_json_bytes(report: Report) -> bytes:
    """`report_to_json`'s text in UTF-8, for a file or a pipe."""
    return b"".join(report_json_chunks(report))


# Where the programs go in the report's own fields, encoded first without them; and how a batch
# of lines nested under a key of the top-level object starts and ends: (indented, compact).
_PROGRAMS_PLACE: Final = (b'"program_stats": {}', b'"program_stats":{}')
_BATCH_HEAD: Final = (b'{\n  "": {\n', b'{"":{')
_BATCH_TAIL: Final = (b"\n  }\n}", b"}}")
_BATCH_SEPARATOR: Final = (b",\n", b",")
_PROGRAMS_END: Final = (b"\n  }", b"}")
# Lines encoded per call: few enough that their objects stay small beside the report's (at
# 10,000 programs, batches of 256 took 1 MB more of the peak RSS than these).
_BATCH_PROGRAMS: Final = 64


def report_json_chunks(report: Report) -> Iterator[bytes]:
    """The report's JSON (`report_to_json`) piece by piece, a batch of lines at a time, by a C
    encoder: a report of 10,000 programs is 12 MB of JSON, and neither it nor every line's
    object is ever held whole (json's indenting encoder is pure Python, and held a million
    small strings)."""
    yield from _chunks(_unstructure_report(report, with_programs=False), report, indented=True)
    yield b"\n"


def report_line_chunks(report: Report, first: Mapping[str, Any]) -> Iterator[bytes]:
    """The report as one compact JSON object, `first`'s fields before its own (an NDJSON
    stream's last line, without its newline), piece by piece as `report_json_chunks`."""
    yield from _chunks({**first, **_unstructure_report(report, with_programs=False)}, report, indented=False)


def _chunks(fields: dict[str, Any], report: Report, *, indented: bool) -> Iterator[bytes]:
    style = 0 if indented else 1
    option = orjson.OPT_INDENT_2 if indented else 0
    place = _PROGRAMS_PLACE[style]
    head, _, tail = orjson.dumps(_long_numbers_encoded(fields, indented), option=option).partition(place)
    if not report.program_stats:
        yield head + place + tail
        return
    yield head + place[:-1] + (b"\n" if indented else b"")
    encode = LineEncoder().row
    lines = line_rows(report.program_stats)
    separator = b""
    start, end = len(_BATCH_HEAD[style]), -len(_BATCH_TAIL[style])
    while batch := dict(itertools.islice(lines, _BATCH_PROGRAMS)):
        # A batch's lines in one call of the C encoder, nested as in the report (under a key
        # of the top-level object), so that it indents them as the whole report would be.
        encoded = orjson.dumps({"": {key: encode(row) for key, row in batch.items()}}, option=option)
        yield separator + encoded[start:end]
        separator = _BATCH_SEPARATOR[style]
    yield _PROGRAMS_END[style] + tail


# The longest list of whole numbers the C encoder is given as it is (an owner's program ids
# can be 10,000): for one of n numbers it reserves about 200 n bytes, 2 MB at 10,000 where the
# JSON is 0.1 MB.
_ENCODED_WHOLE_AT: Final = 512
_NUMBERS_A_JOIN: Final = 1024


def _long_numbers_encoded(fields: dict[str, Any], indented: bool) -> dict[str, Any]:
    """A copy of `fields` (the report's own, without its lines) with each long list of whole
    numbers in it replaced by its JSON, as the encoder would have written it there. A copy:
    some of what `fields` holds may be the report's own."""

    def walk(value: Any, level: int) -> Any:
        # `level`: how deep the value's members are indented (the report's own fields: 1).
        if isinstance(value, dict):
            return {key: walk(member, level + 1) for key, member in value.items()}
        if isinstance(value, list):
            if len(value) >= _ENCODED_WHOLE_AT and all(type(number) is int for number in value):
                return orjson.Fragment(_numbers_json(value, level, indented))
            return [walk(member, level + 1) for member in value]
        return value

    encoded: dict[str, Any] = walk(fields, 1)
    return encoded


def _numbers_json(numbers: list[int], level: int, indented: bool) -> str:
    """A list of whole numbers as orjson writes it (indented: one a line, its members at
    `level`), joined a slice at a time (never a string object for every number at once)."""
    separator = ",\n" + "  " * level if indented else ","
    joined = separator.join(
        separator.join(map(str, numbers[start : start + _NUMBERS_A_JOIN]))
        for start in range(0, len(numbers), _NUMBERS_A_JOIN)
    )
    if not indented:
        return f"[{joined}]"
    return f"[\n{'  ' * level}{joined}\n{'  ' * (level - 1)}]"


def report_from_json(text: str) -> Report:
    """A report from JSON text; ReportFormatError says where the text stops being JSON."""
    # Bounded: no NaN, no number a report cannot hold, no nesting deeper than a report's.
    return report_from_dict(parse_json(text, ReportFormatError))
