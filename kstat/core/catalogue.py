"""The metric catalogue: every metric kstat reports, declared once.

Each entry says what a metric is (name, unit, heading, description), how it behaves over time
(a counter's intervals add up to its window; a gauge is a rate or a ratio over its span and is
recomputed from the counters, never summed), how it is computed from a span's counters, which
of the Go tool's fields it is, and which views show it. The report's fields, NDJSON lines,
StatsD lines, `kstat compare`'s columns and `--fail-on` metrics, `kstat plot`'s panels, the
budgets, the pytest summary and the formula table of docs/report.md all come from here: adding a metric
is one entry and its formula.

Every metric exists per program and in total; the total of a metric is the same formula
applied to the summed counters (`total_<name>` in the report).

The kernel's counters are declared in the counter catalogue (`kstat.core.counters`); each one's
growth over a span is a COUNTER metric here, made from its entry alone (its words, views,
exposition and place among the counters are the entry's): nothing here names a counter but the
formulas of the metrics derived from them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, TypeAlias

from attrs import frozen

from kstat.core.counters import COUNTERS, Counters, CounterSpec, scalar
from kstat.core.model import ProgramFootprint
from kstat.core.views import Better as Better
from kstat.core.views import Exposition as Exposition
from kstat.core.views import View as View

NS_PER_S: Final = 1_000_000_000

Number: TypeAlias = int | float


@frozen
class Span:
    """What a metric is computed from: the kernel's counters' growth over a span of time.

    Every consumer (delta, summary, report, Prometheus, StatsD, `kstat top`, compare) computes
    its figures through one of these and the catalogue, never by hand.
    """

    # How much each counter grew over the span.
    counters: Counters
    elapsed_ns: int
    # None when unknown (a report the Go tool wrote does not say).
    online_cpus: int | None
    # The program's (or, for a total, the programs' combined) code, verifier work, memory and
    # maps; None where unknown or not carried (an interval line after a program's first).
    footprint: ProgramFootprint | None = None

    # The two counters every derived rate is made of, as plain numbers.
    @property
    def runtime_ns(self) -> int:
        return self.counters.run_time_ns

    @property
    def run_count(self) -> int:
        return self.counters.run_count


class Kind(enum.Enum):
    # What happened in the span; a window's value is the sum of its intervals'.
    COUNTER = "counter"
    # A rate or a ratio over the span, recomputed from the counters (never summed).
    GAUGE = "gauge"
    # A fact about the program, fixed while it is loaded (code size, memory); a total is the
    # programs' combined footprint (a map shared by several counted once).
    PROPERTY = "property"
    # A percentile (or the maximum) of another metric's per-interval values over the window:
    # what the window's average hides. Only a window's report has it, not an interval.
    DISTRIBUTION = "distribution"


@frozen
class Distribution:
    """What a DISTRIBUTION metric is a percentile of."""

    # The metric whose per-interval values are ranked.
    of: str
    # 0.5 the median, 0.99 the 99th percentile, 1.0 the maximum.
    quantile: float
    # Only intervals in which the program ran count (a runtime per run needs a run); otherwise
    # an idle interval counts as a zero.
    only_with_runs: bool = False


@frozen
class Metric:
    name: str
    kind: Kind
    unit: str
    # A chart's title ("Average runtime per run") and a table's column ("avg runtime (ns)").
    title: str
    heading: str
    description: str
    # The formula as docs/report.md states it.
    formula: str
    compute: Callable[[Span], Number | None]
    # Whole numbers (ints in JSON) or not.
    integral: bool
    # One of the Go collect-kernel-stats tool's fields: required when a report is read.
    seed: bool = False
    better: Better = Better.LOWER
    views: View = View.NONE
    # Per program in the Prometheus exposition (counters: cumulative since kstat started or
    # since the program loaded, whichever is later); None: not exposed there.
    prometheus: Exposition | None = None
    # For a DISTRIBUTION metric: what it ranks.
    distribution: Distribution | None = None
    # A value per run (average runtime): a span without runs has none, whatever the report says
    # for it (the Go tool's 0), so a time series shows a gap there rather than a drop to zero.
    per_run: bool = False
    # Divides by the span's length (a rate, or computed through one): unknown when the length
    # is (a report that gives no window, as the Go tool's first version wrote), never 0.
    rate: bool = False

    @property
    def total_name(self) -> str:
        return f"total_{self.name}"

    def value(self, span: Span) -> Number | None:
        return self.compute(span)


def _events_per_sec(span: Span) -> float:
    return span.run_count * NS_PER_S / span.elapsed_ns if span.elapsed_ns > 0 else 0.0


def _avg_runtime_ns(span: Span) -> int:
    # Integer nanoseconds, truncated, as the Go tool's time.Duration division gives it.
    return span.runtime_ns // span.run_count if span.run_count > 0 else 0


def _mean_runtime_ns(span: Span) -> float:
    return span.runtime_ns / span.run_count if span.run_count > 0 else 0.0


def _cpu_percent(span: Span) -> float:
    return span.runtime_ns * 100 / span.elapsed_ns if span.elapsed_ns > 0 else 0.0


def _cpu_percent_per_1000_events_per_sec(span: Span) -> float:
    # What 1,000 runs a second of this program cost, as a share of one CPU.
    events_per_sec = _events_per_sec(span)
    return _cpu_percent(span) / (events_per_sec / 1000) if events_per_sec > 0 else 0.0


def _footprint(read: Callable[[ProgramFootprint], int | None]) -> Callable[[Span], int | None]:
    def compute(span: Span) -> int | None:
        return None if span.footprint is None else read(span.footprint)

    return compute


def _cpu_percent_of_all_cpus(span: Span) -> float | None:
    if not span.online_cpus:
        return None
    return _cpu_percent(span) / span.online_cpus


def _busiest_cpu_percent(span: Span) -> float | None:
    # The CPU it kept busiest: what saturates one core (a NIC queue's) while the sum over every
    # CPU looks small. Only where the per-CPU run times were read (`--per-cpu`).
    per_cpu = span.counters.per_cpu_run_time_ns
    if not per_cpu or span.elapsed_ns <= 0:
        return None
    return max(per_cpu) * 100 / span.elapsed_ns


_EVERYWHERE: Final = View.COMPARE | View.CHART | View.SUMMARY | View.EXPORT


def _growth(spec: CounterSpec) -> Callable[[Span], int | None]:
    name = spec.name

    def compute(span: Span) -> int | None:
        return scalar(getattr(span.counters, name))

    return compute


def _exposition(spec: CounterSpec, metric_name: str) -> Exposition:
    """A counter's Prometheus family: its entry's, else `kstat_program_<metric>` in base units
    (seconds for nanoseconds) with its description as HELP."""
    if spec.prometheus is not None:
        return spec.prometheus
    base, divisor = metric_name, 1
    if base.endswith("_ns"):
        base, divisor = base[: -len("_ns")] + "_seconds", NS_PER_S
    return Exposition(f"kstat_program_{base}", divisor, spec.description[:1].upper() + spec.description[1:])


def counter_metrics() -> tuple[Metric, ...]:
    """The COUNTER metric of each counter's growth, made from its entry in the counter
    catalogue, in the entries' order (per-CPU splits have none: their sums are counters too)."""
    found = []
    for spec in sorted(COUNTERS, key=lambda spec: spec.order):
        if spec.metric is None:
            continue
        found.append(
            Metric(
                name=spec.metric,
                kind=Kind.COUNTER,
                unit=spec.unit,
                title=spec.title,
                heading=spec.heading,
                description=spec.description,
                formula=f"`{spec.kernel_name}(end) − {spec.kernel_name}(start)`",
                compute=_growth(spec),
                integral=True,
                seed=spec.seed,
                better=spec.better,
                views=spec.views,
                prometheus=_exposition(spec, spec.metric),
            )
        )
    return tuple(found)


