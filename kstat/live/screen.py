"""Drawing `kstat top`'s screens with rich: the table, a program's detail, the help.

Each draw builds the whole screen for the terminal's size at that moment: a narrow terminal
drops columns (least useful first) and long names are cut with an ellipsis, so a row never
wraps; a short one shows as many rows as fit, keeping the selection in view.
"""

from __future__ import annotations

import time
from typing import Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kstat.core.catalogue import NS_PER_S
from kstat.core.owner_cost import OwnerCost
from kstat.live.state import COLUMNS, Column, ProgramView, Screen, TopState, sparkline
from kstat.text import cells, common_affixes, for_terminal, shortened, shortened_among

# Half the room for the end of a text cut with nothing beside it to compare (an owner).
NAME_END_SHARE: Final = 0.5
# Room the sort arrow takes beside a heading.
_ARROW: Final = 2
# What a cell shows when nothing ran (in the period, or at all): one mark for every column.
IDLE: Final = "-"
_HELP_LINE: Final = (
    "↑↓ select  enter detail  1-{last} sort  r reverse  / filter  o owners  p pause  h help  q quit"
)
_DETAIL_LINE: Final = "esc back  p pause  q quit"
_OWNERS_LINE: Final = "o/esc back to programs  p pause  q quit"
_KEYS: Final = (
    ("↑ ↓  j k  PgUp PgDn  Home End", "move the selection"),
    ("enter  →", "the selected program's detail: charts of the last minute, owners, attachments"),
    ("1 … 9", "sort by the Nth column on the screen (again: reverse)"),
    ("r", "reverse the sort"),
    ("/", "filter by a substring of name, type or owner (enter keeps it, esc drops it)"),
    ("esc", "clear the filter; leave a detail or this help"),
    ("o", "owners: each process holding programs, its own CPU beside its programs' (whole cost)"),
    ("p  space", "pause the screen (collection goes on)"),
    ("h  ?", "this help"),
    ("q", "quit: the report of the whole session goes to -output, or to stdout"),
)
_COLUMNS_HELP: Final = (
    "PERIOD is the last interval, TOTAL the session since kstat top started; EVENTS/S and CPU % "
    "(of one CPU) are the period's. - marks a program that did not run."
)


def columns_for(width: int) -> list[Column]:
    """The columns that fit, in screen order, dropping the lowest priority first."""
    chosen = list(COLUMNS)
    while len(chosen) > 1 and sum(column.width + 2 for column in chosen) - 2 > width:
        chosen.remove(min(chosen, key=lambda column: column.priority))
    return chosen


def visible_columns(width: int) -> tuple[str, ...]:
    return tuple(column.key for column in columns_for(width))


def _widths(shown: list[Column], width: int, rows: list[ProgramView]) -> dict[str, int]:
    """Each column's width. What the others leave of the terminal goes to the name, as much as
    the longest name shown needs, then to the owner likewise."""
    widths = {column.key: column.width for column in shown}
    spare = width - sum(widths.values()) - 2 * (len(shown) - 1)
    for key in ("name", "owner"):
        if key in widths and spare > 0:
            longest = max((cells(_cell(view, key, 10_000)) for view in rows), default=0)
            grown = min(spare, max(0, longest - widths[key]))
            widths[key] += grown
            spare -= grown
    return widths


