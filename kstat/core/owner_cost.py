"""An owner's whole cost: the CPU and memory of each process holding programs, beside its
programs' kernel CPU, declared once.

Two small catalogues, in the style of the program ones (`kstat.core.counters`,
`kstat.core.catalogue`):

- `ProcessCounters`, the owner-counter catalogue: what kstat reads of a process from
  /proc/PID/stat and /proc/PID/status, each field declared with its `ProcessCounterSpec`
  (where it is read, its unit, whether it is cumulative or a level);
- `OWNER_METRICS`, the owner-metric catalogue: every figure an `owners` section, NDJSON,
  Prometheus, StatsD, `kstat top`, compare, `--fail-on` and `kstat plot` show of an owner, with
  its formula over an `OwnerSpan`.

Who pays for a program several processes hold: each of them, in full. An owner's kernel CPU is
what every program it holds cost, whether or not others hold it too (it is what the owner keeps
running); the owner lists those programs as shared. A total (per container, pod, unit, or of
the whole section) counts each program once, so totals add up to the kernel's own figures.

Pure: no /proc here (`kstat.sources.process_usage` reads it), no clock.
"""

from __future__ import annotations

import enum
import typing
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Annotated, Final, NamedTuple, Protocol

from attrs import field, frozen

from kstat.core.catalogue import NS_PER_S, Better, Exposition, Number
from kstat.core.counters import ZERO, Counters, scalar
from kstat.core.model import NO_WORKLOAD, ProgramOwner, Workload
from kstat.core.sighting import total_growth


@frozen
class ProcessCounterSpec:
    """What one figure read of a process is."""

    name: str
    # Where the kernel says it: `/proc/PID/stat utime`, `/proc/PID/status VmRSS`.
    source: str
    unit: str
    description: str
    # Cumulative (CPU time: its growth over a span is what the span used) or a level (memory:
    # the last reading is what it is).
    cumulative: bool


_USER_TIME: Final = ProcessCounterSpec(
    "user_time_ns", "/proc/PID/stat utime", "ns", "CPU time the process spent in user mode", True
)
_SYSTEM_TIME: Final = ProcessCounterSpec(
    "system_time_ns",
    "/proc/PID/stat stime",
    "ns",
    "CPU time the process spent in the kernel on its own behalf (its system calls)",
    True,
)
_RSS: Final = ProcessCounterSpec(
    "rss_bytes", "/proc/PID/status VmRSS", "bytes", "resident memory of the process", False
)
_PEAK_RSS: Final = ProcessCounterSpec(
    "peak_rss_bytes",
    "/proc/PID/status VmHWM",
    "bytes",
    "the most resident memory the process ever had",
    False,
)


class ProcessCounters(NamedTuple):
    """One process's figures at one reading (or, for the cumulative ones, their growth)."""

    user_time_ns: Annotated[int, _USER_TIME]
    system_time_ns: Annotated[int, _SYSTEM_TIME]
    # None where /proc/PID/status does not say (a zombie, a kernel thread).
    rss_bytes: Annotated[int | None, _RSS] = None
    peak_rss_bytes: Annotated[int | None, _PEAK_RSS] = None


@cache
def _declared() -> tuple[ProcessCounterSpec, ...]:
    hints = typing.get_type_hints(ProcessCounters, include_extras=True)
    specs = []
    for field_name in ProcessCounters._fields:
        metadata = getattr(hints[field_name], "__metadata__", ())
        spec = next((item for item in metadata if isinstance(item, ProcessCounterSpec)), None)
        if spec is None or spec.name != field_name:
            raise AssertionError(f"ProcessCounters.{field_name} is not declared with its spec")
        specs.append(spec)
    return tuple(specs)


PROCESS_COUNTERS: Final[tuple[ProcessCounterSpec, ...]] = _declared()
NO_USAGE: Final = ProcessCounters(0, 0)


def process_grown(last: ProcessCounters, baseline: ProcessCounters) -> ProcessCounters:
    """The cumulative figures' growth from `baseline` to `last` (never below 0), the levels as
    `last` has them."""
    return ProcessCounters._make(
        max(0, value - before) if spec.cumulative and value is not None and before is not None else value
        for spec, value, before in zip(PROCESS_COUNTERS, last, baseline, strict=True)
    )


