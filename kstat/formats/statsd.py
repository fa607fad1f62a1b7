"""StatsD lines: the catalogue's exported metrics per program and interval, as text.

A pure encoder (no sockets: `kstat._datagrams` sends the lines). Per program and interval, the
metrics the catalogue marks for export: its counters as StatsD counters (`|c`, summed by the
server) and its rates and ratios as gauges (`|g`, last value kept); the same under `total`.
Without tags a metric is `PREFIX.PROGRAM.METRIC`, PROGRAM being the report key made safe for
StatsD and Graphite (`kstat.text.for_statsd_names`: distinct, where two keys would become one
name); with DogStatsD tags it is `PREFIX.program.METRIC|#program:NAME,id:ID,type:TYPE`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from attrs import define, field, frozen

from kstat.core import catalogue
from kstat.core.catalogue import Kind, Metric, Number, Span, View, in_view
from kstat.core.counters import Counters, grown
from kstat.core.delta import IntervalDelta
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramIdentity, ProgramOwner, ProgramStats
from kstat.core.owner_cost import OWNER_METRICS, OwnerKind, OwnerSpan, interval_spans, process_grown
from kstat.core.report import Report, report_keys
from kstat.text import for_statsd_name, for_statsd_names, for_statsd_tag

# An idle program's zeros go out once within its first this many intervals (a share of the
# programs in each, by id): no interval carries them all.
ANNOUNCE_INTERVALS: Final = 60
# Then once every this many (an hour at 1 s), for a server that restarted and lost them: a
# running server keeps a gauge's last value and flushes it itself, and flushes a counter it is
# not sent as 0 (the reference daemon's defaults), so nothing more is needed while it runs.
FULL_REFRESH_INTERVALS: Final = 3600
# The turns one delta takes at most when intervals slipped.
_MOST_TURNS_A_DELTA: Final = 2
_EXPORTED: Final = in_view(View.EXPORT)


class Naming(Protocol):
    """How the lines are named: the prefix, and DogStatsD tags or names alone."""

    @property
    def prefix(self) -> str: ...

    @property
    def dogstatsd_tags(self) -> bool: ...


def _number(value: float) -> str:
    # StatsD reads plain decimals; exponents ("1e-05") are not valid everywhere.
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


@frozen
class ProgramName:
    """How a program is named in StatsD: its report key, or its name, id and type as tags."""

    key: str
    name: str
    id: int
    type: str
    # Where its owners run (pod, namespace, container, unit): more tags with dogstatsd.
    places: tuple[tuple[str, str], ...] = ()


def places_of(owners: Sequence[ProgramOwner]) -> tuple[tuple[str, str], ...]:
    """(tag, value) pairs for where a program's owners run; the first owner that says wins."""
    found: dict[str, str] = {}
    for owner in owners:
        workload = owner.workload
        for tag, value in (
            ("pod", workload.pod),
            ("namespace", workload.namespace),
            ("container", workload.container_name),
            ("unit", workload.unit),
        ):
            if value is not None:
                found.setdefault(tag, value)
    return tuple(found.items())


def program_lines(
    program: ProgramName, values: Mapping[str, Number], settings: Naming, metric_name: str
) -> list[str]:
    """One program's lines for one interval: every exported metric (the catalogue's).
    `metric_name` is its name among the others' (`kstat.for_statsd_names`), used without tags.
    A counter this kernel lacks (absent from `values`) is left out, never sent as 0."""
    stem, suffix = _stem_and_suffix(program, settings, metric_name)
    # A footprint (code size, memory) is sent when the line carries it: once per program.
    return [
        _line(f"{stem}.{metric.name}", metric, values.get(metric.name, 0), suffix)
        for metric in _EXPORTED
        if metric.kind is Kind.GAUGE or metric.name in values
    ]


def _stem_and_suffix(program: ProgramName, settings: Naming, metric_name: str) -> tuple[str, str]:
    """What comes before a line's `.METRIC` (the prefix and the program's name) and after its
    type (the DogStatsD tags)."""
    if settings.dogstatsd_tags:
        name = for_statsd_tag(program.name) or "unnamed"
        places = "".join(f",{tag}:{for_statsd_tag(value)}" for tag, value in program.places)
        return (
            f"{settings.prefix}.program",
            f"|#program:{name},id:{program.id},type:{for_statsd_tag(program.type)}{places}",
        )
    return f"{settings.prefix}.{metric_name}", ""


# How each exported metric's line reads around its value: (name, head, a counter, a gauge).
_TAILS: Final = tuple(
    (metric.name, f".{metric.name}:", metric.kind is Kind.COUNTER, metric.kind is Kind.GAUGE)
    for metric in _EXPORTED
)


