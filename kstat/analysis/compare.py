"""`kstat compare`: two reports side by side, per program and in total, with a verdict.

Programs are matched by name and type. Several programs with the same name and type on one
side (two agents, or a program loaded twice) are added up into one row, so nothing is dropped
or matched arbitrarily; a program on one side only gets a row of its own.

Each side may be several runs of the same workload: then a row holds each run's numbers, shows
their median, and says whether the change of the medians is significant (`significance`).

The total is each report's own (its `total_*` fields), not a sum of its rows: the Go tool's
report keys programs by kernel name, so of programs sharing one it lists one while its totals
count them all, and a long kstat run stops listing programs unloaded long ago. What a report's
totals hold beyond its rows is said under the table (`ReportFacts.unlisted`). A report that
gives no window length (the Go tool's first version wrote 0) has no rates: its runs and average
runtimes are compared, its rates are not. And a Go tool report's window is the duration it was
asked for, not the span between its reads: that is said where one is compared.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from attrs import frozen

from kstat.analysis.significance import (
    DEFAULT_ALPHA,
    Sample,
    Verdict,
    beyond_limit_test,
    rank_test,
    runs_needed,
    runs_needed_beside,
    smallest_p_value,
)
from kstat.core.catalogue import (
    METRICS,
    NS_PER_S,
    Kind,
    Number,
    Span,
    View,
    in_view,
    metric_names,
    values,
)
from kstat.core.counters import COUNTERS, Counters, grown, scalar, summed
from kstat.core.owner_cost import (
    NO_USAGE,
    OWNER_METRICS,
    OwnerSpan,
    counters_of_owner,
    owner_metric_names,
    owner_values,
    process_added,
)
from kstat.core.report import ProgramReport, Report, counters_of
from kstat.errors import UsageError
from kstat.text import for_markdown, for_terminal

TOTAL: Final = "(total)"
# The columns of the table; every catalogue metric can be a --fail-on threshold and is in JSON.
SHOWN: Final = in_view(View.COMPARE)
_GAUGES: Final = frozenset(entry.name for entry in METRICS if entry.kind is Kind.GAUGE)


@frozen
class Measures:
    """A row's numbers on one side: the catalogue's metrics over that report's window, or, for
    several runs, each metric's median over the runs (`runs` holds each run's own)."""

    programs: int
    values: Mapping[str, Number]
    # Each run's values, where the side has several; empty for one report.
    runs: tuple[Mapping[str, Number], ...] = ()

    def value(self, metric: str) -> float | None:
        found = self.values.get(metric)
        return None if found is None else float(found)

    def sample(self, metric: str) -> Sample | None:
        """The metric's value in each run that has it."""
        runs = self.runs or (self.values,)
        found = tuple(float(run[metric]) for run in runs if run.get(metric) is not None)
        return Sample(found) if found else None

    @staticmethod
    def over_runs(runs: Sequence[Measures]) -> Measures:
        """Several runs' measures as one: each metric's median, the runs kept."""
        if len(runs) == 1:
            return runs[0]
        names = [metric.name for metric in METRICS if any(metric.name in run.values for run in runs)]
        # An owner's row has the owner catalogue's metrics instead.
        names += [metric.name for metric in OWNER_METRICS if any(metric.name in run.values for run in runs)]
        return Measures(
            programs=max(run.programs for run in runs),
            values={
                name: statistics.median(run.values[name] for run in runs if name in run.values)
                for name in names
            },
            runs=tuple(run.values for run in runs),
        )


@frozen
class Row:
    name: str
    type: str
    baseline: Measures | None
    current: Measures | None

    @property
    def label(self) -> str:
        return self.name if self.type == "" else f"{self.name} ({self.type})"

    @property
    def idle(self) -> bool:
        """No run on either side (one of a host's idle hundreds): tables leave it out unless asked."""
        return all(
            (side.value("run_count") or 0) == 0 for side in (self.baseline, self.current) if side is not None
        )

    def sides(self, metric: str) -> tuple[float, float] | None:
        """(baseline, current) when both sides have the metric."""
        if self.baseline is None or self.current is None:
            return None
        before, after = self.baseline.value(metric), self.current.value(metric)
        if before is None or after is None:
            return None
        return before, after

    def change_percent(self, metric: str) -> float | None:
        """Relative change, (new - old) / old; None when a side is missing or old is zero."""
        sides = self.sides(metric)
        if sides is None or sides[0] == 0:
            return None
        before, after = sides
        return (after - before) / before * 100

    def change(self, metric: str) -> float | None:
        sides = self.sides(metric)
        return None if sides is None else sides[1] - sides[0]

    def verdict(self, metric: str, alpha: float = DEFAULT_ALPHA) -> Verdict | None:
        """The rank test of the metric's runs on both sides; None when a side lacks it."""
        if self.baseline is None or self.current is None:
            return None
        before, after = self.baseline.sample(metric), self.current.sample(metric)
        if before is None or after is None:
            return None
        return rank_test(before, after, alpha)


