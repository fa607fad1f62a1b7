"""The kernel's counters of one program, declared once: the counter catalogue.

Each field of `Counters` is one cumulative counter the kernel keeps per program, declared with
its `CounterSpec`: what the kernel calls it, its unit, the kernel version that brought it, and
the metric it becomes over a span (its growth from a baseline to a last reading), with how that
metric is named and shown: its field in the report and NDJSON lines, its StatsD and Prometheus
names, its column in `kstat compare` and `kstat top`. Everything else (readers, deltas, spans,
totals, the report, NDJSON, StatsD, Prometheus, `kstat top`, compare) goes over the declared
fields, never by name: a new counter is a field here plus the reader that fills it
(docs/architecture.md, "Adding a counter").

A counter the running kernel does not have is None, never 0: "this kernel does not count
recursion misses" (before 5.12) is not "no recursion misses". A counter may be a per-CPU
vector (a tuple, one value per possible CPU), where a reader can read it per CPU; its growth is
taken CPU by CPU.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from functools import cache
from typing import Annotated, Final, NamedTuple, TypeAlias

from attrs import frozen

from kstat.core.views import Better, Exposition, TopColumn, View

# One counter's value: a number, one number per possible CPU, or None (not on this kernel).
Value: TypeAlias = int | tuple[int, ...] | None


@frozen
class CounterSpec:
    """What one counter is, and the metric its growth over a span becomes."""

    # Its name in `Counters` and in NDJSON records (`counter_<name>`).
    name: str
    # What bpf_prog_info (or the kernel's struct) calls it, and its key in NDJSON's `counters`
    # objects. The syscall reader reads each counter whose kernel name is a bpf_prog_info field.
    kernel_name: str
    unit: str
    # The kernel version that brought it ("5.1"), and what reads it.
    since: str
    description: str
    # The metric of its growth over a span (`runtime_ns` for `run_time_ns`): its field in the
    # report, NDJSON lines and StatsD names (`total_<metric>` in total). None for a per-CPU
    # split, whose sum is another counter's metric. Its words: a chart's title, a column's heading.
    metric: str | None
    title: str
    heading: str
    # One value per possible CPU (a tuple indexed by CPU number), where the reader can split
    # it; else one number.
    per_cpu: bool = False
    # For a per-CPU counter: the counter it splits by CPU (its values sum to that one's).
    splits: str | None = None
    # One of the Go collect-kernel-stats tool's fields (required when a report is read).
    seed: bool = False
    # How its metric is shown: where (`kstat compare`'s columns, the pytest summary, StatsD and
    # Prometheus), which way a change is better, its Prometheus family (None:
    # `kstat_program_<metric>`, in seconds for nanoseconds, its description as HELP) and its
    # `kstat top` column (None: none).
    views: View = View.COMPARE | View.SUMMARY | View.EXPORT
    better: Better = Better.LOWER
    prometheus: Exposition | None = None
    top: TopColumn | None = None
    # Where its metric comes among the counters' in the metric catalogue (tables, exports and
    # docs list metrics in its order): lowest first, ties in field order.
    order: int = 100


_RUN_TIME: Final = CounterSpec(
    name="run_time_ns",
    kernel_name="run_time_ns",
    unit="ns",
    since="5.1",
    description="time spent running the program, summed over every CPU",
    metric="runtime_ns",
    title="Runtime",
    heading="runtime (ns)",
    seed=True,
    views=View.EXPORT,
    prometheus=Exposition(
        "kstat_program_run_time_seconds",
        1_000_000_000,
        "Time spent running the program, summed over every CPU",
    ),
    order=1,
)
_RUN_COUNT: Final = CounterSpec(
    name="run_count",
    kernel_name="run_cnt",
    unit="runs",
    since="5.1",
    description="times the program ran",
    metric="run_count",
    title="Runs",
    heading="runs",
    seed=True,
    better=Better.NEITHER,
    prometheus=Exposition("kstat_program_runs", help="Times the program ran"),
    top=TopColumn("runs", "TOTAL RUNS", priority=5, width=11),
    order=0,
)
_RECURSION_MISSES: Final = CounterSpec(
    name="recursion_misses",
    kernel_name="recursion_misses",
    unit="misses",
    since="5.12",
    description="runs the kernel skipped because the program was already running on that CPU",
    metric="recursion_misses",
    title="Recursion misses",
    heading="rec. misses",
    seed=True,
    views=View.SUMMARY | View.EXPORT,
    order=2,
)

# The per-CPU splits of run time and runs: only the BPF iterator reads them (each CPU's
# bpf_prog_stats), and only when asked (`--per-cpu`: a vector per program and CPU costs memory
# and, exported, cardinality). None when not read: the syscalls' bpf_prog_info has only sums.
_PER_CPU_RUN_TIME: Final = CounterSpec(
    name="per_cpu_run_time_ns",
    kernel_name="bpf_prog_stats.nsecs",
    unit="ns",
    since="5.1 (BPF iterator, 5.8)",
    description="time spent running the program, on each CPU",
    metric=None,
    title="Runtime per CPU",
    heading="runtime/CPU (ns)",
    per_cpu=True,
    splits="run_time_ns",
)
_PER_CPU_RUN_COUNT: Final = CounterSpec(
    name="per_cpu_run_count",
    kernel_name="bpf_prog_stats.cnt",
    unit="runs",
    since="5.1 (BPF iterator, 5.8)",
    description="times the program ran, on each CPU",
    metric=None,
    title="Runs per CPU",
    heading="runs/CPU",
    per_cpu=True,
    splits="run_count",
)


class Counters(NamedTuple):
    """One program's cumulative counters at one reading (or their growth over a span).

    A NamedTuple: a snapshot holds one per program, and tuples are built, compared and hashed
    in C. Each field is annotated with its `CounterSpec`; `COUNTERS` lists them in field order.
    """

    run_time_ns: Annotated[int, _RUN_TIME]
    run_count: Annotated[int, _RUN_COUNT]
    recursion_misses: Annotated[int | None, _RECURSION_MISSES] = None
    per_cpu_run_time_ns: Annotated[tuple[int, ...] | None, _PER_CPU_RUN_TIME] = None
    per_cpu_run_count: Annotated[tuple[int, ...] | None, _PER_CPU_RUN_COUNT] = None


@cache
def _declared() -> tuple[CounterSpec, ...]:
    hints = typing.get_type_hints(Counters, include_extras=True)
    specs = []
    for field_name in Counters._fields:
        metadata = getattr(hints[field_name], "__metadata__", ())
        spec = next((item for item in metadata if isinstance(item, CounterSpec)), None)
        if spec is None or spec.name != field_name:
            raise AssertionError(f"Counters.{field_name} is not declared with its CounterSpec")
        specs.append(spec)
    return tuple(specs)


COUNTERS: Final[tuple[CounterSpec, ...]] = _declared()

ZERO: Final = Counters._make(() if spec.per_cpu else 0 for spec in COUNTERS)
PER_CPU_COUNTERS: Final = tuple(spec for spec in COUNTERS if spec.per_cpu)


def counter(name: str) -> CounterSpec:
    """The counter called `name` (its field name or its kernel name); KeyError names the known ones."""
    for spec in COUNTERS:
        if name in (spec.name, spec.kernel_name):
            return spec
    raise KeyError(f"unknown counter {name!r}; counters: {', '.join(spec.name for spec in COUNTERS)}")


def _minus(last: Value, baseline: Value) -> Value:
    if last is None or baseline is None:
        return None
    if isinstance(last, tuple):
        before = baseline if isinstance(baseline, tuple) else ()
        return tuple(value - (before[cpu] if cpu < len(before) else 0) for cpu, value in enumerate(last))
    if isinstance(baseline, tuple):
        raise TypeError("a per-CPU counter's baseline is a tuple too")
    return last - baseline


def _plus(first: Value, second: Value) -> Value:
    if first is None or second is None:
        return None
    if isinstance(first, tuple) or isinstance(second, tuple):
        left = first if isinstance(first, tuple) else ()
        right = second if isinstance(second, tuple) else ()
        longer, shorter = (left, right) if len(left) >= len(right) else (right, left)
        return tuple(value + (shorter[cpu] if cpu < len(shorter) else 0) for cpu, value in enumerate(longer))
    return first + second


def grown(last: Counters, baseline: Counters) -> Counters:
    """How much each counter grew from `baseline` to `last` (None where either lacks it)."""
    return Counters._make(map(_minus, last, baseline))


def added(first: Counters, second: Counters) -> Counters:
    """The counters of two programs (or two spans) together; None where either lacks one."""
    return Counters._make(map(_plus, first, second))


def summed(many: Iterable[Counters], start: Counters = ZERO) -> Counters:
    """Several programs' counters together (a total): None for a counter any of them lacks.

    `added` one after another, but counter by counter over all of them at once: a counter's
    numbers are summed in C (an interval's total over its busy programs, every interval)."""
    columns = zip(start, *many, strict=True)
    return Counters._make(map(_column_sum, columns))


def _column_sum(values: tuple[Value, ...]) -> Value:
    """What `_plus` gives, folded over one counter's values from left to right."""
    if None in values:
        return None
    vectors = [value for value in values if isinstance(value, tuple)]
    if not vectors:
        return sum(values)  # type: ignore[arg-type]
    # As `_plus`: once a vector is in, a plain number beside it adds nothing.
    width = max(map(len, vectors))
    return tuple(sum(vector[cpu] for vector in vectors if cpu < len(vector)) for cpu in range(width))


def is_zero(counters: Counters) -> bool:
    """No counter grew (a counter the kernel lacks has not grown either)."""
    return not any(value for value in map(scalar, counters))


def scalar(value: Value) -> int | None:
    """A counter's value as one number: a per-CPU vector summed over its CPUs."""
    if isinstance(value, tuple):
        return sum(value)
    return value


def by_cpu(counters: Counters) -> dict[int, dict[str, int]]:
    """The per-CPU counters by CPU, only CPUs where one of them grew: CPU -> {the metric of the
    counter each splits (`run_count`, `runtime_ns`): its value there}. Empty where none was read."""
    found: dict[int, dict[str, int]] = {}
    for spec in PER_CPU_COUNTERS:
        vector = getattr(counters, spec.name)
        if not isinstance(vector, tuple) or spec.splits is None:
            continue
        name = counter(spec.splits).metric or spec.splits
        for cpu, value in enumerate(vector):
            if value:
                found.setdefault(cpu, {})[name] = value
    for values in found.values():
        for spec in PER_CPU_COUNTERS:
            if spec.splits is not None and isinstance(getattr(counters, spec.name), tuple):
                values.setdefault(counter(spec.splits).metric or spec.splits, 0)
    return dict(sorted(found.items()))
