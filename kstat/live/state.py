"""What `kstat top` shows, as plain data: every program's numbers, the sort, the filter, the
selection and which screen is up. The events and the keys change it; `kstat.live.screen` draws
it. Nothing here touches a terminal, so all of it is tested without one."""

from __future__ import annotations

import enum
import math
import re
from collections import deque
from collections.abc import Sequence
from typing import Final

from attrs import define, field, frozen

from kstat.core.catalogue import NS_PER_S, metric
from kstat.core.counters import COUNTERS, ZERO, scalar
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramDetails, ProgramIdentity
from kstat.core.owner_cost import HeldProgram, OwnerCost, interval_spans, owners_section
from kstat.core.sighting import Sighting

_MEAN_RUNTIME: Final = metric("mean_runtime_ns")
# How long a program stays marked as new, or is shown after it went away (intervals).
MARKED_FOR: Final = 5
# The detail screen's charts cover about a minute.
HISTORY_SECONDS: Final = 60


class Screen(enum.Enum):
    TABLE = "table"
    DETAIL = "detail"
    HELP = "help"
    # Each process holding programs: its own CPU beside its programs' (the `o` key).
    OWNERS = "owners"


@frozen
class Column:
    key: str
    heading: str
    # Narrow terminals drop columns, lowest priority first.
    priority: int
    # Its width in cells, heading included (the name and the owner, at least this, get what
    # the other columns leave of the terminal).
    width: int
    numeric: bool = True
    # A figure of the program's runs (a dash when it is 0), not a name or its id.
    figure: bool = True
    # A counter's column (its growth this session): the counter catalogue's field.
    counter: str | None = None


# In screen order; the sort keys 1..9 are the columns on the screen, in this order. PERIOD is
# the last interval, TOTAL the session so far (bpftop's words); EVENTS/S and CPU % are the
# period's. The counters' columns (TOTAL RUNS) are their entries' in the counter catalogue.
COLUMNS: Final = (
    Column("id", "ID", 6, 7, figure=False),
    Column("type", "TYPE", 3, 12, numeric=False, figure=False),
    Column("name", "NAME", 10, 20, numeric=False, figure=False),
    Column("owner", "OWNER", 2, 20, numeric=False, figure=False),
    Column("events_per_sec", "EVENTS/S", 8, 10),
    Column("avg_ns", "PERIOD AVG NS", 7, 13),
    Column("window_avg_ns", "TOTAL AVG NS", 4, 12),
    Column("cpu_percent", "CPU %", 9, 8),
    *(
        Column(spec.top.key, spec.top.heading, spec.top.priority, spec.top.width, counter=spec.name)
        for spec in COUNTERS
        if spec.top is not None
    ),
)
COLUMN_KEYS: Final = tuple(column.key for column in COLUMNS)
COLUMN_BY_KEY: Final = {column.key: column for column in COLUMNS}
_DIGITS: Final = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[str | int, ...]:
    """Sorts `prog_2` before `prog_10`: runs of digits compare as numbers (case aside)."""
    parts = _DIGITS.split(text.lower())
    # Even places are text, odd places digits: tuples of two names always compare like to like.
    return tuple(int(part) if index % 2 else part for index, part in enumerate(parts))