@frozen
class Threshold:
    """`METRIC:+10%` fails when METRIC grows by more than 10 %; `METRIC:-5%` when it falls by
    more than 5 %; without `%` the limit is absolute (`recursion_misses:+0`)."""

    metric: str
    limit: float
    relative: bool
    # `program`: the programs' rows and total; `owner` (`owner:whole_cpu_percent:+10%`): each
    # owner command's row (its processes' own CPU and memory beside their programs').
    scope: str = "program"

    @property
    def text(self) -> str:
        sign = "+" if self.limit >= 0 else "-"
        scope = "owner:" if self.scope == "owner" else ""
        return f"{scope}{self.metric}:{sign}{abs(self.limit):g}{'%' if self.relative else ''}"

    def test(self, row: Row, alpha: float = DEFAULT_ALPHA) -> Verdict | None:
        """Whether the row's current runs are significantly beyond its baseline runs moved by
        the limit; None when a side lacks the metric."""
        if row.baseline is None or row.current is None:
            return None
        before, after = row.baseline.sample(self.metric), row.current.sample(self.metric)
        if before is None or after is None:
            return None
        return beyond_limit_test(before, after, limit=self.limit, relative=self.relative, alpha=alpha)

    def violated_by(self, row: Row, alpha: float = DEFAULT_ALPHA) -> str | None:
        """The medians' change beyond the limit and, where the runs allow a test, the current
        runs significantly beyond the baseline's moved by the limit: a change the runs' own noise
        explains is not a regression. With too few runs to test, the medians decide."""
        change = row.change_percent(self.metric) if self.relative else row.change(self.metric)
        if change is None:
            return None
        exceeded = change > self.limit if self.limit >= 0 else change < self.limit
        if not exceeded:
            return None
        verdict = self.test(row, alpha)
        if verdict is not None and verdict.testable and not verdict.significant:
            return None
        sides = row.sides(self.metric)
        assert sides is not None
        unit = "%" if self.relative else ""
        tested = (
            f", beyond the limit at p={verdict.p_value:.3g}"
            if verdict is not None and verdict.p_value is not None
            else ""
        )
        return (
            f"{row.label}: {self.metric} {_number(sides[0])} -> "
            f"{_number(sides[1])} ({change:+.2f}{unit}{tested}, limit {self.text})"
        )


_THRESHOLD: Final = re.compile(
    r"(?:(?P<scope>owner):)?(?P<metric>[a-z][a-z0-9_]*):(?P<sign>[+-])(?P<number>\d+(\.\d+)?)(?P<percent>%?)"
)


def parse_threshold(text: str) -> Threshold:
    match = _THRESHOLD.fullmatch(text.strip())
    if not match:
        raise UsageError(
            f"bad threshold {text!r}: expected METRIC:+N% or METRIC:-N% (or without %, absolute), "
            "or owner:METRIC:+N% for each owner's whole cost"
        )
    metric = match["metric"]
    scope = "owner" if match["scope"] else "program"
    known = owner_metric_names() if scope == "owner" else metric_names()
    if metric not in known:
        kind = "owner metric" if scope == "owner" else "metric"
        raise UsageError(f"unknown {kind} {metric!r} in {text!r}; {kind}s: {', '.join(known)}")
    limit = float(match["number"]) * (1 if match["sign"] == "+" else -1)
    return Threshold(metric, limit, relative=match["percent"] == "%", scope=scope)


@frozen
class Unlisted:
    """What a report's totals count beyond its rows: the runs of programs it does not list."""

    # Totals less the rows' sum (None for a counter either lacks).
    counters: Counters
    # How many programs, where the report says (kstat's `programs_left_out`); the Go tool's does
    # not (its `num_programs` counts its rows).
    programs: int | None
    go_tool: bool

    @property
    def run_count(self) -> int:
        return scalar(self.counters.run_count) or 0

    @property
    def runtime_ns(self) -> int:
        return scalar(self.counters.run_time_ns) or 0


