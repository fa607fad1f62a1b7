"""`kstat top`: its state and screens without a terminal, then the real thing inside tmux with
programs whose run counts are known."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from attrs import evolve
from rich.console import Console

from kstat.commands import top as top_command
from kstat.core.model import ProgramDetails, ProgramOwner
from kstat.live.screen import columns_for, render, visible_columns
from kstat.live.state import MARKED_FOR, Screen, TopState, natural_key, sparkline
from kstat.live.terminal import decode
from kstat.live.view import TopView
from kstat.testing.loader import LoopbackTarget, SocketFilter
from kstat.text import common_affixes, shortened, shortened_among
from tests.builders import interval, program, snapshot, window_started
from tests.kstat_process import run_kstat
from tests.names import KT, TOKEN, TOKEN_VARIABLE
from tests.test_per_cpu import send_pinned
from tests.windows import LoadFilter

REPO = Path(__file__).parents[1]


def state_after(*runs: tuple[int, int, int]) -> TopState:
    """Three programs; each interval gives (a, b, c) runs at 100, 200, 300 ns a run."""
    owner = ProgramDetails((ProgramOwner(4242, "flowd"),), ("xdp/native:eth0",))
    totals = [0, 0, 0]
    snapshots = []
    for sequence, counts in enumerate([(0, 0, 0), *runs]):
        totals = [total + count for total, count in zip(totals, counts, strict=True)]
        programs = [
            program(1, totals[0] * 100, totals[0], name="alpha_ingress", details=owner),
            program(2, totals[1] * 200, totals[1], name="beta_egress", type_name="XDP", details=owner),
            program(3, totals[2] * 300, totals[2], name="gamma_sock", details=owner),
        ]
        snapshots.append(snapshot(sequence, float(sequence), *programs))
    state = TopState()
    state.apply_start(window_started(snapshots[0]))
    for previous, current in itertools.pairwise(snapshots):
        state.apply_interval(interval(previous, current, first=snapshots[0]))
    return state


def names(state: TopState) -> list[str]:
    return [view.name for view in state.rows()]


def test_rows_are_sorted_by_cpu_and_each_column_sorts() -> None:
    state = state_after((10, 10, 10))
    assert names(state) == ["gamma_sock", "beta_egress", "alpha_ingress"]  # CPU %, highest first
    gamma = state.rows()[0]
    assert (gamma.events_per_sec, gamma.avg_ns, gamma.runs, gamma.owner) == (10.0, 300.0, 10, "4242/flowd")
    state.press("3")  # NAME: ascending first
    assert names(state) == ["alpha_ingress", "beta_egress", "gamma_sock"]
    state.press("3")  # again: reversed
    assert names(state)[0] == "gamma_sock"
    state.press("2")  # TYPE, ascending: the socket filters (by id), then XDP
    assert names(state) == ["alpha_ingress", "gamma_sock", "beta_egress"]
    state.press("r")
    assert names(state)[0] == "beta_egress"


def test_filter_selection_detail_and_quit() -> None:
    state = state_after((10, 20, 30))
    for key in ["/", "e", "g", "r"]:
        state.press(key)
    assert state.typing == "egr" and names(state) == ["beta_egress"]  # filters as it is typed
    state.press("enter")
    assert state.filter_text == "egr" and state.typing is None
    state.press("escape")
    assert state.filter_text == "" and len(names(state)) == 3
    state.press("down")
    state.press("down")
    selected = state.selected_view()
    assert selected is not None and selected.name == "alpha_ingress"
    state.press("enter")
    assert state.screen is Screen.DETAIL
    state.press("escape")
    assert state.screen is Screen.TABLE
    state.press("q")
    assert state.quit


def test_new_and_gone_programs_are_marked_then_dropped() -> None:
    state = state_after((1, 1, 1))
    first = snapshot(
        1,
        1.0,
        program(1, 100, 1, name="alpha_ingress"),
        program(2, 200, 1, name="beta_egress", type_name="XDP"),
        program(3, 300, 1, name="gamma_sock"),
    )
    later = snapshot(
        2,
        2.0,
        program(1, 200, 2, name="alpha_ingress"),
        program(9, 50, 1, name="newcomer", load_time_ns=10_500_000_000),
    )
    state.apply_interval(interval(first, later))
    by_name = {view.name: view for view in state.programs.values()}
    assert by_name["newcomer"].status == "new"
    assert by_name["beta_egress"].status == "gone"
    for sequence in range(3, 3 + MARKED_FOR):
        quiet = snapshot(
            sequence,
            float(sequence),
            program(1, 200, 2, name="alpha_ingress"),
            program(9, 50, 1, name="newcomer", load_time_ns=10_500_000_000),
        )
        previous = snapshot(sequence - 1, float(sequence - 1), *quiet.programs)
        state.apply_interval(interval(previous, quiet))
    remaining = {view.name: view.status for view in state.programs.values()}
    assert remaining == {"alpha_ingress": "", "newcomer": ""}


def test_a_paused_screen_stays_still_while_collection_goes_on() -> None:
    view = TopView(lambda: None, console=Console(file=io.StringIO()))
    view.state = state_after((10, 10, 10))
    view.shown = view.state
    view._press("p")
    frozen = view.shown.rows()[0].runs
    more = state_after((10, 10, 10), (5, 5, 500))
    view.state.programs, view.state.intervals = more.programs, more.intervals
    assert view.shown.rows()[0].runs == frozen and view.shown.paused
    view._press("3")  # keys still work on the frozen screen
    view._press("p")
    assert view.shown is view.state and view.state.sort_key == "name" and not view.state.paused


@pytest.mark.parametrize("width", [40, 60, 90, 120, 200])
def test_a_narrow_terminal_drops_columns_and_never_wraps(width: int) -> None:
    state = state_after((10, 20, 30))
    console = Console(file=io.StringIO(), width=width, height=20, record=True, color_system=None)
    console.print(render(state, width, 20))
    lines = console.export_text().splitlines()
    assert all(len(line) <= width for line in lines)
    table = [line for line in lines if "alpha_" in line or "beta_" in line or "gamma_" in line]
    assert len(table) == 3  # one line each: nothing wrapped
    assert [column.key for column in columns_for(width)][0:1] in (["id"], ["type"], ["name"])
    assert "name" in [column.key for column in columns_for(width)]


def test_screens_say_what_they_should() -> None:
    state = state_after((10, 20, 30), (10, 20, 30))
    state.press("down")
    state.press("enter")
    console = Console(file=io.StringIO(), width=120, height=30, record=True, color_system=None)
    console.print(render(state, 120, 30))
    text = console.export_text()
    assert (
        "beta_egress  XDP, id 2" in text
        and "owners: 4242/flowd" in text
        and "attached: xdp/native:eth0" in text
    )
    assert "esc back" in text
    state.press("escape")
    state.press("h")
    console = Console(file=io.StringIO(), width=120, height=30, record=True, color_system=None)
    console.print(render(state, 120, 30))
    assert "filter by a substring of name, type or owner" in console.export_text()


def screen_text(state: TopState, width: int, height: int = 20) -> str:
    state.visible_columns = visible_columns(width)
    console = Console(file=io.StringIO(), width=width, height=height, record=True, color_system=None)
    console.print(render(state, width, height))
    return console.export_text()


def named_state(*names: str, runs: tuple[int, ...] | None = None) -> TopState:
    """Programs 1..N with these names; program K runs `runs[K-1]` times (100 ns a run) in the
    one interval."""
    counts = runs or tuple(10 for _ in names)
    first = snapshot(0, 0.0, *(program(index, 0, 0, name=name) for index, name in enumerate(names, 1)))
    second = snapshot(
        1,
        1.0,
        *(
            program(index, count * 100, count, name=name)
            for index, (name, count) in enumerate(zip(names, counts, strict=True), 1)
        ),
    )
    state = TopState()
    state.apply_start(window_started(first))
    state.apply_interval(interval(first, second, first=first))
    return state


def test_long_names_keep_their_distinguishing_end_at_80_columns() -> None:
    names = [f"kux_flow_exporter_parse_{suffix}" for suffix in ("ipv4", "ipv6", "ipv4_options", "ipv6_ext")]
    text = screen_text(named_state(*names), 80)
    shown = [row.split()[1] for row in text.splitlines() if row.lstrip()[:1].isdigit()]
    assert len(shown) == 4 and len(set(shown)) == 4, text  # cut, but still four different names
    assert all("…" in name for name in shown)
    # Cut inside the start they share (kux_flow_exporter_parse_ipv), so what differs stays.
    assert sorted(name.rsplit("…", 1)[1] for name in shown) == [
        "e_ipv6_ext",
        "ipv4_options",
        "se_ipv4",
        "se_ipv6",
    ]
    assert all(name.startswith("kux_flow") for name in shown)
    assert shortened("kux_flow_exporter_parse_ipv4", 21) == "kux_flow_expor…e_ipv4"  # a third: the charts'
    demo = ["kstat_demo_heavy_socket_filter", "kstat_demo_medium_socket_filter"]
    assert [shortened_among(name, 29, *common_affixes(demo)) for name in demo] == [
        "kstat_demo_heavy_socket_…lter",  # the shared end is the longer: cut there
        "kstat_demo_medium_socket_…ter",
    ]


def test_period_and_total_headings_and_the_sort_keys_are_the_visible_columns() -> None:
    state = named_state("beta", "alpha", "gamma")
    wide = screen_text(state, 200)
    assert "PERIOD AVG NS" in wide and "TOTAL AVG NS" in wide and "TOTAL RUNS" in wide
    assert "AVG NS (WINDOW)" not in wide and "period 1s" in wide
    state.press("3")  # at 200 columns every column shows: the third is NAME
    assert state.sort_key == "name"
    narrow = screen_text(state, 80)
    assert "TYPE" not in narrow and "OWNER" not in narrow  # dropped at 80 columns
    assert "1-6 sort" in narrow
    state.press("2")  # the second column shown at 80 is NAME (TYPE is hidden): again, reversed
    assert (state.sort_key, state.reverse) == ("name", True)
    state.press("6")  # the sixth shown is TOTAL RUNS, not CPU %
    assert state.sort_key == "runs"
    state.press("9")  # no ninth column at 80: nothing happens
    assert state.sort_key == "runs"
    state.press("h")
    assert "sort keys here: 1 ID  2 NAME  3 EVENTS/S" in screen_text(state, 80)


def test_names_sort_naturally() -> None:
    state = named_state("prog_10", "prog_2", "Prog_1", "prog_2b")
    state.visible_columns = visible_columns(200)
    state.press("3")
    assert names(state) == ["Prog_1", "prog_2", "prog_2b", "prog_10"]
    assert natural_key("a10") > natural_key("a9") and natural_key("x") < natural_key("x0")


def test_an_idle_program_has_one_mark_for_every_figure() -> None:
    state = named_state("busy", "idle", runs=(10, 0))
    for width in (80, 200):
        text = screen_text(state, width)
        idle = next(line for line in text.splitlines() if " idle" in line).split()
        assert idle[0] == "2" and set(idle[-5 if width == 200 else -4 :]) == {"-"}, text
        rows = "\n".join(line for line in text.splitlines() if line.lstrip()[:1].isdigit())
        assert " 0.0 " not in rows and "0.000" not in rows and " 0 " not in rows


def test_names_from_the_host_cannot_steer_the_terminal() -> None:
    text = screen_text(named_state("evil\x1b[2J\x07name"), 200)
    assert "evil\\x1b[2J\\x07name" in text and "\x1b" not in text


@pytest.mark.parametrize(
    ("arguments", "interval_ns"),
    [(["-d", "2"], 2_000_000_000), (["--delay", "0.5"], 500_000_000), (["--delay=250ms"], 250_000_000)],
)
def test_delay_is_the_interval_as_bpftop_spells_it(arguments: list[str], interval_ns: int) -> None:
    assert top_command.build_parser().parse_args(arguments).interval == interval_ns


def test_a_bad_delay_is_a_usage_error() -> None:
    completed = run_kstat(["top", "-d", "0"])
    assert completed.returncode == 2
    assert completed.stderr.splitlines()[-1] == (
        "kstat top: error: argument -d/--delay: delay '0' must be a number of seconds above zero"
    )


def test_keys_and_sparklines() -> None:
    assert decode("\x1b[A\x1b[Bq/\r\x7f\x1b") == ["up", "down", "q", "/", "enter", "backspace", "escape"]
    assert decode("\x1b[5~\x1b[6~") == ["pageup", "pagedown"]
    assert sparkline([0.0, 1.0, 2.0, None, 4.0], 5) == "▁▂▄ █"


def test_without_a_terminal_it_says_so_and_exits_2() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "kstat", "top"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert (
        completed.stderr
        == "kstat: error: kstat top needs a terminal (for a recording, use kstat serve or kstat)\n"
    )


def test_a_sink_on_stdout_would_write_over_the_screen() -> None:
    completed = run_kstat(["top", "--sink", "ndjson:-"])
    assert completed.returncode == 2
    assert "ndjson:- would write over the screen" in completed.stderr.splitlines()[-1]


# --- in a real terminal --------------------------------------------------------------------------


class Tmux:
    """One tmux session running a command in a 150x30 terminal."""

    def __init__(self, name: str, command: str, width: int = 150, height: int = 30) -> None:
        self.name = name
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)
        # The session's environment is the tmux server's, which may be another suite's: the
        # suite's token is given again, so that what runs in it is this suite's (names.py).
        subprocess.run(
            [
                *("tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height)),
                *("-e", f"{TOKEN_VARIABLE}={TOKEN}", command),
            ],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-t", self.name, "-p"], capture_output=True, text=True, check=False
        ).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, found: Callable[[str], bool], timeout_s: float = 15) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if found(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"not on the screen in {timeout_s} s:\n{screen}")
            time.sleep(0.1)

    def alternate_screen(self) -> bool:
        shown = subprocess.run(
            ["tmux", "display", "-p", "-t", self.name, "#{alternate_on}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return shown.strip() == "1"

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, check=False)


@pytest.fixture
def tmux_top(tmp_path: Path) -> Iterator[Callable[..., Tmux]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (Debian's tmux package); run `make deps`")
    sessions: list[Tmux] = []

    def start(arguments: str, width: int = 150) -> Tmux:
        # After kstat: whether the terminal is sane again (echo and line mode back), then wait.
        script = (
            f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m kstat top {arguments}"
            f' > {tmp_path}/report.json 2> {tmp_path}/stderr; echo "exit $?" > {tmp_path}/status;'
            f" stty -a > {tmp_path}/stty; echo KSTAT-DONE; sleep 60"
        )
        session = Tmux(f"kstat-top-{len(sessions)}-{os.getpid()}", f"bash -c {shlex.quote(script)}", width)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()


def row_of(screen: str, name: str) -> list[str]:
    line = next(line for line in screen.splitlines() if name in line)
    return line.split()


@pytest.mark.kernel
def test_top_in_tmux_shows_counts_sorts_filters_and_quits(
    load_filter: LoadFilter, tmux_top: Callable[[str], Tmux], tmp_path: Path
) -> None:
    busy = load_filter(f"{KT}topbusy", 200)
    quiet = load_filter(f"{KT}topqui")
    top = tmux_top(f"--interval 200ms --name '^{KT}top'")
    top.wait_for(lambda screen: f"{KT}topbusy" in screen and f"{KT}topqui" in screen)
    busy.send(700)
    quiet.send(300)
    screen = top.wait_for(
        lambda screen: (
            row_of(screen, f"{KT}topbusy")[-1] == "700" and row_of(screen, f"{KT}topqui")[-1] == "300"
        )
    )
    assert top.alternate_screen()
    names = [line.split()[2] for line in screen.splitlines() if f"{KT}top" in line]
    top.keys("3")  # by name, ascending
    screen = top.wait_for(lambda screen: "NAME ↑" in screen)
    assert [line.split()[2] for line in screen.splitlines() if f"{KT}top" in line] == sorted(names), screen
    top.keys("/", "q", "u", "i", "Enter")  # the filter: only the quiet one
    screen = top.wait_for(lambda screen: "filter: qui" in screen and f"{KT}topbusy" not in screen)
    assert f"{KT}topqui" in screen
    top.keys("Enter")  # its detail
    screen = top.wait_for(lambda screen: "owners:" in screen)
    assert f"{KT}topqui" in screen and "300 runs this session" in screen
    top.keys("Escape", "q")
    top.wait_for(lambda screen: "KSTAT-DONE" in screen)
    assert not top.alternate_screen()
    assert (tmp_path / "status").read_text().strip() == "exit 0"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["program_stats"][f"{KT}topbusy"]["run_count"] == 700
    assert report["program_stats"][f"{KT}topqui"]["run_count"] == 300
    assert report["stopped_by"] == "quit"
    stty = (tmp_path / "stty").read_text()
    assert " icanon " in stty and " echo " in stty  # line mode and echo are back


@pytest.mark.kernel
def test_sigterm_ends_top_and_gives_the_terminal_back(
    load_filter: LoadFilter, tmux_top: Callable[[str], Tmux], tmp_path: Path
) -> None:
    target = load_filter(f"{KT}topterm")
    top = tmux_top(f"--interval 200ms --name '^{KT}topterm$' -o {tmp_path}/r.json")
    top.wait_for(lambda screen: f"{KT}topterm" in screen)
    target.send(123)
    top.wait_for(lambda screen: row_of(screen, f"{KT}topterm")[-1] == "123")
    pattern = f"^{sys.executable} -m kstat top --interval 200ms"
    pid = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout.split()
    assert pid
    for found in pid:
        os.kill(int(found), signal.SIGTERM)
    top.wait_for(lambda screen: "KSTAT-DONE" in screen)
    assert not top.alternate_screen()
    assert (tmp_path / "status").read_text().strip() == "exit 0"
    assert json.loads((tmp_path / "r.json").read_text())["program_stats"][f"{KT}topterm"]["run_count"] == 123
    assert (tmp_path / "report.json").read_text() == ""  # -output took the report
    stty = (tmp_path / "stty").read_text()
    assert " icanon " in stty and " echo " in stty


@pytest.mark.kernel
@pytest.mark.parametrize("width", [80, 200])
def test_top_in_tmux_at_80_and_200_columns(tmux_top: Callable[..., Tmux], tmp_path: Path, width: int) -> None:
    with contextlib.ExitStack() as stack:
        targets = {
            suffix: stack.enter_context(
                LoopbackTarget(
                    stack.enter_context(
                        SocketFilter(f"kux_t_{suffix}", function_name=f"kux_flow_exporter_parse_{suffix}")
                    )
                )
            )
            for suffix in ("ipv4", "ipv6")
        }
        top = tmux_top("--interval 200ms --name '^kux_flow_exporter_parse_ipv[46]$'", width=width)

        def rows(screen: str) -> dict[str, list[str]]:
            lines = [line.split() for line in screen.splitlines() if "kux_flow" in line]
            return {("ipv4" if "ipv4" in line[1 if width == 80 else 2] else "ipv6"): line for line in lines}

        top.wait_for(lambda screen: len(rows(screen)) == 2)  # the window has started
        targets["ipv4"].send(30)
        screen = top.wait_for(lambda screen: len(rows(screen)) == 2 and rows(screen)["ipv4"][-1] == "30")
        assert all(len(line) <= width for line in screen.splitlines())
        shown = rows(screen)
        if width == 80:  # cut inside the start they share: the ends that tell them apart are kept
            assert [shown[suffix][1] for suffix in ("ipv4", "ipv6")] == [
                "kux_flow_expo…se_ipv4",
                "kux_flow_expo…se_ipv6",
            ]
            assert "TYPE" not in screen and "1-6 sort" in screen
        else:
            assert [shown[suffix][2] for suffix in ("ipv4", "ipv6")] == [
                "kux_flow_exporter_parse_ipv4",
                "kux_flow_exporter_parse_ipv6",
            ]
            comm = Path("/proc/self/comm").read_text().strip()
            assert shown["ipv4"][3] == f"{os.getpid()}/{comm}"  # the owner: pid/comm
            assert "PERIOD AVG NS" in screen and "TOTAL AVG NS" in screen
        assert set(shown["ipv6"][-5 if width == 200 else -4 :]) == {"-"}  # idle: one mark
        top.keys("2")  # the second column shown: TYPE at 200 columns, NAME at 80 (TYPE is hidden)
        top.wait_for(lambda screen: ("NAME ↑" if width == 80 else "TYPE ↑") in screen)
        top.keys("q")
        top.wait_for(lambda screen: "KSTAT-DONE" in screen)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["program_stats"]["kux_flow_exporter_parse_ipv4"]["run_count"] == 30


def test_the_detail_has_a_bar_per_cpu_with_per_cpu_counters() -> None:
    """With per-CPU counters (`--per-cpu`): the selected program's share of each CPU it ran on
    in the last interval, the busiest first; without them, no such section."""
    first = snapshot(0, 0.0, program(1, 0, 0, name="spread"))
    base = first.programs[0]
    counters = base.counters._replace(per_cpu_run_time_ns=(0, 0, 0), per_cpu_run_count=(0, 0, 0))
    first = snapshot(0, 0.0, evolve(base, counters=counters))
    moved = program(1, 40_000_000, 400, name="spread")
    second = snapshot(
        1,
        1.0,
        evolve(
            moved,
            counters=moved.counters._replace(
                per_cpu_run_time_ns=(10_000_000, 0, 30_000_000), per_cpu_run_count=(100, 0, 300)
            ),
        ),
    )
    state = TopState()
    state.apply_start(window_started(first))
    state.apply_interval(interval(first, second, first=first))
    state.press("enter")
    text = screen_text(state, 100, 30)
    bars = [
        line
        for line in text.splitlines()
        if line.split()[:2][-1:] != ["%"] and line.strip().startswith("CPU ")
    ]
    assert [line.split()[:2] for line in bars] == [["CPU", "2"], ["CPU", "0"]]  # busiest first, idle out
    assert "3.000 %" in bars[0] and "300 runs" in bars[0] and "1.000 %" in bars[1] and "100 runs" in bars[1]
    assert bars[0].count("█") > bars[1].count("█") > 0
    plain = state_after((10, 20, 30))
    plain.press("enter")
    assert "per CPU" not in screen_text(plain, 100, 30)


@pytest.mark.kernel
def test_top_in_tmux_shows_each_cpus_share_of_a_program_sent_from_pinned_cpus(
    load_filter: LoadFilter, tmux_top: Callable[[str], Tmux]
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to tell apart")
    target = load_filter(f"{KT}toppc", 100)
    top = tmux_top(f"--per-cpu --interval 200ms --name '^{KT}toppc$'")
    top.wait_for(lambda screen: f"{KT}toppc" in screen)
    top.keys("Enter")
    top.wait_for(lambda screen: "owners:" in screen)
    sent = {cpus[0]: 300, cpus[1]: 900}
    for cpu, count in sent.items():
        send_pinned(target, cpu, count)
    screen = top.wait_for(
        lambda screen: all(f"{count} runs this session" in screen for count in sent.values())
    )
    bars = {
        line.split()[1]: line
        for line in screen.splitlines()
        if line.strip().startswith("CPU ") and "%" not in line.split()[1]
    }
    assert "900 runs" in bars[str(cpus[1])] and "300 runs" in bars[str(cpus[0])]
    top.keys("q")
    top.wait_for(lambda screen: "KSTAT-DONE" in screen)