@define
class ProgramView:
    """One program as the table shows it."""

    identity: ProgramIdentity
    id: int
    type: str
    name: str
    details: ProgramDetails
    tag: str
    load_time_ns: int
    memlock_bytes: int | None
    # What the window saw of it: its counters since the window first met it (from zero for
    # one loaded inside the window).
    window: Sighting
    # The last interval's figures (the catalogue's, from the interval's line).
    events_per_sec: float = 0.0
    avg_ns: float = 0.0
    cpu_percent: float = 0.0
    # The last minute of intervals: CPU %, events/s, average runtime (None: no runs).
    history_cpu: deque[float] = field(factory=deque)
    history_events: deque[float] = field(factory=deque)
    history_avg: deque[float | None] = field(factory=deque)
    # Intervals left to show it as new, or (once gone) at all.
    new_for: int = 0
    gone_for: int | None = None
    # With per-CPU counters (`--per-cpu`): the last interval's share of each CPU on which it
    # ran (% of that CPU); None without them.
    cpu_shares: dict[int, float] | None = None

    @property
    def window_cpu_runs(self) -> dict[int, int] | None:
        """Its runs on each CPU this session (None without per-CPU counters)."""
        runs = self.window.grown.per_cpu_run_count
        return None if runs is None else {cpu: count for cpu, count in enumerate(runs) if count}

    @property
    def runs(self) -> int:
        return self.window.grown.run_count

    @property
    def window_avg_ns(self) -> float:
        return float(_MEAN_RUNTIME.compute(self.window.span(0, None)) or 0.0)

    @property
    def owner(self) -> str:
        """`4242/agent (pod monitoring/flow-x7k2p)`, `+2` when more hold it; `-` for none."""
        owners = self.details.owners
        if not owners:
            return "-"
        first = owners[0]
        text = first.label
        workload = first.workload
        if workload.pod:
            text += f" ({workload.namespace + '/' if workload.namespace else ''}{workload.pod})"
        elif workload.container_name or workload.container_id:
            text += f" ({workload.container_name or (workload.container_id or '')[:12]})"
        elif workload.unit:
            text += f" ({workload.unit})"
        return text + (f" +{len(owners) - 1}" if len(owners) > 1 else "")

    @property
    def status(self) -> str:
        if self.gone_for is not None:
            return "gone"
        return "new" if self.new_for > 0 else ""

    def value(self, key: str) -> float | str:
        column = COLUMN_BY_KEY.get(key)
        if column is not None and column.counter is not None:
            return scalar(getattr(self.window.grown, column.counter)) or 0
        found: float | str | int = getattr(self, key)
        return found


@frozen
class Totals:
    cpu_percent: float = 0.0
    events_per_sec: float = 0.0
    loaded: int = 0
    ran: int = 0
    online_cpus: int = 1