def process_added(first: ProcessCounters, second: ProcessCounters) -> ProcessCounters:
    """Two processes' figures together (a group's); a level either lacks is left out (None)."""
    return ProcessCounters._make(
        None if one is None or other is None else one + other
        for one, other in zip(first, second, strict=True)
    )


@frozen
class ProcessUsage:
    """One reading of one process, as /proc gave it in the details stage."""

    pid: int
    # CLOCK_BOOTTIME when it started (/proc/PID/stat starttime): with the pid, what tells one
    # process from a later one given the same pid.
    start_boottime_ns: int
    counters: ProcessCounters


@frozen
class OwnerSpan:
    """What an owner metric is computed from."""

    # The cumulative figures' growth over the span, the levels at its end.
    process: ProcessCounters
    # The summed growth of the counters of the programs it holds.
    kernel: Counters
    elapsed_ns: int
    programs: int


class OwnerKind(enum.Enum):
    # Used over the span: a group's is the sum of its members'.
    COUNTER = "counter"
    # A rate over the span: recomputed from the counters.
    GAUGE = "gauge"
    # A level at the span's end (memory), or a count.
    LEVEL = "level"


@frozen
class OwnerMetric:
    name: str
    kind: OwnerKind
    unit: str
    title: str
    heading: str
    description: str
    formula: str
    compute: Callable[[OwnerSpan], Number | None]
    integral: bool
    better: Better = Better.LOWER
    # In the Prometheus exposition (per owner), None: not there.
    prometheus: Exposition | None = None

    def value(self, span: OwnerSpan) -> Number | None:
        return self.compute(span)


def _process_cpu_ns(span: OwnerSpan) -> int:
    return span.process.user_time_ns + span.process.system_time_ns


def _kernel_cpu_ns(span: OwnerSpan) -> int:
    return scalar(span.kernel.run_time_ns) or 0


def _whole_cpu_ns(span: OwnerSpan) -> int:
    return _process_cpu_ns(span) + _kernel_cpu_ns(span)


def _percent(read: Callable[[OwnerSpan], int]) -> Callable[[OwnerSpan], float]:
    def compute(span: OwnerSpan) -> float:
        return read(span) * 100 / span.elapsed_ns if span.elapsed_ns > 0 else 0.0

    return compute