def _number(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


# The columns that are figures of the program's runs (the rest are names and its id).
_FIGURES: Final = frozenset(column.key for column in COLUMNS if column.figure)


def _figure(view: ProgramView, key: str) -> str:
    value = float(view.value(key))
    if not value:
        return IDLE
    if key == "cpu_percent":
        if value < 0.001:
            return "<0.001"
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return _number(value, 1 if key == "events_per_sec" and value < 100 else 0)


def _cell(view: ProgramView, key: str, width: int, shared: tuple[int, int] = (0, 0)) -> str:
    """A cell's text in `width` cells. A long name is cut inside what it shares with the names
    shown beside it (`shared`: their common start and end), so that what tells it from them
    stays: one agent's programs share a long start (`kux_flow_exporter_parse_`), the demo's a
    start and an end (`kstat_demo_`, `_socket_filter`)."""
    if key in _FIGURES:
        return _figure(view, key)
    if key == "name":
        mark = {"new": "+ ", "gone": "- "}.get(view.status, "")
        return mark + shortened_among(for_terminal(view.name), width - len(mark), *shared)
    return shortened(for_terminal(str(view.value(key))), width, end_share=NAME_END_SHARE)


def header(state: TopState, width: int) -> Text:
    """The totals line; where the terminal is narrow it says less, in this order: the share of
    all CPUs, the period, the sort (the table's arrow shows it too), the words "of one CPU",
    then whatever is last."""
    totals = state.totals
    all_cpus = totals.cpu_percent / totals.online_cpus if totals.online_cpus else 0.0
    column = next(column for column in COLUMNS if column.key == state.sort_key)
    cpu = f"eBPF CPU {totals.cpu_percent:.3f} %"
    parts: list[tuple[str, str | None]] = [
        (f"{cpu} of one CPU ({all_cpus:.3f} % of all {totals.online_cpus})", None),
        (f"{_number(totals.events_per_sec)} events/s", None),
        (f"{totals.loaded} programs, {totals.ran} ran", None),
        (f"sort {column.heading} {'↓' if state.reverse else '↑'}", None),
        (f"period {state.interval_ns / NS_PER_S:g}s", None),
    ]
    if state.typing is not None:
        parts.insert(0, (f"filter: {for_terminal(state.typing)}▏", "bold yellow"))
    elif state.filter_text:
        parts.insert(0, (f"filter: {for_terminal(state.filter_text)}", "yellow"))
    if state.paused:
        parts.insert(0, ("PAUSED", "bold red"))
    first = len(parts) - 5  # where the CPU share is

    def fits() -> bool:
        return len("kstat top  ") + sum(len(text) + 5 for text, _ in parts) <= width

    steps = (
        lambda: parts.__setitem__(first, (f"{cpu} of one CPU", None)),
        lambda: parts.pop(first + 4),  # the period
        lambda: parts.pop(first + 3),  # the sort
        lambda: parts.__setitem__(first, (cpu, None)),
    )
    for step in steps:
        if fits():
            break
        step()
    while len(parts) > 1 and not fits():
        parts.pop()
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("kstat top", style="bold")
    for part, style in parts:
        text.append("  ·  " if len(text) > len("kstat top") else "  ")
        text.append(part, style=style)
    return text


def table(state: TopState, width: int, height: int) -> Table:
    shown = columns_for(width)
    rows = state.rows()
    selected = state.selected_view()
    room = max(1, height - 4)
    start = 0
    if selected is not None:
        index = rows.index(selected)
        start = max(0, min(index - room // 2, len(rows) - room))
    visible = rows[start : start + room]
    widths = _widths(shown, width, visible)
    grid = Table(box=None, expand=False, pad_edge=False, show_edge=False, header_style="bold reverse")
    for column in shown:
        arrow = ""
        if column.key == state.sort_key:
            arrow = " ↓" if state.reverse else " ↑"
        room = widths[column.key]
        grid.add_column(
            shortened(column.heading, room - len(arrow)) + arrow,
            justify="right" if column.numeric else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=room,
        )
    shared = common_affixes([for_terminal(view.name) for view in visible])
    for view in visible:
        style = "reverse" if view is selected else ("dim" if view.status == "gone" else None)
        if view.status == "new" and view is not selected:
            style = "green"
        # Text, not str: rich would read `[...]` in a name as its markup (`[/x]` stops the screen).
        row = (Text(_cell(view, column.key, widths[column.key], shared)) for column in shown)
        grid.add_row(*row, style=style)
    if not rows:
        grid.add_row(*(["no programs match" if column.key == "name" else "" for column in shown]))
    # Blank rows to the bottom, so that the key line stays at the foot of the screen.
    for _ in range(room - len(grid.rows)):
        grid.add_row(*([""] * len(shown)))
    return grid


def detail(state: TopState, width: int) -> RenderableType:
    view = state.selected_view()
    if view is None:
        return Text("the program went away; esc goes back")
    chart_width = max(10, min(state.history_length, width - 34))
    boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    loaded_ago = max(0, boot_now - view.load_time_ns) / NS_PER_S
    lines = Text()
    lines.append(for_terminal(view.name), style="bold")
    lines.append(
        f"  {view.type}, id {view.id}, tag {view.tag}{'  (' + view.status + ')' if view.status else ''}\n"
    )
    lines.append(f"loaded {loaded_ago:,.0f} s ago")
    if view.memlock_bytes is not None:
        lines.append(f"  ·  memory {view.memlock_bytes:,} bytes")
    if view.runs:
        lines.append(f"  ·  {view.runs:,} runs this session, {view.window_avg_ns:,.0f} ns each\n")
    else:
        lines.append("  ·  no runs this session\n")
    owners = for_terminal(", ".join(owner.label for owner in view.details.owners)) or "none"
    lines.append(f"owners: {owners}\n")
    lines.append(f"attached: {', '.join(view.details.attachments) or 'nowhere kstat can see'}\n\n")
    seconds = len(view.history_cpu) * state.interval_ns / NS_PER_S
    lines.append(f"the last {seconds:,.0f} s, one mark per interval, scaled to its highest:\n", style="dim")
    known_avg = [value for value in view.history_avg if value is not None]
    charts = (
        ("CPU %", list(view.history_cpu), view.cpu_percent, max(view.history_cpu, default=0.0), 3),
        (
            "events/s",
            list(view.history_events),
            view.events_per_sec,
            max(view.history_events, default=0.0),
            0,
        ),
        ("avg ns", list(view.history_avg), view.avg_ns, max(known_avg, default=0.0), 0),
    )
    for label, values, now, top, digits in charts:
        lines.append(f"{label:>9} ")
        lines.append(sparkline(values, chart_width).ljust(chart_width), style="cyan")
        shown_now, shown_top = (_number(value, digits) if value else IDLE for value in (now, top))
        lines.append(f"  now {shown_now}  max {shown_top}\n")
    if view.cpu_shares is not None or view.window_cpu_runs is not None:  # per-CPU counters read
        lines.append(_per_cpu_bars(view, state.totals.online_cpus, width))
    return lines


# At most this many CPUs get a bar of their own: on a large host, the busiest.
_CPU_BARS: Final = 16


def _per_cpu_bars(view: ProgramView, online_cpus: int, width: int) -> Text:
    """Each CPU it ran on this session: the last interval's share of that CPU as a bar scaled to
    the busiest (as the charts are to their highest), the share, and its runs there this
    session; the busiest first."""
    shares = view.cpu_shares or {}
    runs = view.window_cpu_runs or {}
    lines = Text()
    cpus = sorted(set(runs) | {cpu for cpu, share in shares.items() if share > 0})
    lines.append(
        f"\nper CPU: the last interval's % of that CPU, bars scaled to the busiest (ran on {len(cpus)} "
        f"of {online_cpus} CPUs this session):\n",
        style="dim",
    )
    if not cpus:
        lines.append(f"{'':>9} {IDLE}\n")
        return lines
    busiest = sorted(cpus, key=lambda cpu: (-shares.get(cpu, 0.0), -runs.get(cpu, 0), cpu))
    bar_width = max(10, min(50, width - 56))
    top = shares.get(busiest[0], 0.0)
    for cpu in busiest[:_CPU_BARS]:
        share = shares.get(cpu, 0.0)
        filled = min(bar_width, max(1, round(share / top * bar_width))) if share > 0 else 0
        lines.append(f"{'CPU ' + str(cpu):>9} ")
        lines.append("█" * filled, style="cyan")
        lines.append("·" * (bar_width - filled), style="dim")
        shown = f"{_number(share, 3)} %" if share > 0 else IDLE
        lines.append(f"  {shown:>9}  {runs.get(cpu, 0):>12,} runs this session\n")
    if len(busiest) > _CPU_BARS:
        rest = busiest[_CPU_BARS:]
        lines.append(
            f"{'':>9} and {len(rest)} more CPUs, {_number(sum(shares.get(cpu, 0.0) for cpu in rest), 3)} % "
            "together\n",
            style="dim",
        )
    return lines


def _place(cost: OwnerCost) -> str:
    workload = cost.workload
    if workload.pod is not None:
        return f"{workload.namespace or '?'}/{workload.pod}"
    return workload.container_name or workload.unit or ""


def _percent(value: float) -> str:
    if not value:
        return IDLE
    if value < 0.001:
        return "<0.001"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def owners_table(state: TopState, width: int, height: int) -> RenderableType:
    """Each process holding programs over the last interval: its own CPU, its programs' and
    the two together (its whole cost), costliest first."""
    room = max(1, height - 5)
    grid = Table(box=None, expand=False, pad_edge=False, show_edge=False, header_style="bold reverse")
    figures = (
        ("PROCESS CPU %", 13),
        ("PROGRAMS CPU %", 14),
        ("WHOLE CPU % ↓", 13),
        ("RSS MiB", 9),
        ("PROGS", 6),
    )
    name_room = max(8, width - 8 - sum(size + 2 for _, size in figures) - 2)
    # Where they run only when some owner says (a container, pod or unit), and never at the
    # expense of the command's first 12 cells.
    places = any(_place(cost) for cost in state.owners)
    where_room = min(32, name_room - 14) if places and name_room >= 22 else 0
    command_room = max(4, min(24, name_room - (where_room + 2 if where_room else 0)))
    grid.add_column("PID", justify="right", width=7, no_wrap=True)
    grid.add_column("COMMAND", width=command_room, no_wrap=True, overflow="ellipsis")
    if where_room:
        grid.add_column("WHERE", width=where_room, no_wrap=True, overflow="ellipsis")
    for heading, size in figures:
        grid.add_column(heading, justify="right", width=size, no_wrap=True)
    for cost in state.owners[:room]:
        metrics = cost.metrics
        rss = metrics.get("rss_bytes")
        where = [Text(shortened(for_terminal(_place(cost)), where_room, end_share=NAME_END_SHARE))]
        grid.add_row(
            str(cost.pid),
            Text(shortened(for_terminal(cost.command), command_room, end_share=NAME_END_SHARE)),
            *(where if where_room else []),
            _percent(float(metrics.get("process_cpu_percent", 0.0))),
            _percent(float(metrics.get("kernel_cpu_percent", 0.0))),
            _percent(float(metrics.get("whole_cpu_percent", 0.0))),
            "?" if rss is None else f"{rss / 2**20:,.1f}",
            f"{int(metrics.get('programs', 0)):,}",
        )
    if not state.owners:
        grid.add_row("", "no owner read yet" if state.intervals == 0 else "no process holds a program")
    left = len(state.owners) - room
    caption = Text(
        "the last interval; CPU % of one CPU; a program several processes hold counts for each"
        + (f"; {left:,} more not shown" if left > 0 else ""),
        style="dim",
        no_wrap=True,
        overflow="ellipsis",
    )
    for _ in range(room - len(grid.rows)):
        grid.add_row(*([""] * len(grid.columns)))
    return Group(grid, caption)


def help_screen(width: int) -> RenderableType:
    keys = Table(box=None, show_header=False, pad_edge=False)
    keys.add_column(style="bold", no_wrap=True)
    keys.add_column()
    for key, meaning in _KEYS:
        keys.add_row(key, meaning)
    digits = "  ".join(f"{index} {column.heading}" for index, column in enumerate(columns_for(width), 1))
    return Group(
        Text("kstat top: keys\n", style="bold"),
        keys,
        Text(f"\nsort keys here: {digits}"),
        Text(_COLUMNS_HELP),
        Text("\nany key goes back", style="dim"),
    )


def render(state: TopState, width: int, height: int) -> RenderableType:
    """The whole screen for a terminal of this size."""
    if state.screen is Screen.HELP:
        body: RenderableType = help_screen(width)
    elif state.screen is Screen.DETAIL:
        body = detail(state, width)
    elif state.screen is Screen.OWNERS:
        body = owners_table(state, width, height)
    else:
        body = table(state, width, height)
    if state.screen is Screen.DETAIL:
        keys = _DETAIL_LINE
    elif state.screen is Screen.OWNERS:
        keys = _OWNERS_LINE
    else:
        keys = _HELP_LINE.format(last=len(columns_for(width)))
    return Group(
        header(state, width), Text(""), body, Text(keys, style="dim", no_wrap=True, overflow="ellipsis")
    )