@define
class TopState:
    """The whole view. `apply_*` take the window's events; `press` takes a key."""

    interval_ns: int = NS_PER_S
    programs: dict[ProgramIdentity, ProgramView] = field(factory=dict)
    totals: Totals = Totals()
    intervals: int = 0
    sort_key: str = "cpu_percent"
    reverse: bool = True
    # The columns the screen shows now (a narrow terminal drops some): the digits sort by these.
    visible_columns: tuple[str, ...] = COLUMN_KEYS
    filter_text: str = ""
    # Typing a filter: the text so far (None when not typing).
    typing: str | None = None
    selected: ProgramIdentity | None = None
    screen: Screen = Screen.TABLE
    paused: bool = False
    quit: bool = False
    # Whether something changed since the screen was drawn.
    dirty: bool = True
    # Each owner process's whole cost over the last interval, costliest first.
    owners: list[OwnerCost] = field(factory=list)

    @property
    def history_length(self) -> int:
        return max(2, math.ceil(HISTORY_SECONDS * NS_PER_S / max(self.interval_ns, 1)))

    # --- events ------------------------------------------------------------------------------

    def apply_start(self, event: WindowStarted) -> None:
        self.interval_ns = event.interval_ns
        snapshot = event.snapshot
        self.totals = Totals(loaded=len(snapshot.programs), online_cpus=event.online_cpus)
        for program in snapshot.programs:
            self.programs[program.identity] = self._new_view(Sighting.from_now(program))
        self.dirty = True

    def _new_view(self, window: Sighting) -> ProgramView:
        program, details = window.last, window.details
        footprint = program.footprint
        return ProgramView(
            identity=program.identity,
            id=program.id,
            type=program.type,
            name=program.name,
            details=details,
            tag=program.tag,
            load_time_ns=program.load_time_ns,
            memlock_bytes=None if footprint is None else footprint.memlock_bytes,
            window=window,
        )

    def apply_interval(self, event: IntervalEnded) -> None:
        delta = event.delta
        self.intervals += 1
        touched: set[ProgramIdentity] = set()
        created: set[ProgramIdentity] = set()
        for key, change in delta.active.items():
            program = change.last
            view = self.programs.get(program.identity)
            if view is None:
                view = self.programs[program.identity] = self._new_view(change)
                view.new_for = MARKED_FOR
                created.add(program.identity)
            else:
                view.window = view.window.read_again(program)
            metrics = delta.lines[key].metrics
            view.events_per_sec = float(metrics["events_per_sec"])
            view.avg_ns = float(metrics["mean_runtime_ns"])
            view.cpu_percent = float(metrics["estimated_cpu_percent"])
            per_cpu = delta.lines[key].per_cpu
            view.cpu_shares = (
                None
                if per_cpu is None or delta.elapsed_ns <= 0
                else {
                    cpu: values.get("runtime_ns", 0) * 100 / delta.elapsed_ns
                    for cpu, values in per_cpu.items()
                }
            )
            if change.unloaded:
                view.gone_for = MARKED_FOR
                created.add(program.identity)  # counts down from the next interval
            touched.add(program.identity)
        for identity, view in list(self.programs.items()):
            if identity not in touched:
                view.events_per_sec = view.avg_ns = view.cpu_percent = 0.0
                if view.cpu_shares is not None:
                    view.cpu_shares = {}
            self._remember(view)
            if identity in created:
                continue
            if view.new_for > 0:
                view.new_for -= 1
            if view.gone_for is not None:
                view.gone_for -= 1
                if view.gone_for <= 0:
                    del self.programs[identity]
        totals = delta.totals
        self.totals = Totals(
            cpu_percent=float(totals.get("estimated_cpu_percent", 0.0)),
            events_per_sec=float(totals.get("events_per_sec", 0.0)),
            loaded=sum(1 for view in self.programs.values() if view.gone_for is None),
            ran=sum(1 for change in delta.changes if change.grown.run_count),
            online_cpus=self.totals.online_cpus,
        )
        if self.selected not in self.programs:
            self.selected = None
        self._owners_of(event)
        self.dirty = True

    def _owners_of(self, event: IntervalEnded) -> None:
        """The owners' whole cost over the interval: their readings' growth, and what their
        programs ran in it (a program several hold counts for each)."""
        if not event.current.processes:
            self.owners = []
            return
        grown = {change.last.identity: change.grown for change in event.delta.active.values()}
        held = [
            HeldProgram(view.id, view.details.owners, grown.get(identity, ZERO))
            for identity, view in self.programs.items()
            if view.details.owners and (view.gone_for is None or identity in grown)
        ]
        spans = interval_spans(event.previous.processes, event.current.processes)
        section = owners_section(held, spans, event.delta.elapsed_ns)
        read = {usage.pid for usage in event.current.processes}
        found = [] if section is None else [cost for cost in section.owners if cost.pid in read]
        found.sort(key=lambda cost: (-float(cost.metrics.get("whole_cpu_percent", 0.0)), cost.pid))
        self.owners = found

    def _remember(self, view: ProgramView) -> None:
        limit = self.history_length
        for history, value in (
            (view.history_cpu, view.cpu_percent),
            (view.history_events, view.events_per_sec),
        ):
            history.append(value)
            while len(history) > limit:
                history.popleft()
        view.history_avg.append(view.avg_ns if view.events_per_sec else None)
        while len(view.history_avg) > limit:
            view.history_avg.popleft()

    # --- what is shown -----------------------------------------------------------------------

    def rows(self) -> list[ProgramView]:
        """The table's rows: filtered, then sorted (ties by id)."""
        text = (self.typing if self.typing is not None else self.filter_text).lower()
        shown = [
            view
            for view in self.programs.values()
            if not text or any(text in part.lower() for part in (view.name, view.type, view.owner))
        ]
        sort_key = self.sort_key

        def order(view: ProgramView) -> tuple[float | tuple[str | int, ...], int]:
            value = view.value(sort_key)
            return (natural_key(value) if isinstance(value, str) else value, view.id)

        return sorted(shown, key=order, reverse=self.reverse)

    def selected_view(self) -> ProgramView | None:
        rows = self.rows()
        if not rows:
            return None
        for view in rows:
            if view.identity == self.selected:
                return view
        return rows[0]

    # --- keys --------------------------------------------------------------------------------

    def press(self, key: str) -> None:
        """One key (a character, or `up`, `down`, `pageup`, `pagedown`, `home`, `end`,
        `enter`, `escape`, `backspace`)."""
        self.dirty = True
        if self.typing is not None:
            self._type(key)
        elif key in ("q", "Q"):
            self.quit = True
        elif self.screen is Screen.HELP:
            self.screen = Screen.TABLE
        elif self.screen is Screen.OWNERS:
            if key in ("o", "escape", "backspace", "left"):
                self.screen = Screen.TABLE
            elif key in ("p", " "):
                self.paused = not self.paused
        elif key == "o":
            self.screen = Screen.OWNERS
        elif self.screen is Screen.DETAIL:
            if key in ("escape", "backspace", "enter", "left"):
                self.screen = Screen.TABLE
        elif key in ("up", "k", "down", "j", "pageup", "pagedown", "home", "end"):
            self._move(key)
        elif key in ("enter", "right") and self.selected_view() is not None:
            self.selected = self.selected_view().identity  # type: ignore[union-attr]
            self.screen = Screen.DETAIL
        elif key.isdigit() and 1 <= int(key) <= len(self.visible_columns):
            chosen = COLUMN_BY_KEY[self.visible_columns[int(key) - 1]]
            if chosen.key == self.sort_key:
                self.reverse = not self.reverse
            else:
                self.sort_key, self.reverse = chosen.key, chosen.numeric
        elif key == "r":
            self.reverse = not self.reverse
        elif key == "/":
            self.typing = self.filter_text
        elif key == "escape":
            self.filter_text = ""
        elif key in ("p", " "):
            self.paused = not self.paused
        elif key in ("h", "?"):
            self.screen = Screen.HELP

    def _type(self, key: str) -> None:
        assert self.typing is not None
        if key == "enter":
            self.filter_text, self.typing = self.typing, None
        elif key == "escape":
            self.typing = None
        elif key == "backspace":
            self.typing = self.typing[:-1]
        elif len(key) == 1 and key.isprintable():
            self.typing += key

    def _move(self, key: str, page: int = 10) -> None:
        rows = self.rows()
        if not rows:
            return
        identities = [view.identity for view in rows]
        current = identities.index(self.selected) if self.selected in identities else 0
        steps = {"up": -1, "k": -1, "down": 1, "j": 1, "pageup": -page, "pagedown": page}
        if key == "home":
            target = 0
        elif key == "end":
            target = len(rows) - 1
        else:
            target = current + steps[key]
        self.selected = identities[max(0, min(len(rows) - 1, target))]


def sparkline(values: Sequence[float | None], width: int) -> str:
    """The last `width` values as block characters, scaled to their maximum (blank: no value)."""
    blocks = " ▁▂▃▄▅▆▇█"
    shown = list(values)[-width:]
    known = [value for value in shown if value is not None]
    top = max(known, default=0.0)
    if top <= 0:
        return "".join(" " if value is None else blocks[1] for value in shown)
    return "".join(
        " " if value is None else blocks[max(1, round(value / top * (len(blocks) - 1)))] for value in shown
    )