OWNER_METRICS: Final[tuple[OwnerMetric, ...]] = (
    OwnerMetric(
        name="whole_cpu_percent",
        kind=OwnerKind.GAUGE,
        unit="% of one CPU",
        title="Whole CPU (process + its programs)",
        heading="whole CPU %",
        description="the owner's whole cost: its own CPU and its programs' kernel CPU, as a share of one CPU",
        formula="`(process_cpu_ns + kernel_cpu_ns) / elapsed_ns × 100`",
        compute=_percent(_whole_cpu_ns),
        integral=False,
        prometheus=None,
    ),
    OwnerMetric(
        name="process_cpu_percent",
        kind=OwnerKind.GAUGE,
        unit="% of one CPU",
        title="Process CPU (user space)",
        heading="process CPU %",
        description="CPU the owner process itself used (user and system time), as a share of one CPU",
        formula="`process_cpu_ns / elapsed_ns × 100`",
        compute=_percent(_process_cpu_ns),
        integral=False,
    ),
    OwnerMetric(
        name="kernel_cpu_percent",
        kind=OwnerKind.GAUGE,
        unit="% of one CPU",
        title="Its programs' kernel CPU",
        heading="programs CPU %",
        description="CPU its programs used in the kernel, as a share of one CPU",
        formula="`kernel_cpu_ns / elapsed_ns × 100`",
        compute=_percent(_kernel_cpu_ns),
        integral=False,
    ),
    OwnerMetric(
        name="whole_cpu_ns",
        kind=OwnerKind.COUNTER,
        unit="ns",
        title="Whole CPU time",
        heading="whole CPU (ns)",
        description="the owner's own CPU time and its programs' run time",
        formula="`process_cpu_ns + kernel_cpu_ns`",
        compute=_whole_cpu_ns,
        integral=True,
        prometheus=Exposition(
            "kstat_owner_whole_cpu_seconds", NS_PER_S, "CPU time of the owner process and of its programs"
        ),
    ),
    OwnerMetric(
        name="process_cpu_ns",
        kind=OwnerKind.COUNTER,
        unit="ns",
        title="Process CPU time",
        heading="process CPU (ns)",
        description="CPU time the owner process used, user and system",
        formula="`user_time_ns + system_time_ns`",
        compute=_process_cpu_ns,
        integral=True,
        prometheus=Exposition(
            "kstat_owner_process_cpu_seconds", NS_PER_S, "CPU time the owner process used (user and system)"
        ),
    ),
    OwnerMetric(
        name="user_time_ns",
        kind=OwnerKind.COUNTER,
        unit="ns",
        title="User time",
        heading="user (ns)",
        description=_USER_TIME.description,
        formula="`utime(end) − utime(start)` of /proc/PID/stat, in nanoseconds",
        compute=lambda span: span.process.user_time_ns,
        integral=True,
        prometheus=Exposition("kstat_owner_user_seconds", NS_PER_S, "CPU time the owner spent in user mode"),
    ),
    OwnerMetric(
        name="system_time_ns",
        kind=OwnerKind.COUNTER,
        unit="ns",
        title="System time",
        heading="system (ns)",
        description=_SYSTEM_TIME.description,
        formula="`stime(end) − stime(start)` of /proc/PID/stat, in nanoseconds",
        compute=lambda span: span.process.system_time_ns,
        integral=True,
        prometheus=Exposition(
            "kstat_owner_system_seconds", NS_PER_S, "CPU time the owner spent in its system calls"
        ),
    ),
    OwnerMetric(
        name="kernel_cpu_ns",
        kind=OwnerKind.COUNTER,
        unit="ns",
        title="Its programs' run time",
        heading="programs CPU (ns)",
        description="run time of the programs it holds (a program several hold is charged to each)",
        formula="`Σ runtime_ns` of the programs it holds",
        compute=_kernel_cpu_ns,
        integral=True,
        prometheus=Exposition(
            "kstat_owner_kernel_cpu_seconds", NS_PER_S, "Run time of the programs the owner holds"
        ),
    ),
    OwnerMetric(
        name="rss_bytes",
        kind=OwnerKind.LEVEL,
        unit="bytes",
        title="Resident memory",
        heading="RSS (B)",
        description="its resident memory at the end of the span (at its last reading, if it exited)",
        formula="`VmRSS` of /proc/PID/status",
        compute=lambda span: span.process.rss_bytes,
        integral=True,
        prometheus=Exposition("kstat_owner_rss_bytes", help="Resident memory of the owner process"),
    ),
    OwnerMetric(
        name="peak_rss_bytes",
        kind=OwnerKind.LEVEL,
        unit="bytes",
        title="Peak resident memory",
        heading="peak RSS (B)",
        description=_PEAK_RSS.description,
        formula="`VmHWM` of /proc/PID/status",
        compute=lambda span: span.process.peak_rss_bytes,
        integral=True,
        prometheus=Exposition(
            "kstat_owner_peak_rss_bytes", help="The most resident memory the owner process had"
        ),
    ),
    OwnerMetric(
        name="programs",
        kind=OwnerKind.LEVEL,
        unit="programs",
        title="Programs held",
        heading="programs",
        description="programs it holds",
        formula="its programs, counted",
        compute=lambda span: span.programs,
        integral=True,
        better=Better.NEITHER,
        prometheus=Exposition("kstat_owner_programs", help="Programs the owner process holds"),
    ),
)


def owner_metric(name: str) -> OwnerMetric:
    """The owner metric called `name`; KeyError names the known ones."""
    for entry in OWNER_METRICS:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown owner metric {name!r}; owner metrics: {', '.join(owner_metric_names())}")


def owner_metric_names() -> tuple[str, ...]:
    return tuple(entry.name for entry in OWNER_METRICS)


def owner_values(span: OwnerSpan) -> dict[str, Number]:
    found: dict[str, Number] = {}
    for entry in OWNER_METRICS:
        value = entry.compute(span)
        if value is not None:
            found[entry.name] = value
    return found