def _tails(values: Mapping[str, Number]) -> list[str]:
    """What `program_lines` puts after the stem of each line, before the suffix (shared by the
    idle programs, whose values are alike): `_lines_between` with neither."""
    return _lines_between("", "", values)


def _lines_between(stem: str, suffix: str, values: Mapping[str, Number]) -> list[str]:
    """Each exported metric's line for `values`, between `stem` and `suffix`: a gauge always
    (0 when unknown), a counter or a footprint figure only when `values` has it. A busy
    program's lines are made whole in one go (its values differ every interval)."""
    found = []
    for name, head, counter, gauge in _TAILS:
        value = values.get(name)
        if value is None:
            if not gauge:
                continue
            value = 0
        if counter:
            found.append(f"{stem}{head}{int(value)}|c{suffix}")
        else:
            found.append(f"{stem}{head}{_number(float(value))}|g{suffix}")
    return found


def total_lines(totals: Mapping[str, Number], settings: Naming) -> list[str]:
    return [
        _line(f"{settings.prefix}.total.{metric.name}", metric, totals[metric.name], "")
        for metric in _EXPORTED
        if metric.name in totals
    ]


def _statsd_name(key: str) -> str:
    return for_statsd_name(key) or "unnamed"


def _line(name: str, metric: Metric, value: Number, suffix: str) -> str:
    if metric.kind is Kind.COUNTER:
        return f"{name}:{int(value)}|c{suffix}"
    return f"{name}:{_number(float(value))}|g{suffix}"


def metric_lines(report: Report, settings: Naming) -> list[str]:
    """Every StatsD line for a report's programs and totals (each program, idle or not)."""
    lines: list[str] = []
    programs = report.program_stats
    names = for_statsd_names(list(programs), [line.id for line in programs.values()])
    for (key, line), metric_name in zip(programs.items(), names, strict=True):
        named = ProgramName(key, line.name, line.id, line.type, places_of(line.owners))
        lines += program_lines(named, line.metrics, settings, metric_name)
    return lines + total_lines(report.totals, settings)