@frozen
class ReportFacts:
    """What compare says of one report besides its numbers: who wrote it, whether it gives its
    window's length, what its totals hold beyond its rows."""

    go_tool: bool
    window_known: bool
    elapsed_ns: int
    unlisted: Unlisted | None

    @classmethod
    def of(cls, report: Report) -> ReportFacts:
        beyond = grown(counters_of(report.totals), summed(line.counters for line in report.programs))
        more = any((scalar(value) or 0) > 0 for value in beyond)
        return cls(
            go_tool=report.written_by_go_tool,
            window_known=report.window_known,
            elapsed_ns=report.collection_duration_ns,
            unlisted=(
                Unlisted(beyond, report.programs_left_out, report.written_by_go_tool)
                if more or report.programs_left_out
                else None
            ),
        )


def _is_rate(name: str) -> bool:
    return any(entry.rate for entry in METRICS if entry.name == name)


def _median_window_ns(facts: Sequence[ReportFacts]) -> int:
    """The median window of the reports that give theirs; 0 when none does."""
    known = [fact.elapsed_ns for fact in facts if fact.window_known]
    return round(statistics.median(known)) if known else 0


@frozen
class Comparison:
    # The windows' lengths (the median of those known, for several runs; 0: none known).
    baseline_elapsed_ns: int
    current_elapsed_ns: int
    rows: tuple[Row, ...]
    total: Row
    baseline_runs: int = 1
    current_runs: int = 1
    alpha: float = DEFAULT_ALPHA
    # Other kstat instances' programs each side's reports set apart (in no row and no total):
    # their medians over the runs that met any; None where none did.
    kstat_programs: tuple[Measures | None, Measures | None] = (None, None)
    # Each report's facts, in the order given, per side.
    baseline_reports: tuple[ReportFacts, ...] = ()
    current_reports: tuple[ReportFacts, ...] = ()
    # A row per owner command (`owners` sections of the reports; empty where neither side has
    # one): its processes' own CPU and memory, its programs' kernel CPU, and the sum.
    owners: tuple[Row, ...] = ()

    @property
    def several_runs(self) -> bool:
        return self.baseline_runs > 1 or self.current_runs > 1

    @property
    def testable(self) -> bool:
        """Whether these many runs can show a significant change at all."""
        return smallest_p_value(self.baseline_runs, self.current_runs) < self.alpha

    def violations(self, thresholds: Iterable[Threshold]) -> list[str]:
        found: list[str] = []
        for threshold in thresholds:
            for row in self.owners if threshold.scope == "owner" else (*self.rows, self.total):
                violation = threshold.violated_by(row, self.alpha)
                if violation is not None:
                    found.append(violation)
        return found

    def unchecked(self, thresholds: Iterable[Threshold]) -> list[str]:
        """Thresholds on a rate where a side's rates are unknown: they could not be checked."""
        sides = [
            side
            for side, facts in (("baseline", self.baseline_reports), ("current", self.current_reports))
            if any(not fact.window_known for fact in facts)
        ]
        if not sides:
            return []
        return [
            f"{threshold.text}: the {' and the '.join(sides)}'s rates are unknown"
            for threshold in thresholds
            if _is_rate(threshold.metric)
        ]

    @property
    def only_in_baseline(self) -> list[Row]:
        return [row for row in self.rows if row.current is None]

    @property
    def only_in_current(self) -> list[Row]:
        return [row for row in self.rows if row.baseline is None]


def _measures(lines: Sequence[ProgramReport], report: Report, *, total: bool = False) -> Measures:
    """The catalogue's metrics over the summed counters of `lines` (one program or several).

    A property (code size, memory) is the sum of the lines' where every line has it; for the
    total, the report's own total (where a map shared by programs counts once). The total's
    counters are the report's own too, not its rows' sum. A report without a window's length
    has no rates.
    """
    span = Span(
        counters=counters_of(report.totals) if total else summed(line.counters for line in lines),
        elapsed_ns=report.collection_duration_ns,
        online_cpus=report.online_cpus,
    )
    found = values(span, METRICS if report.window_known else [entry for entry in METRICS if not entry.rate])
    if total and report.window_known:
        # What the totals' counters cannot give (the busiest CPU: a report's totals carry no
        # per-CPU split), the report's own total says.
        found |= {
            name: value for name, value in report.totals.items() if name not in found and name in _GAUGES
        }
    for metric in METRICS:
        if metric.kind not in (Kind.PROPERTY, Kind.DISTRIBUTION):
            continue
        if total:
            if metric.name in report.totals:
                found[metric.name] = report.totals[metric.name]
            continue
        line_values = [line.metrics.get(metric.name) for line in lines]
        if not line_values or None in line_values:
            continue
        if metric.kind is Kind.PROPERTY:
            found[metric.name] = sum(value for value in line_values if value is not None)
        elif len(line_values) == 1 and line_values[0] is not None:
            # Percentiles of several programs' intervals do not add up: a row of several has none.
            found[metric.name] = line_values[0]
    return Measures(programs=len(lines), values=found)