def counters_of_owner(metrics: Mapping[str, Number]) -> tuple[ProcessCounters, int, int]:
    """(process figures, kernel run time, programs) back from an owner's metrics (a report read
    back), so that groups of read owners are computed by the same formulas."""

    def whole(name: str) -> int | None:
        value = metrics.get(name)
        return None if value is None else int(value)

    process = ProcessCounters(
        whole("user_time_ns") or 0,
        whole("system_time_ns") or 0,
        whole("rss_bytes"),
        whole("peak_rss_bytes"),
    )
    return process, whole("kernel_cpu_ns") or 0, whole("programs") or 0


# --- the report's section ------------------------------------------------------------------


@frozen
class OwnerCost:
    """One owner process over the window: who, its programs, and its whole cost."""

    pid: int
    command: str
    workload: Workload = NO_WORKLOAD
    # The ids of the programs it holds, and of those among them other processes hold too.
    program_ids: tuple[int, ...] = ()
    shared_program_ids: tuple[int, ...] = ()
    # Not read at the window's end (it exited, or let go of its programs, inside the window):
    # its figures are those of its last reading, what it had used until then.
    gone: bool = False
    # No /proc reading of it (gone before the first): its own CPU and memory are unknown.
    unread: bool = False
    metrics: Mapping[str, Number] = field(factory=dict)

    @property
    def owner(self) -> ProgramOwner:
        return ProgramOwner(self.pid, self.command, self.workload)

    @property
    def label(self) -> str:
        return f"{self.pid}/{self.command}"


GROUPINGS: Final = ("container", "pod", "unit")


@frozen
class OwnerGroupCost:
    """The owners of one container, pod or systemd unit together (a program counted once)."""

    by: str
    name: str
    pids: tuple[int, ...]
    metrics: Mapping[str, Number]


@frozen
class OwnersSection:
    """The report's `owners`: each owner's whole cost, the groups', and all of them together."""

    owners: tuple[OwnerCost, ...]
    groups: tuple[OwnerGroupCost, ...] = ()
    total: Mapping[str, Number] = field(factory=dict)

    def of_command(self, command: str) -> tuple[OwnerCost, ...]:
        return tuple(owner for owner in self.owners if owner.command == command)


def group_name(workload: Workload, by: str) -> str | None:
    """The container, pod or unit a workload names (None: it names none)."""
    if by == "unit":
        return workload.unit
    if workload.pod is None and workload.pod_uid is None and workload.container_id is None:
        return None
    namespace = workload.namespace or "?"
    pod = workload.pod or workload.pod_uid
    if by == "pod":
        return f"{namespace}/{pod}" if pod is not None else None
    container = workload.container_name or (workload.container_id or "?")[:12]
    return f"{namespace}/{pod or '?'}/{container}"


@frozen
class HeldProgram:
    """A program of the window as the owners section needs it: its id, owners and growth."""

    id: int
    owners: tuple[ProgramOwner, ...]
    grown: Counters


@frozen
class ProcessSpan:
    """What the window saw of one process: its baseline and last reading, whether it exited."""

    baseline: ProcessCounters
    last: ProcessCounters
    gone: bool = False


class Held(Protocol):
    """A program as the owners section needs it (a `HeldProgram`, or a window's `Sighting`
    itself: at 10,000 programs no object is made for each)."""

    @property
    def id(self) -> int: ...

    @property
    def owners(self) -> tuple[ProgramOwner, ...]: ...

    @property
    def grown(self) -> Counters: ...