@define
class IntervalLines:
    """The lines of each interval, for a window: what a StatsD server needs to know, and no more.

    A program with no runs has zero counters and zero gauges; saying so once is enough: a
    StatsD server keeps a gauge's last value (the reference daemon flushes it every interval
    unless told to delete idle gauges) and flushes a counter it was not sent as 0. So an idle
    program is announced once within its first ANNOUNCE_INTERVALS intervals (a share of them
    each interval, by id), then sent again only once every FULL_REFRESH_INTERVALS (for a
    server that restarted): at 10,000 programs, three an interval. The programs' names are kept
    up to date from the deltas' changes, so an interval costs what changed, not what is loaded.
    """

    settings: Naming
    # The turns taken, and the window's time so far against the interval asked for.
    intervals: int = 0
    elapsed_ns: int = 0
    interval_ns: int = 0
    # Every program loaded, by identity, with its StatsD name.
    programs: dict[ProgramIdentity, ProgramName] = field(factory=dict)
    # Programs that had lines in the previous interval (their gauges are not yet zero).
    active: set[ProgramIdentity] = field(factory=set)
    # Programs not yet announced, by their turn (their id modulo ANNOUNCE_INTERVALS).
    announcing: dict[int, set[ProgramIdentity]] = field(factory=lambda: defaultdict(set))
    # Every program by its turn to be sent again (its id modulo FULL_REFRESH_INTERVALS).
    turns: dict[int, set[ProgramIdentity]] = field(factory=lambda: defaultdict(set))
    # Each program's name in the lines, distinct among every program's; worked out again only
    # when programs come, go or change keys.
    _metric_names: dict[ProgramIdentity, str] = field(factory=dict)
    _names_stale: bool = True
    # Programs that came, went or changed keys since the names were worked out: (identity,
    # key before, key now), None for none.
    _renamed: list[tuple[ProgramIdentity, str | None, str | None]] = field(factory=list)
    # How many programs each safe name stands for, and whether each stands for one.
    _claimed: Counter[str] = field(factory=Counter)
    _distinct: bool = False
    # Each program's lines' stem and suffix, by identity, as its name has them now.
    _stems: dict[ProgramIdentity, tuple[str, str]] = field(factory=dict)
    # The idle values and their lines' tails, once worked out.
    _idle_lines: tuple[Mapping[str, Number], list[str]] | None = None
    # Every owner process met, by pid, for its whole cost per interval.
    _owners: dict[int, ProgramOwner] = field(factory=dict)
    # An idle program's values: zeros, but for the counters this kernel lacks (None until a
    # program's counters say which those are).
    _idle: Mapping[str, Number] | None = None

    def _learn_idle(self, counters: Counters) -> None:
        if self._idle is None:
            self._idle = catalogue.values(Span(grown(counters, counters), 0, None), _EXPORTED)

    def start(self, event: WindowStarted) -> None:
        self.interval_ns = event.interval_ns
        programs = event.snapshot.programs
        if programs:
            self._learn_idle(programs[0].counters)
        for program in programs:
            self.announcing[program.id % ANNOUNCE_INTERVALS].add(program.identity)
            self.turns[program.id % FULL_REFRESH_INTERVALS].add(program.identity)
        self.programs = {
            program.identity: ProgramName(
                key,
                program.name,
                program.id,
                program.type,
                places_of(program.details.owners),
            )
            for program, key in zip(programs, report_keys(programs), strict=True)
        }
        self._names_stale = True
        self._renamed = []
        self._stems = {}
        self._owners = {owner.pid: owner for program in programs for owner in program.details.owners}

    def _name(self, identity: ProgramIdentity, key: str, program: ProgramStats) -> None:
        """The program's name in the lines, kept up to date: a program's name, type and owners
        are fixed while it is loaded, its key may change (when another of its name comes)."""
        known = self.programs.get(identity)
        if known is not None and known.key == key and known.name == program.name and known.id == program.id:
            return
        named = ProgramName(key, program.name, program.id, program.type, places_of(program.details.owners))
        if known != named:
            if known is None or known.key != named.key:
                self._renamed.append((identity, None if known is None else known.key, named.key))
            self.programs[identity] = named
            self._stems.pop(identity, None)

    def _names(self) -> dict[ProgramIdentity, str]:
        renamed, self._renamed = self._renamed, []
        if not self._names_stale and renamed and self._unclaimed(renamed):
            return self._metric_names
        if self._names_stale or renamed:
            identities = list(self.programs)
            named = [self.programs[identity] for identity in identities]
            found = for_statsd_names([name.key for name in named], [name.id for name in named])
            self._metric_names = dict(zip(identities, found, strict=True))
            self._claimed = Counter(_statsd_name(name.key) for name in named)
            self._distinct = len(self._claimed) == len(named)
            self._stems.clear()
            self._names_stale = False
        return self._metric_names

    def _unclaimed(self, renamed: list[tuple[ProgramIdentity, str | None, str | None]]) -> bool:
        """Programs that came, went or changed keys, named without working out every other's
        name again: while no two programs' safe names are one, each is its safe name (as
        `for_statsd_names` gives it). False, with the counts as they were, where they would be."""
        if not self._distinct:
            return False
        claimed = self._claimed
        for _, before, after in renamed:
            if before is not None:
                claimed[_statsd_name(before)] -= 1
            if after is not None:
                claimed[_statsd_name(after)] += 1
        if any(claimed[_statsd_name(key)] > 1 for _, _, key in renamed if key is not None):
            self._names_stale = True  # worked out whole, the counts with them
            return False
        names = self._metric_names
        for identity, before, after in renamed:
            if before is not None and claimed[_statsd_name(before)] <= 0:
                del claimed[_statsd_name(before)]
            self._stems.pop(identity, None)
            if after is None:
                names.pop(identity, None)
            else:
                names[identity] = _statsd_name(after)
        return True

    def _idle_tails(self, idle: Mapping[str, Number]) -> list[str]:
        """An idle program's tails (the same for every idle program), worked out once."""
        if self._idle_lines is None or self._idle_lines[0] is not idle:
            self._idle_lines = (idle, _tails(idle))
        return self._idle_lines[1]

    def _stem(self, identity: ProgramIdentity, names: Mapping[ProgramIdentity, str]) -> tuple[str, str]:
        stems = self._stems
        found = stems.get(identity)
        if found is None:
            named = self.programs[identity]
            found = stems[identity] = _stem_and_suffix(named, self.settings, names[identity])
        return found

    def lines_for(self, delta: IntervalDelta) -> list[str]:
        settings = self.settings
        # Each idle program once within ANNOUNCE_INTERVALS, in turns by id, from the first
        # interval on: no interval carries them all (at 10,000 programs that burst overflowed the
        # reference server's UDP receive buffer: 1,592 programs arrived); then at its turn among
        # FULL_REFRESH_INTERVALS.
        # Turns go by the window's time, not by the deltas received: intervals that slipped on
        # a busy host, or that a sink that fell behind gets merged, catch up with the turns
        # their time spanned, two turns a delta at most (a burst of every turn at once would
        # overflow the server's buffer again: kstat's start-up alone spans several).
        self.elapsed_ns += delta.elapsed_ns
        by_time = round(self.elapsed_ns / self.interval_ns) if self.interval_ns else 0
        due = min(max(self.intervals + 1, by_time), self.intervals + _MOST_TURNS_A_DELTA)
        announced: set[ProgramIdentity] = set()
        refreshed: set[ProgramIdentity] = set()
        for turn in range(self.intervals, due):
            announced |= self.announcing.pop(turn % ANNOUNCE_INTERVALS, set())
            refreshed |= self.turns.get(turn % FULL_REFRESH_INTERVALS, set())
        self.intervals = due
        sent: list[tuple[ProgramIdentity, Mapping[str, Number]]] = []
        active: set[ProgramIdentity] = set()
        gone: list[ProgramIdentity] = []
        changes = delta.active
        # The delta's figures and sightings, not its lines: no line is made for StatsD.
        for key, metrics in delta.figures.items():
            change = changes[key]
            program = change.last
            identity = program.identity
            self._learn_idle(program.counters)
            if identity not in self.programs and not change.unloaded:
                self.turns[program.id % FULL_REFRESH_INTERVALS].add(identity)
            # A program that went is still named among the others for its last lines.
            self._name(identity, key, program)
            sent.append((identity, metrics))
            if change.unloaded:
                gone.append(identity)
            else:
                active.add(identity)
        idle = {} if self._idle is None else self._idle
        sent += [
            (identity, idle)
            for identity in (self.active | announced | refreshed) - active
            if identity in self.programs
        ]
        names = self._names()
        lines: list[str] = []
        idle_tails = self._idle_tails(idle)
        for identity, values in sent:
            stem, suffix = self._stem(identity, names)
            if values is idle:
                lines += [f"{stem}{tail}{suffix}" for tail in idle_tails]
            else:
                lines += _lines_between(stem, suffix, values)
        for identity in gone:
            named = self.programs.pop(identity, None)
            if named is not None:
                self._renamed.append((identity, named.key, None))
            self._stems.pop(identity, None)
            self.turns[identity.id % FULL_REFRESH_INTERVALS].discard(identity)
            self.announcing.get(identity.id % ANNOUNCE_INTERVALS, set()).discard(identity)
        self.active = active
        return lines + total_lines(delta.totals, settings)

    def owner_lines(self, event: IntervalEnded) -> list[str]:
        """Each owner process's whole cost over the interval (`PREFIX.owner.COMMAND.PID.METRIC`,
        or `PREFIX.owner.METRIC|#command:COMMAND,pid:PID,...` with tags), from the owner
        catalogue: its own CPU beside what its programs ran in the interval (a program several
        processes hold counts for each). Idle programs cost nothing here; a process is sent from
        its second reading on, and not once it is gone."""
        delta = event.delta
        if not event.current.processes:
            return []
        owners = self._owners
        kernel_ns: dict[int, int] = {}
        changes = delta.active
        for key, metrics in delta.figures.items():
            ran = int(metrics.get("runtime_ns", 0))
            for holder in changes[key].details.owners:
                owners.setdefault(holder.pid, holder)
                kernel_ns[holder.pid] = kernel_ns.get(holder.pid, 0) + ran
        settings = self.settings
        lines: list[str] = []
        for pid, seen in interval_spans(event.previous.processes, event.current.processes).items():
            owner = owners.get(pid)
            if owner is None:
                continue
            span = OwnerSpan(
                process_grown(seen.last, seen.baseline),
                Counters(kernel_ns.get(pid, 0), 0),
                delta.elapsed_ns,
                0,
            )
            if settings.dogstatsd_tags:
                stem = f"{settings.prefix}.owner"
                places = "".join(f",{tag}:{for_statsd_tag(value)}" for tag, value in places_of([owner]))
                suffix = f"|#command:{for_statsd_tag(owner.command) or 'unnamed'},pid:{pid}{places}"
            else:
                (command,) = for_statsd_names([owner.command], [pid])
                stem, suffix = f"{settings.prefix}.owner.{command}.{pid}", ""
            for metric in OWNER_METRICS:
                if metric.name == "programs":
                    continue  # a count of the window's, not of an interval
                value = metric.compute(span)
                if value is None:
                    continue
                if metric.kind is OwnerKind.COUNTER:
                    lines.append(f"{stem}.{metric.name}:{int(value)}|c{suffix}")
                else:
                    lines.append(f"{stem}.{metric.name}:{_number(float(value))}|g{suffix}")
        return lines