def _over_intervals(span: Span) -> None:
    """A DISTRIBUTION metric is not a function of one span: the summary ranks the intervals'."""
    return None


def _distribution_metrics() -> tuple[Metric, ...]:
    """p50 (the median), p95, p99 and the maximum of three per-interval metrics."""
    ranked = (
        # (name part, metric ranked, its words, unit, only intervals with runs, a rate)
        ("cpu_percent", "estimated_cpu_percent", "CPU share", "% of one CPU", False, True),
        ("events_per_sec", "events_per_sec", "events per second", "runs / s", False, True),
        ("avg_runtime_ns", "mean_runtime_ns", "average runtime per run", "ns", True, False),
    )
    levels = (
        ("p50", 0.5, "median"),
        ("p95", 0.95, "95th percentile"),
        ("p99", 0.99, "99th percentile"),
        ("max", 1.0, "maximum"),
    )
    found = []
    for part, of, words, unit, only_with_runs, rate in ranked:
        for prefix, quantile, level in levels:
            over = "the intervals in which it ran" if only_with_runs else "the window's intervals"
            found.append(
                Metric(
                    name=f"{prefix}_{part}",
                    kind=Kind.DISTRIBUTION,
                    unit=unit,
                    title=f"{level.capitalize()} of the {words} per interval",
                    heading=f"{prefix} {words}",
                    description=f"the {level} of the {words} over {over}",
                    formula=(
                        "the largest interval's `" + of + "`"
                        if quantile == 1.0
                        else f"nearest-rank {level} of the intervals' `{of}`, within 2 %"
                    ),
                    compute=_over_intervals,
                    integral=False,
                    distribution=Distribution(of, quantile, only_with_runs),
                    rate=rate,
                )
            )
    return tuple(found)