def owners_section(
    programs: Iterable[Held],
    processes: Mapping[int, ProcessSpan],
    elapsed_ns: int,
) -> OwnersSection | None:
    """Every owner's whole cost over the window, from its programs' growth and its processes'
    readings (by pid); None when no program has an owner."""
    held: dict[int, list[Held]] = defaultdict(list)
    owner_of: dict[int, ProgramOwner] = {}
    for program in programs:
        for owner in program.owners:
            held[owner.pid].append(program)
            owner_of.setdefault(owner.pid, owner)
    if not held:
        return None
    costs = []
    kernel_by_pid: dict[int, Counters] = {}
    for pid in sorted(held):
        owner, mine = owner_of[pid], held[pid]
        seen = processes.get(pid)
        process = NO_USAGE if seen is None else process_grown(seen.last, seen.baseline)
        kernel = kernel_by_pid[pid] = total_growth(program.grown for program in mine)
        span = OwnerSpan(process, kernel, elapsed_ns, len(mine))
        costs.append(
            OwnerCost(
                pid=pid,
                command=owner.command,
                workload=owner.workload,
                program_ids=tuple(sorted(program.id for program in mine)),
                shared_program_ids=tuple(sorted(program.id for program in mine if len(program.owners) > 1)),
                gone=seen is not None and seen.gone,
                unread=seen is None,
                metrics=owner_values(span),
            )
        )
    kernel_of = _ProgramGrowth(held, kernel_by_pid)
    groups = []
    for by in GROUPINGS:
        members: dict[str, list[OwnerCost]] = defaultdict(list)
        for cost in costs:
            name = group_name(cost.workload, by)
            if name is not None:
                members[name].append(cost)
        for name in sorted(members):
            groups.append(
                OwnerGroupCost(
                    by,
                    name,
                    tuple(cost.pid for cost in members[name]),
                    _together(members[name], kernel_of, elapsed_ns),
                )
            )
    return OwnersSection(tuple(costs), tuple(groups), _together(costs, kernel_of, elapsed_ns))


class _ProgramGrowth:
    """The owners' programs' growth: each owner's summed already, and each program's, by id,
    gathered only when owners are put together (one dict entry a program: at 10,000 programs
    held by one agent, the owner, its groups and the total are that one owner's sum)."""

    def __init__(self, held: Mapping[int, list[Held]], by_owner: Mapping[int, Counters]) -> None:
        self._held, self.by_owner = held, by_owner
        self._by_id: dict[int, Counters] | None = None

    def of(self, program_id: int) -> Counters:
        if self._by_id is None:
            self._by_id = {
                program.id: program.grown
                for programs_held in self._held.values()
                for program in programs_held
            }
        return self._by_id.get(program_id, ZERO)


def _together(costs: Sequence[OwnerCost], kernel_of: _ProgramGrowth, elapsed_ns: int) -> dict[str, Number]:
    """Several owners' metrics as one: their processes' figures added, each program they hold
    counted once."""
    process = NO_USAGE
    ids: set[int] = set()
    for cost in costs:
        own, _, _ = counters_of_owner(cost.metrics)
        process = process_added(process, own)
        ids.update(cost.program_ids)
    if len(costs) == 1 and len(ids) == len(costs[0].program_ids):
        # One owner (each of its programs once): its own growth, summed already.
        kernel = kernel_of.by_owner[costs[0].pid]
    else:
        kernel = total_growth(kernel_of.of(program_id) for program_id in sorted(ids))
    return owner_values(OwnerSpan(process, kernel, elapsed_ns, len(ids)))


def interval_spans(
    previous: Iterable[ProcessUsage], current: Iterable[ProcessUsage]
) -> dict[int, ProcessSpan]:
    """Each process's span between two snapshots' readings (by pid): a process first read in
    `current`, or a pid now another process's, spans nothing yet."""
    before = {usage.pid: usage for usage in previous}
    spans = {}
    for usage in current:
        earlier = before.get(usage.pid)
        baseline = (
            earlier.counters
            if earlier is not None and earlier.start_boottime_ns == usage.start_boottime_ns
            else usage.counters
        )
        spans[usage.pid] = ProcessSpan(baseline, usage.counters)
    return spans


OWNER_TABLE_START: Final = "<!-- owner metrics: generated from kstat.core.owner_cost; tests keep it so -->"
OWNER_TABLE_END: Final = "<!-- end of owner metrics -->"


def owner_markdown_table() -> str:
    """docs/report.md's table of owner metrics, from the owner catalogue."""
    lines = ["| metric | what it is | unit | formula |", "| --- | --- | --- | --- |"]
    lines += [
        f"| `{entry.name}` | {entry.description} | {entry.unit} | {entry.formula} |"
        for entry in OWNER_METRICS
    ]
    return "\n".join(lines) + "\n"