def _owner_measures(report: Report) -> dict[str, Measures]:
    """Each owner command's figures in one report: its processes together (a program two of
    them hold counted for each, as each owner's own figures count it)."""
    section = report.owners
    if section is None:
        return {}
    by_command: dict[str, list[dict[str, float]]] = {}
    for cost in section.owners:
        by_command.setdefault(cost.command, []).append(dict(cost.metrics))
    found = {}
    for command, members in by_command.items():
        process, kernel_ns, programs = NO_USAGE, 0, 0
        for metrics in members:
            own, kernel, held = counters_of_owner(metrics)
            process, kernel_ns, programs = process_added(process, own), kernel_ns + kernel, programs + held
        span = OwnerSpan(process, Counters(kernel_ns, 0), report.collection_duration_ns, programs)
        found[command] = Measures(programs=len(members), values=owner_values(span))
    return found


def _owner_rows(sides: Sequence[Sequence[Report]]) -> tuple[Row, ...]:
    measured = [[_owner_measures(report) for report in reports] for reports in sides]
    commands = sorted({command for runs in measured for run in runs for command in run})

    def side(runs: list[dict[str, Measures]], command: str) -> Measures | None:
        found = [run[command] for run in runs if command in run]
        return Measures.over_runs(found) if found else None

    return tuple(
        Row(
            name=command,
            type="owner",
            baseline=side(measured[0], command),
            current=side(measured[1], command),
        )
        for command in commands
    )


def _has_full_names(report: Report) -> bool:
    """Whether the report says which names are full (BTF) ones: kstat's since 0.1's identity
    work do (`kernel_name`); the Go tool's and early kstat's hold the kernel's 15 characters."""
    return any(line.kernel_name is not None for line in report.programs)


GROUPINGS: Final = ("name", "pod", "container", "unit")
# A pod's name less what its controller generated: a ReplicaSet's hash and a random suffix
# (`web-5d9c8b7f6d-x7k2p` -> `web`, a DaemonSet's `agent-x7k2p` -> `agent`), so that two
# rollouts of one workload are compared as one. A StatefulSet's ordinal (`db-0`) stays.
_GENERATED_SUFFIX: Final = re.compile(r"(?:-[0-9a-f]{8,10})?-[a-z0-9]{5}$")


def _group_of(line: ProgramReport, by: str) -> tuple[str, str, str]:
    """(key, label, type) of a program's row when grouped by `by` (not by name)."""
    workloads = [owner.workload for owner in line.owners]
    if by == "unit":
        unit = next((workload.unit for workload in workloads if workload.unit), None)
        return (unit or "(no unit)", unit or "(no unit)", "")
    in_pod = next((workload for workload in workloads if workload.pod or workload.container_id), None)
    if in_pod is None:
        return (
            "(no pod)" if by == "pod" else "(no container)",
            "(no pod)" if by == "pod" else "(no container)",
            "",
        )
    namespace = in_pod.namespace or "?"
    workload_name = _GENERATED_SUFFIX.sub("", in_pod.pod) if in_pod.pod else (in_pod.pod_uid or "?")
    if by == "pod":
        return (f"{namespace}/{workload_name}", f"{namespace}/{in_pod.pod or in_pod.pod_uid}", "")
    container = in_pod.container_name or (in_pod.container_id or "?")[:12]
    return (
        f"{namespace}/{workload_name}/{container}",
        f"{namespace}/{in_pod.pod or in_pod.pod_uid}/{container}",
        "",
    )


def compare(baseline: Report, current: Report, *, by: str = "name") -> Comparison:
    """Match the two reports' programs and measure each side: by name and type (`by="name"`),
    or all the programs of a pod, a container or a systemd unit as one row.

    By name, when only one side knows full names (a Go tool or early kstat baseline against a
    kstat report), that side is matched by its kernel names, the names the other side has; its
    rows still show the full name. By pod or container, pods of one workload are matched (their
    generated suffixes left out), and the row names both.
    """
    return compare_runs([baseline], [current], by=by)


def _full_names(sides: Sequence[Sequence[Report]]) -> dict[tuple[str, str], str]:
    """(kernel name, type) -> the one full name the reports know for it; a kernel name shared by
    programs of several full names maps to none (no guess)."""
    found: dict[tuple[str, str], set[str]] = {}
    for reports in sides:
        for report in reports:
            for line in report.programs:
                if line.kernel_name is not None and line.kernel_name != line.name:
                    found.setdefault((line.kernel_name, line.type), set()).add(line.name)
    return {key: next(iter(names)) for key, names in found.items() if len(names) == 1}