# In the order people read them: tables, charts and summaries show them in this order.
METRICS: tuple[Metric, ...] = (
    Metric(
        name="avg_runtime_ns",
        kind=Kind.GAUGE,
        unit="ns",
        title="Average runtime per run",
        heading="avg runtime (ns)",
        description="average time per run, in whole nanoseconds",
        formula="`runtime_ns / run_count`, truncated (as the Go tool's `time.Duration`); 0 without runs",
        compute=_avg_runtime_ns,
        integral=True,
        seed=True,
        views=_EVERYWHERE,
        per_run=True,
    ),
    Metric(
        name="estimated_cpu_percent",
        kind=Kind.GAUGE,
        unit="% of one CPU",
        title="Estimated CPU",
        heading="CPU % (one CPU)",
        description="share of one CPU spent running the program (100 is one CPU fully busy)",
        formula="`runtime_ns / elapsed_ns × 100`",
        compute=_cpu_percent,
        integral=False,
        seed=True,
        views=_EVERYWHERE,
        rate=True,
    ),
    Metric(
        name="events_per_sec",
        kind=Kind.GAUGE,
        unit="runs / s",
        title="Events per second",
        heading="events/s",
        description="runs per second",
        formula="`run_count / elapsed_s`",
        compute=_events_per_sec,
        integral=False,
        seed=True,
        better=Better.NEITHER,
        views=_EVERYWHERE,
        rate=True,
    ),
    *counter_metrics(),
    Metric(
        name="mean_runtime_ns",
        kind=Kind.GAUGE,
        unit="ns",
        title="Mean runtime per run",
        heading="mean runtime (ns)",
        description="average time per run, unrounded (what budgets compare)",
        formula="`runtime_ns / run_count`, unrounded; 0 without runs",
        compute=_mean_runtime_ns,
        integral=False,
        per_run=True,
    ),
    Metric(
        name="estimated_cpu_percent_of_all_cpus",
        kind=Kind.GAUGE,
        unit="% of all CPUs",
        title="Estimated CPU, whole machine",
        heading="CPU % (all CPUs)",
        description="share of the whole machine",
        formula="`estimated_cpu_percent / online_cpus`",
        compute=_cpu_percent_of_all_cpus,
        integral=False,
        rate=True,
    ),
    Metric(
        name="busiest_cpu_percent",
        kind=Kind.GAUGE,
        unit="% of one CPU",
        title="Busiest CPU",
        heading="busiest CPU %",
        description=(
            "share of the one CPU it kept busiest (with `--per-cpu`, by BPF iterator; a total: "
            "of all the programs on that CPU)"
        ),
        formula="`max over CPUs of runtime_ns(cpu) / elapsed_ns × 100`",
        compute=_busiest_cpu_percent,
        integral=False,
        rate=True,
    ),
    Metric(
        name="cpu_percent_per_1000_events_per_sec",
        kind=Kind.GAUGE,
        unit="% of one CPU",
        title="CPU % per 1,000 events/s",
        heading="CPU % per 1k ev/s",
        description="what 1,000 runs a second cost, as a share of one CPU (efficiency)",
        formula="`estimated_cpu_percent / (events_per_sec / 1000)`; 0 without runs",
        compute=_cpu_percent_per_1000_events_per_sec,
        integral=False,
        per_run=True,
        rate=True,
    ),
    Metric(
        name="jited_size_bytes",
        kind=Kind.PROPERTY,
        unit="bytes",
        title="JIT-compiled code size",
        heading="JITed (B)",
        description="size of the program's machine code",
        formula="`bpf_prog_info.jited_prog_len`",
        compute=_footprint(lambda footprint: footprint.jited_size_bytes),
        integral=True,
        views=View.PROGRAM | View.EXPORT,
        prometheus=Exposition("kstat_program_jited_size_bytes", help="Size of the program's machine code"),
    ),
    Metric(
        name="xlated_size_bytes",
        kind=Kind.PROPERTY,
        unit="bytes",
        title="Translated (verified) code size",
        heading="xlated (B)",
        description="size of the program's eBPF code after the verifier",
        formula="`bpf_prog_info.xlated_prog_len`",
        compute=_footprint(lambda footprint: footprint.xlated_size_bytes),
        integral=True,
        views=View.PROGRAM | View.EXPORT,
        prometheus=Exposition("kstat_program_xlated_size_bytes", help="Size of the program's eBPF code"),
    ),
    Metric(
        name="verified_instructions",
        kind=Kind.PROPERTY,
        unit="instructions",
        title="Instructions the verifier processed",
        heading="verified insns",
        description="instructions the verifier processed to load the program (Linux 5.16+)",
        formula="`bpf_prog_info.verified_insns`",
        compute=_footprint(lambda footprint: footprint.verified_instructions),
        integral=True,
        views=View.PROGRAM | View.EXPORT,
        prometheus=Exposition(
            "kstat_program_verified_instructions",
            help="Instructions the verifier processed to load the program",
        ),
    ),
    Metric(
        name="num_maps",
        kind=Kind.PROPERTY,
        unit="maps",
        title="Maps used",
        heading="maps",
        description="maps the program uses (in a total: distinct maps)",
        formula="`bpf_prog_info.nr_map_ids`",
        compute=_footprint(lambda footprint: len(footprint.maps)),
        integral=True,
        views=View.PROGRAM | View.EXPORT,
        prometheus=Exposition("kstat_program_maps", help="Maps the program uses"),
    ),
    Metric(
        name="memlock_bytes",
        kind=Kind.PROPERTY,
        unit="bytes",
        title="Program memory",
        heading="memlock (B)",
        description="memory the kernel charges for the program itself",
        formula="the program fd's fdinfo `memlock`",
        compute=_footprint(lambda footprint: footprint.memlock_bytes),
        integral=True,
        views=View.MEMORY | View.EXPORT,
        prometheus=Exposition(
            "kstat_program_memlock_bytes", help="Memory the kernel charges for the program"
        ),
    ),
    Metric(
        name="maps_memlock_bytes",
        kind=Kind.PROPERTY,
        unit="bytes",
        title="Memory of its maps",
        heading="maps memlock (B)",
        description="memory of the program's maps (a shared map counts for each program; once in a total)",
        formula="the sum of its maps' fdinfo `memlock`",
        compute=_footprint(lambda footprint: footprint.maps_memlock_bytes),
        integral=True,
        views=View.MEMORY | View.EXPORT,
        prometheus=Exposition(
            "kstat_program_maps_memlock_bytes", help="Memory of the program's maps, shared ones included"
        ),
    ),
    *_distribution_metrics(),
)

