"""The StatsD sink against the reference StatsD daemon, and its line format in isolation."""

from __future__ import annotations

import itertools
import json
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from attrs import evolve

from kstat._datagrams import BURST_PAUSE_S, DATAGRAMS_A_BURST, LineSender, batch_datagrams
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import Snapshot
from kstat.errors import UsageError
from kstat.formats.statsd import IntervalLines, metric_lines
from kstat.sinks.statsd import StatsdSettings, parse_statsd_url
from kstat.testing.loader import SocketFilter
from kstat.text import for_statsd_names
from tests.builders import events_of, program, report_of, snapshot
from tests.kstat_process import KstatProcess, line_of, run_kstat
from tests.names import KT, TOKEN
from tests.statsd_daemon import StatsdDaemon, free_port, running_statsd
from tests.windows import LoadFilter


@pytest.fixture
def statsd(tmp_path: Path) -> Iterator[StatsdDaemon]:
    with running_statsd(tmp_path) as daemon:
        yield daemon


def test_url_options() -> None:
    assert parse_statsd_url("statsd://127.0.0.1") == StatsdSettings(host="127.0.0.1")
    assert parse_statsd_url("statsd://[::1]:9125") == StatsdSettings(host="::1", port=9125)
    assert parse_statsd_url(
        "statsd://metrics.local:9125?prefix=team.ebpf&tags=dogstatsd&transport=tcp&mtu=512"
    ) == (StatsdSettings("metrics.local", 9125, "team.ebpf", dogstatsd_tags=True, transport="tcp", mtu=512))


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("statsd://", "expected statsd://"),
        ("statsd://host:99999", "bad port"),
        ("statsd://127.0.0.1:0", "bad port"),
        ("statsd://127.0.0.1:-1", "bad port"),
        ("statsd://host:8125/path", "unexpected path"),
        ("statsd://host?prefix=a..b", "prefix"),
        ("statsd://host?prefix=a%20b", "prefix"),
        ("statsd://host?tags=influx", "tags"),
        ("statsd://host?transport=quic", "transport"),
        ("statsd://host?mtu=10", "mtu"),
        ("statsd://host?colour=blue", "unknown statsd option"),
        ("statsd://host?prefix=a&prefix=b", "more than once"),
        ("statsd://[::1", "bad statsd URL"),
    ],
)
def test_malformed_urls_are_usage_errors(url: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_statsd_url(url)


def test_metric_lines_are_safe_names_with_plain_numbers() -> None:
    report = report_of(
        snapshot(0, 0.0, program(4, 0, 0, name="tc/ingress"), program(9, 0, 0, name="tc/ingress")),
        snapshot(1, 2.0, program(4, 1_000, 3, name="tc/ingress"), program(9, 0, 0, name="tc/ingress")),
    )
    lines = metric_lines(report, StatsdSettings("h", prefix="kt"))
    assert "kt.tc_ingress_4.run_count:3|c" in lines
    assert "kt.tc_ingress_4.runtime_ns:1000|c" in lines
    assert "kt.tc_ingress_4.avg_runtime_ns:333|g" in lines
    assert "kt.tc_ingress_4.events_per_sec:1.5|g" in lines
    assert "kt.tc_ingress_4.estimated_cpu_percent:0.00005|g" in lines
    assert "kt.tc_ingress_9.run_count:0|c" in lines
    assert "kt.total.run_count:3|c" in lines
    assert len(lines) == 3 * 6
    tagged = metric_lines(report, StatsdSettings("h", prefix="kt", dogstatsd_tags=True))
    assert "kt.program.run_count:3|c|#program:tc/ingress,id:4,type:SocketFilter" in tagged


def test_datagrams_stay_under_the_mtu_and_keep_every_line() -> None:
    lines = [f"kstat.prog{index}.run_count:{index}|c" for index in range(500)]
    datagrams = list(batch_datagrams(lines, 200))
    assert all(len(datagram) <= 200 for datagram in datagrams)
    assert b"\n".join(datagrams).decode().split("\n") == lines
    assert len(datagrams) > 1
    assert list(batch_datagrams(["x" * 300], 200)) == [b"x" * 300]


@pytest.mark.kernel
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_daemon_aggregates_exact_run_counts(
    load_filter: LoadFilter, statsd: StatsdDaemon, transport: str
) -> None:
    target = load_filter(f"{KT}sd")
    port = statsd.udp_port if transport == "udp" else statsd.tcp_port
    kstat = KstatProcess(
        [
            "-duration",
            "2s",
            "--interval",
            "500ms",
            "--sink",
            f"statsd://127.0.0.1:{port}?prefix=kt&transport={transport}",
        ]
    )
    kstat.wait_for_window()
    target.send(700)
    returncode, stdout = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert stdout == ""
    counters = statsd.counters()
    assert counters[f"kt.{KT}sd.run_count"] == 700
    assert counters[f"kt.{KT}sd.runtime_ns"] > 0
    assert counters["kt.total.run_count"] >= 700
    assert counters["statsd.bad_lines_seen"] == 0
    gauges = statsd.gauges()
    assert f"kt.{KT}sd.avg_runtime_ns" in gauges
    assert f"kt.{KT}sd.estimated_cpu_percent" in gauges


@pytest.mark.kernel
def test_ten_thousand_idle_programs_all_reach_the_daemon_over_udp(
    statsd: StatsdDaemon, tmp_path: Path
) -> None:
    """Sent in one interval, the idle programs' zeros overflowed the server's UDP receive buffer
    (1,592 programs of 10,000 arrived); sent in turns, every one arrives within 60 intervals."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65_536)), hard))
    programs = [SocketFilter(f"{KT}idle{index % 100}") for index in range(10_000)]
    try:
        server = f"statsd://127.0.0.1:{statsd.udp_port}?prefix=ki"
        window = ["-duration", "9s", "--interval", "100ms", "-output", str(tmp_path / "r.json")]
        completed = run_kstat([*window, "--sink", server])
    finally:
        for loaded in programs:
            loaded.close()
    assert completed.returncode == 0, completed.stderr
    gauges = statsd.gauges()
    arrived = [key for key in gauges if key.startswith(f"ki.{KT}idle") and key.endswith(".events_per_sec")]
    assert len(arrived) == 10_000
    assert statsd.counters()["statsd.bad_lines_seen"] == 0


def test_names_that_sanitise_alike_stay_apart() -> None:
    report = report_of(
        snapshot(0, 0.0, program(4, 0, 0, name="kpr.col"), program(9, 0, 0, name="kpr_col")),
        snapshot(1, 1.0, program(4, 500, 5, name="kpr.col"), program(9, 700, 7, name="kpr_col")),
    )
    lines = metric_lines(report, StatsdSettings("h", prefix="kt"))
    assert "kt.kpr_col.run_count:7|c" in lines  # the name that needed no change keeps it
    assert "kt.kpr_col_4.run_count:5|c" in lines
    # The same in every interval's lines, idle or not, and once the other has gone.
    first, moved, alone = (
        snapshot(0, 0.0, program(4, 0, 0, name="kpr.col"), program(9, 0, 0, name="kpr_col")),
        snapshot(1, 1.0, program(4, 100, 1, name="kpr.col"), program(9, 0, 0, name="kpr_col")),
        snapshot(2, 2.0, program(4, 300, 3, name="kpr.col")),
    )
    sent = sent_per_interval([first, moved, alone])
    assert "kt.kpr_col_4.run_count:1|c" in sent[0]
    assert not [line for line in sent[0] if line.startswith("kt.kpr_col.run_count:1")]
    assert "kt.kpr_col_4.run_count:2|c" in sent[1]


@pytest.mark.kernel
def test_programs_whose_names_sanitise_alike_are_two_series(
    load_filter: LoadFilter, statsd: StatsdDaemon
) -> None:
    # `kt<token>.col` and `kt<token>_col`: one StatsD name once sanitised.
    dotted, plain = load_filter(f"kt{TOKEN}.col"), load_filter(f"{KT}col")
    kstat = KstatProcess(
        [
            "-duration",
            "1s",
            "--name",
            f"^kt{TOKEN}.col$",
            "--sink",
            f"statsd://127.0.0.1:{statsd.udp_port}?prefix=kt",
        ]
    )
    kstat.wait_for_window()
    dotted.send(200)
    plain.send(300)
    assert kstat.finish()[0] == 0, kstat.stderr_lines
    counters = statsd.counters()
    assert counters[f"kt.{KT}col.run_count"] == 300
    assert counters[f"kt.{KT}col_{dotted.program.id}.run_count"] == 200
    assert counters["statsd.bad_lines_seen"] == 0


@pytest.mark.kernel
def test_dogstatsd_tags_reach_the_daemon(load_filter: LoadFilter, statsd: StatsdDaemon) -> None:
    target = load_filter(f"{KT}tags")
    kstat = KstatProcess(
        ["-duration", "1s", "--sink", f"statsd://127.0.0.1:{statsd.udp_port}?prefix=kt&tags=dogstatsd"]
    )
    kstat.wait_for_window()
    target.send(55)
    assert kstat.finish()[0] == 0
    key = f"kt.program.run_count;program={KT}tags;id={target.program.id};type=SocketFilter"
    assert statsd.counters()[key] == 55


@pytest.mark.kernel
@pytest.mark.parametrize(
    "url",
    [
        "statsd://127.0.0.1:{closed_port}",
        "statsd://127.0.0.1:{closed_port}?transport=tcp",
        "statsd://no-such-host.invalid:8125",
    ],
)
def test_an_unreachable_server_costs_a_warning_not_the_report(
    load_filter: LoadFilter, tmp_path: Path, url: str
) -> None:
    target = load_filter(f"{KT}down")
    closed_port = free_port(socket.SOCK_DGRAM if "tcp" not in url else socket.SOCK_STREAM)
    output = tmp_path / "r.json"
    kstat = KstatProcess(
        [
            "-duration",
            "1500ms",
            "--interval",
            "250ms",
            "-output",
            str(output),
            "--sink",
            url.format(closed_port=closed_port),
        ]
    )
    kstat.wait_for_window()
    target.send(40)
    returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert line_of(json.loads(output.read_text()), target.program.id)["run_count"] == 40
    warnings = [entry for entry in kstat.log if entry["level"] == "warning" and "statsd" in entry["event"]]
    # Rate-limited: one warning, however many intervals failed.
    assert len(warnings) == 1, kstat.log


def sent_per_interval(snapshots: list[Snapshot]) -> list[list[str]]:
    """The lines the sink sends for each interval of a window made of these snapshots."""
    lines = IntervalLines(StatsdSettings("127.0.0.1", prefix="kt"))
    sent = []
    for event in events_of(*snapshots):
        if isinstance(event, WindowStarted):
            lines.start(event)
        elif isinstance(event, IntervalEnded):
            sent.append(lines.lines_for(event.delta))
    return sent


def test_idle_programs_are_reported_once_then_left_out_until_they_run() -> None:
    states = [(0, 0), (0, 0), (0, 0), (10, 1), (10, 1)]  # (runtime, runs) of "idle" over time
    snapshots = [
        snapshot(
            index,
            float(index),
            program(1, index * 100, index, name="busy"),
            # Id 60: its turn among the idle programs comes in the first interval.
            program(60, runtime, runs, name="idle"),
        )
        for index, (runtime, runs) in enumerate(states)
    ]
    sent = sent_per_interval(snapshots)
    mentions_idle = [any(line.startswith("kt.idle.") for line in lines) for lines in sent]
    # Zero lines at its turn; nothing while it stays idle; lines when it runs; once when idle again.
    assert mentions_idle == [True, False, True, True]
    assert all(any(line.startswith("kt.busy.run_count:1|c") for line in lines) for lines in sent)
    assert all(any(line.startswith("kt.total.") for line in lines) for lines in sent)


def test_idle_programs_are_announced_in_turns_then_sent_again_only_rarely() -> None:
    ids = [*range(1, 121), 3_700]
    idle = [
        snapshot(index, float(index), *(program(pid, 0, 0, name=f"idle{pid}") for pid in ids))
        for index in range(202)
    ]
    sent = sent_per_interval(idle)
    mentioned = [
        [pid for pid in ids if any(line.startswith(f"kt.idle{pid}.") for line in lines)] for lines in sent
    ]
    # Announced once within the first 60 intervals, two or three programs an interval (ids 60
    # apart), never all at once, from the first interval on; then each again only at its turn
    # among 3,600 intervals (id 3,700's: the hundredth), never every 60 intervals.
    for index in range(201):
        announced = {pid for pid in ids if pid % 60 == index} if index < 60 else set()
        refreshed = {pid for pid in ids if pid % 3_600 == index}
        assert mentioned[index] == sorted(announced | refreshed), index


def test_intervals_that_slip_take_every_turn_their_time_spans() -> None:
    """On a busy host 100 ms intervals came 120 ms apart: 58 deltas in a 7 s window, and the last
    two turns' programs were never announced (9,641 of 10,000). Turns go by time: a delta twice
    as long as asked takes two turns, so 30 of them announce every program; a longer one (a
    start-up) takes two as well, never a burst of every turn it spanned."""
    ids = list(range(1, 121))
    slipped = [
        snapshot(index, 2.0 * index, *(program(pid, 0, 0, name=f"idle{pid}") for pid in ids))
        for index in range(31)
    ]
    sent = sent_per_interval(slipped)
    mentioned = [
        {pid for pid in ids if any(line.startswith(f"kt.idle{pid}.") for line in lines)} for lines in sent
    ]
    assert len(sent) == 30
    for index, programs in enumerate(mentioned):
        assert programs == {pid for pid in ids if pid % 60 in (2 * index, 2 * index + 1)}, index
    assert set().union(*mentioned) == set(ids)
    started_late = [
        slipped[0],
        *(evolve(later, monotonic_ns=later.monotonic_ns + 10**10) for later in slipped[1:]),
    ]
    late = sent_per_interval(started_late)
    assert all(len(lines) <= len(sent[0]) for lines in late)


def test_names_kept_up_to_date_as_programs_come_and_go_are_those_worked_out_whole() -> None:
    """The names are kept from the changes alone while no two safe names are one; once some are,
    and again after, every program's name is what `for_statsd_names` gives over them all."""
    names = ["a.b", "a_b", "x", "dup", "dup", "y-z", "y_z", "q"]
    present_over_time = [
        {1, 3, 4},
        {1, 3, 4, 5},  # a second "dup": keys change
        {1, 2, 3, 4, 5},  # "a_b" beside "a.b": one safe name for two
        {1, 3, 5, 6},  # "a_b" gone again
        {1, 3, 5, 6, 7, 8},  # "y_z" beside "y-z"
        {3, 8},
        {3, 8, 2},
    ]
    snapshots = [
        snapshot(
            index,
            float(index),
            *(program(pid, index * 10, index, name=names[pid - 1]) for pid in sorted(present)),
        )
        for index, present in enumerate(present_over_time)
    ]
    lines = IntervalLines(StatsdSettings("127.0.0.1", prefix="kt"))
    for event in events_of(*snapshots):
        if isinstance(event, WindowStarted):
            lines.start(event)
        elif isinstance(event, IntervalEnded):
            lines.lines_for(event.delta)
            named = list(lines.programs.values())
            whole = for_statsd_names([name.key for name in named], [name.id for name in named])
            assert lines._names() == dict(zip(lines.programs, whole, strict=True))


def test_udp_datagrams_go_in_bursts_with_a_pause_between(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back to back, a turn's datagrams and the next's overflowed a late-reading server's
    receive buffer (two test suites on one host: 25 to 500 idle programs never arrived)."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(trio, "sleep", pause)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sender = LineSender("127.0.0.1", server.getsockname()[1], mtu=100)

        async def send() -> None:
            await sender.send([f"kt.p{index}:1|c" for index in range(40 * DATAGRAMS_A_BURST)])
            await sender.aclose()

        trio.run(send)
    assert sender.sent_datagrams >= 4 * DATAGRAMS_A_BURST
    assert pauses == [BURST_PAUSE_S] * (sender.sent_datagrams // DATAGRAMS_A_BURST)


@pytest.mark.parametrize("mtu", [1, 5, 12, 40, 1432])
def test_datagrams_hold_whole_lines_up_to_the_mtu(mtu: int) -> None:
    lines = ["kt.a:1|c", "", "kt.é:2|g", "x" * 30, "kt.b:3|c", "kt.c:4|c"]
    datagrams = list(batch_datagrams(lines, mtu))
    assert b"\n".join(datagrams) == "\n".join(lines).encode()
    # Each datagram fits, or is one line alone; and the next line would not have fitted.
    assert all(len(datagram) <= mtu or b"\n" not in datagram for datagram in datagrams)
    for datagram, following in itertools.pairwise(datagrams):
        assert len(datagram) + 1 + len(following.split(b"\n")[0]) > mtu
    # A line with a newline of its own is still one line.
    assert list(batch_datagrams(["a\nb", "c"], 3)) == [b"a\nb", b"c"]