def compare_runs(
    baselines: Sequence[Report],
    currents: Sequence[Report],
    *,
    by: str = "name",
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """`compare` with several runs of the workload per side: each row holds every run's
    numbers and their medians; a program absent from a run has no value in it."""
    if by not in GROUPINGS:
        raise UsageError(f"cannot group by {by!r}; choose one of {', '.join(GROUPINGS)}")
    if not baselines or not currents:
        raise UsageError("compare needs at least one report on each side")
    sides = (tuple(baselines), tuple(currents))
    full_names = [any(_has_full_names(report) for report in side) for side in sides]
    by_kernel_name = [False, False]
    if by == "name" and full_names[0] != full_names[1]:
        by_kernel_name = full_names
    full_name_of = _full_names(sides)
    # (key, type) -> per side, per run: the lines of that row.
    groups: dict[tuple[str, str], tuple[list[list[ProgramReport]], ...]] = {}
    labels: dict[tuple[str, str], list[str]] = {}
    for side, reports in enumerate(sides):
        for run, report in enumerate(reports):
            for line in report.programs:
                if by == "name":
                    name = (line.kernel_name or line.name) if by_kernel_name[side] else line.name
                    label = line.name
                    if not by_kernel_name[side] and line.kernel_name == line.name:
                        # Unloaded before its full name could be read (a busy host): the run in
                        # which it was is matched with the others by the name they know.
                        name = label = full_name_of.get((line.name, line.type), name)
                    key, type_name = name, line.type
                else:
                    key, label, type_name = _group_of(line, by)
                runs = groups.setdefault((key, type_name), tuple([[] for _ in reports] for reports in sides))
                runs[side][run].append(line)
                known = labels.setdefault((key, type_name), [])
                if label not in known:
                    known.append(label)

    def side_measures(side: int, runs: list[list[ProgramReport]]) -> Measures | None:
        measured = [
            _measures(lines, report) for lines, report in zip(runs, sides[side], strict=True) if lines
        ]
        return Measures.over_runs(measured) if measured else None

    rows = []
    for (key, type_name), (before, after) in sorted(groups.items()):
        rows.append(
            Row(
                name=" → ".join(labels[(key, type_name)]) if by != "name" else labels[(key, type_name)][-1],
                type=type_name,
                baseline=side_measures(0, before),
                current=side_measures(1, after),
            )
        )
    total = Row(
        name=TOTAL,
        type="",
        baseline=Measures.over_runs([_measures(report.programs, report, total=True) for report in baselines]),
        current=Measures.over_runs([_measures(report.programs, report, total=True) for report in currents]),
    )
    apart = tuple(
        Measures.over_runs(found) if found else None
        for found in (
            [
                Measures(report.kstat_programs.programs, report.kstat_programs.metrics)
                for report in side
                if report.kstat_programs is not None
            ]
            for side in sides
        )
    )
    baseline_facts = tuple(ReportFacts.of(report) for report in baselines)
    current_facts = tuple(ReportFacts.of(report) for report in currents)
    return Comparison(
        baseline_elapsed_ns=_median_window_ns(baseline_facts),
        current_elapsed_ns=_median_window_ns(current_facts),
        rows=tuple(rows),
        total=total,
        baseline_runs=len(baselines),
        current_runs=len(currents),
        alpha=alpha,
        kstat_programs=(apart[0], apart[1]),
        baseline_reports=baseline_facts,
        current_reports=current_facts,
        owners=_owner_rows(sides),
    )


# --- rendering ------------------------------------------------------------------------------


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"


def _side(measures: Measures | None, metric: str) -> str:
    value = None if measures is None else measures.value(metric)
    return "-" if value is None else _number(value)


def _spread(measures: Measures | None, metric: str) -> str:
    """` ±4%`: half the runs' range, for a side of several runs."""
    sample = None if measures is None or not measures.runs else measures.sample(metric)
    if sample is None or sample.runs < 2:
        return ""
    spread = sample.spread_percent
    return "" if spread is None else f" ±{spread:.0f}%"


def _cell(row: Row, metric: str, comparison: Comparison) -> str:
    before = _side(row.baseline, metric) + _spread(row.baseline, metric)
    after = _side(row.current, metric) + _spread(row.current, metric)
    change = row.change_percent(metric)
    if row.baseline is None:
        delta = "new"
    elif row.current is None:
        delta = "gone"
    elif change is None:
        delta = "n/a"
    elif not comparison.several_runs:
        delta = f"{change:+.1f}%"
    else:
        # benchstat's way: a change only where the runs say it is real, "~" elsewhere.
        verdict = row.verdict(metric, comparison.alpha)
        if verdict is None or not verdict.testable:
            delta = f"{change:+.1f}% ?"
        elif verdict.significant:
            delta = f"{change:+.1f}% p={verdict.p_value:.3f}"
        else:
            delta = f"~ p={verdict.p_value:.2f}"
    return f"{before} → {after} ({delta})"


def _label(row: Row) -> str:
    counts = [measures.programs for measures in (row.baseline, row.current) if measures is not None]
    copies = f" (x{max(counts)})" if row.name != TOTAL and max(counts) > 1 else ""
    return row.label + copies


def _shown_rows(comparison: Comparison, show_idle: bool) -> list[Row]:
    return [row for row in comparison.rows if show_idle or not row.idle]


def render_markdown(
    comparison: Comparison, violations: Sequence[str], show_idle: bool = False, unchecked: Sequence[str] = ()
) -> str:
    header = "| program | " + " | ".join(metric.heading for metric in SHOWN) + " |"
    lines = [
        "### Kernel-side eBPF cost: baseline → current",
        "",
        header,
        "|" + " --- |" * (len(SHOWN) + 1),
    ]
    for row in (*_shown_rows(comparison, show_idle), comparison.total):
        cells = [for_markdown(_label(row)), *(_cell(row, metric.name, comparison) for metric in SHOWN)]
        if row.name == TOTAL:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if comparison.owners:
        lines += [
            "### Whole cost per owner (its own CPU + its programs' kernel CPU): baseline → current",
            "",
            "| owner | " + " | ".join(metric.heading for metric in OWNER_SHOWN) + " |",
            "|" + " --- |" * (len(OWNER_SHOWN) + 1),
        ]
        for row in comparison.owners:
            cells = [
                for_markdown(_owner_label(row)),
                *(_cell(row, metric.name, comparison) for metric in OWNER_SHOWN),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += _footer(
        comparison, violations, bullet="- ", show_idle=show_idle, escape=for_markdown, unchecked=unchecked
    )
    return "\n".join(lines) + "\n"


def _window(elapsed_ns: int) -> str:
    return f"{elapsed_ns / NS_PER_S:.2f} s" if elapsed_ns > 0 else "unknown"


def _subject(side: str, matching: int, reports: int) -> str:
    """ "The baseline", "The baseline's 3 reports", "2 of the baseline's 3 reports"."""
    if reports == 1:
        return f"The {side}"
    if matching == reports:
        return f"The {side}'s {reports} reports"
    return f"{matching} of the {side}'s {reports} reports"


def _side_notes(side: str, facts: Sequence[ReportFacts]) -> list[str]:
    found: list[str] = []
    reports = len(facts)
    from_go = [fact for fact in facts if fact.go_tool]
    windows = sorted({fact.elapsed_ns for fact in from_go if fact.window_known})
    if windows:
        shown = " to ".join(_window(elapsed_ns) for elapsed_ns in sorted({windows[0], windows[-1]}))
        subject = _subject(side, len(from_go), reports)
        found.append(
            f"{subject} {'is the Go collect-kernel-stats tool' if reports == 1 else 'are the Go tool'}'s: "
            f"its rates divide by the duration it was asked for ({shown}), not by the span between "
            "its counter reads, which is longer by the time its reads took."
        )
    unknown = [fact for fact in facts if not fact.window_known]
    if unknown:
        whose = "its report gives" if reports == 1 else "they give"
        why = (
            " (the Go tool's first version writes collection_duration_sec 0)"
            if all(fact.go_tool for fact in unknown)
            else ""
        )
        subject = _subject(side, len(unknown), reports)
        found.append(
            f"Rates unknown for {subject[0].lower()}{subject[1:]}: {whose} no window length{why}; "
            "runs and average runtimes are compared, not events/s or CPU %."
        )
    unlisted = [fact.unlisted for fact in facts if fact.unlisted is not None]
    if unlisted:
        runs = sum(entry.run_count for entry in unlisted)
        runtime_ns = sum(entry.runtime_ns for entry in unlisted)
        where = "" if reports == 1 else f" (in {len(unlisted)} of its {reports} reports)"
        text = (
            f"The {side}'s totals count {runs:,} runs ({runtime_ns:,} ns of runtime) that no row has{where}"
        )
        programs = [entry.programs for entry in unlisted if entry.programs]
        if all(entry.go_tool for entry in unlisted):
            text += (
                ": the Go tool keys programs by kernel name and lists one program of each name, "
                "so the others sharing a name are in its totals only"
            )
        elif programs:
            text += f": {sum(programs):,} programs unloaded long ago, no longer listed"
        found.append(text + ". The (total) row counts them.")
    return found


def notes(comparison: Comparison) -> list[str]:
    """What the figures rest on, per side: said under the table and in JSON."""
    return [
        *_side_notes("baseline", comparison.baseline_reports),
        *_side_notes("current", comparison.current_reports),
    ]


# The columns of the owners' table (every owner metric can be an `owner:` threshold).
OWNER_SHOWN: Final = tuple(
    metric
    for metric in OWNER_METRICS
    if metric.name in ("process_cpu_percent", "kernel_cpu_percent", "whole_cpu_percent", "peak_rss_bytes")
)


def _owner_label(row: Row) -> str:
    counts = [measures.programs for measures in (row.baseline, row.current) if measures is not None]
    return row.name + (f" (x{max(counts)} processes)" if max(counts) > 1 else "")


def _footer(
    comparison: Comparison,
    violations: Sequence[str],
    *,
    bullet: str,
    show_idle: bool,
    escape: Callable[[str], str],
    unchecked: Sequence[str] = (),
) -> list[str]:
    """The lines under the table; `escape` makes what came from the reports (names, in the
    lists and the violations) literal text in the output's medium."""
    lines = [
        f"Windows: baseline {_window(comparison.baseline_elapsed_ns)}, "
        f"current {_window(comparison.current_elapsed_ns)}"
        + (" (medians)." if comparison.several_runs else "."),
        *notes(comparison),
    ]
    hidden = len(comparison.rows) - len(_shown_rows(comparison, show_idle))
    if hidden:
        rows = "row" if hidden == 1 else "rows"
        lines.append(f"{hidden:,} {rows} without a run on either side not shown (--show-idle shows them).")
    if comparison.several_runs:
        runs = f"Runs: baseline {comparison.baseline_runs}, current {comparison.current_runs}"
        if comparison.testable:
            lines.append(
                f"{runs}; medians ± half their range. Changes tested with a two-sided "
                f"Mann-Whitney U test at alpha={comparison.alpha:g}: ~ means no significant change."
            )
        else:
            needed = f"it takes {runs_needed(comparison.alpha)} per side"
            for side, other in (("baseline", comparison.current_runs), ("current", comparison.baseline_runs)):
                alone = runs_needed_beside(comparison.alpha, other)
                if other < runs_needed(comparison.alpha) and alone is not None:
                    other_side = "current" if side == "baseline" else "baseline"
                    needed += f", or {alone} {side} runs beside {other} {other_side}"
            lines.append(
                f"{runs}: too few for any change to be significant at alpha={comparison.alpha:g} "
                f"({needed}); changes are of the medians, untested (?)."
            )
    if any(side is not None for side in comparison.kstat_programs):
        sides = [
            "none"
            if side is None
            else f"{side.programs} ({side.value('estimated_cpu_percent') or 0:.3g}% of one CPU)"
            for side in comparison.kstat_programs
        ]
        lines.append(
            "Other kstat instances' own programs, in no row or total: "
            f"baseline {sides[0]}, current {sides[1]}."
        )
    if comparison.only_in_baseline:
        lines.append("Only in baseline: " + _some_of(comparison.only_in_baseline, escape))
    if comparison.only_in_current:
        lines.append("Only in current: " + _some_of(comparison.only_in_current, escape))
    if unchecked:
        lines.append(f"Not checked ({len(unchecked)}):")
        lines += [bullet + escape(line) for line in unchecked]
    if violations:
        lines.append(f"REGRESSION ({len(violations)}):")
        lines += [bullet + escape(violation) for violation in violations]
    else:
        lines.append("No threshold exceeded.")
    return lines


# How many rows a footer's list names; JSON has them all.
_LISTED_AT_MOST: Final = 10


def _some_of(rows: Sequence[Row], escape: Callable[[str], str]) -> str:
    """A list of rows short enough to read: those that ran first, then the idle (their names
    escaped for the medium)."""
    ordered = sorted(rows, key=lambda row: row.idle)
    named = ", ".join(escape(row.label) for row in ordered[:_LISTED_AT_MOST])
    rest = len(ordered) - _LISTED_AT_MOST
    return named if rest <= 0 else f"{named} and {rest:,} more (--format json lists them all)"


def render_table(
    comparison: Comparison,
    violations: Sequence[str],
    width: int | None = None,
    show_idle: bool = False,
    unchecked: Sequence[str] = (),
) -> str:
    """A rich table as text (colours only on a terminal)."""
    from rich.console import Console  # noqa: PLC0415 - rich only loads for this output
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(title="Kernel-side eBPF cost: baseline → current", show_lines=False)
    table.add_column("program", overflow="fold")
    for metric in SHOWN:
        table.add_column(metric.heading, justify="right")
    for row in (*_shown_rows(comparison, show_idle), comparison.total):
        style = "bold" if row.name == TOTAL else None
        # Text, not a str: rich would read `[...]` in a name as its markup.
        label = Text(for_terminal(_label(row)))
        table.add_row(label, *(_cell(row, metric.name, comparison) for metric in SHOWN), style=style)
    owners = None
    if comparison.owners:
        owners = Table(
            title="Whole cost per owner (its own CPU + its programs' kernel CPU)", show_lines=False
        )
        owners.add_column("owner", overflow="fold")
        for shown in OWNER_SHOWN:
            owners.add_column(shown.heading, justify="right")
        for row in comparison.owners:
            owners.add_row(
                Text(for_terminal(_owner_label(row))),
                *(_cell(row, shown.name, comparison) for shown in OWNER_SHOWN),
            )
    console = Console(width=width or 160, record=True, force_terminal=False, color_system=None)
    with console.capture() as captured:
        console.print(table)
        if owners is not None:
            console.print(owners)
        for line in _footer(
            comparison, violations, bullet="  ", show_idle=show_idle, escape=for_terminal, unchecked=unchecked
        ):
            console.print(line, highlight=False, markup=False)
    return captured.get()


def _facts_data(facts: ReportFacts) -> dict[str, Any]:
    unlisted = facts.unlisted
    return {
        "go_tool": facts.go_tool,
        "window_known": facts.window_known,
        "collection_duration_ns": facts.elapsed_ns,
        # What its totals count beyond its rows: each counter's runs (None where unknown), and
        # how many programs where the report says.
        "unlisted": (
            None
            if unlisted is None
            else {
                "programs": unlisted.programs,
                **{
                    spec.metric: scalar(value)
                    for spec, value in zip(COUNTERS, unlisted.counters, strict=True)
                    if spec.metric is not None  # per-CPU splits: their sums are here already
                },
            }
        ),
    }


def render_json(comparison: Comparison, violations: Sequence[str], unchecked: Sequence[str] = ()) -> str:
    def side(measures: Measures | None) -> dict[str, Any] | None:
        if measures is None:
            return None
        data: dict[str, Any] = {"programs": measures.programs, **measures.values}
        if measures.runs:
            data["runs"] = [dict(run) for run in measures.runs]
        return data

    def row_data(row: Row) -> dict[str, Any]:
        verdicts = {metric.name: row.verdict(metric.name, comparison.alpha) for metric in METRICS}
        return {
            "name": row.name,
            "type": row.type,
            "baseline": side(row.baseline),
            "current": side(row.current),
            "change_percent": {metric.name: row.change_percent(metric.name) for metric in METRICS},
            # The rank test's p-value; null where untested (too few runs, a side missing).
            "p_value": {name: None if found is None else found.p_value for name, found in verdicts.items()},
            "significant": {
                name: None if found is None or not found.testable else found.significant
                for name, found in verdicts.items()
            },
        }

    def owner_data(row: Row) -> dict[str, Any]:
        return {
            "command": row.name,
            "baseline": side(row.baseline),
            "current": side(row.current),
            "change_percent": {metric.name: row.change_percent(metric.name) for metric in OWNER_METRICS},
        }

    data = {
        "programs": [row_data(row) for row in comparison.rows],
        "owners": [owner_data(row) for row in comparison.owners],
        "total": row_data(comparison.total),
        "only_in_baseline": [row.label for row in comparison.only_in_baseline],
        "only_in_current": [row.label for row in comparison.only_in_current],
        "baseline_runs": comparison.baseline_runs,
        "current_runs": comparison.current_runs,
        "alpha": comparison.alpha,
        "testable": comparison.testable,
        "baseline_reports": [_facts_data(facts) for facts in comparison.baseline_reports],
        "current_reports": [_facts_data(facts) for facts in comparison.current_reports],
        "notes": notes(comparison),
        "unchecked": list(unchecked),
        "violations": list(violations),
        "regression": bool(violations),
    }
    return json.dumps(data, indent=2) + "\n"


FORMATS: Final = ("table", "markdown", "json")


def render(
    comparison: Comparison,
    violations: Sequence[str],
    output_format: str,
    show_idle: bool = False,
    unchecked: Sequence[str] = (),
) -> str:
    """The comparison in one of FORMATS (JSON has every row whatever `show_idle` says);
    `unchecked`: the thresholds that could not be checked (`Comparison.unchecked`)."""
    if output_format == "json":
        return render_json(comparison, violations, unchecked)
    if output_format == "markdown":
        return render_markdown(comparison, violations, show_idle=show_idle, unchecked=unchecked)
    return render_table(comparison, violations, show_idle=show_idle, unchecked=unchecked)