SEED_METRICS: Final = tuple(metric for metric in METRICS if metric.seed)


# The look-ups below read METRICS when called, not when imported, so that nothing anywhere
# holds a list of metrics of its own.
def metric(name: str) -> Metric:
    """The metric called `name`; KeyError names the known ones."""
    for entry in METRICS:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown metric {name!r}; metrics: {', '.join(metric_names())}")


def metric_names() -> tuple[str, ...]:
    return tuple(entry.name for entry in METRICS)


def in_view(view: View) -> tuple[Metric, ...]:
    return tuple(entry for entry in METRICS if view in entry.views)


def values(span: Span, metrics: Iterable[Metric] | None = None) -> dict[str, Number]:
    """Every metric's value over a span, by name (metrics that cannot be known are left out)."""
    found: dict[str, Number] = {}
    for entry in METRICS if metrics is None else metrics:
        value = entry.compute(span)
        if value is not None:
            found[entry.name] = value
    return found


def markdown_table() -> str:
    """docs/report.md's table of metrics, generated from the catalogue (a test keeps them equal)."""
    lines = [
        "| metric | what it is | kind | unit | formula | Go tool's |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for entry in METRICS:
        lines.append(
            f"| `{entry.name}` | {entry.description} | {entry.kind.value} | {entry.unit} | {entry.formula} | "
            f"{'yes' if entry.seed else 'no'} |"
        )
    return "\n".join(lines) + "\n"


README_START: Final = (
    "<!-- metrics: generated by `python -m kstat.core.catalogue`; tests/test_catalogue.py keeps it so -->"
)
README_END: Final = "<!-- end of metrics -->"


def updated_readme(text: str) -> str:
    """A page's text (docs/report.md) with its table of metrics replaced by the catalogue's."""
    before, _, rest = text.partition(README_START)
    _, _, after = rest.partition(README_END)
    return f"{before}{README_START}\n{markdown_table()}{README_END}{after}"


if __name__ == "__main__":
    # `python -m kstat.core.catalogue` prints the table; with a page's path (docs/report.md),
    # updates it.
    import sys

    if len(sys.argv) > 1:
        readme = Path(sys.argv[1])
        readme.write_text(updated_readme(readme.read_text()))
    else:
        print(markdown_table(), end="")
