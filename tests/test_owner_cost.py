"""Each owner's whole cost: its own CPU and memory (/proc) beside its programs' kernel CPU."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from attrs import evolve

from kstat.core.counters import Counters
from kstat.core.model import ProgramOwner, Snapshot, Workload
from kstat.core.owner_cost import (
    OWNER_METRICS,
    PROCESS_COUNTERS,
    HeldProgram,
    ProcessCounters,
    ProcessSpan,
    owner_metric,
    owners_section,
)
from kstat.formats.report_json import report_from_json, report_to_dict, report_to_json
from kstat.sources.process_usage import CLOCK_TICKS, parse_stat, parse_status, process_usage
from tests.windows import run_window

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
NS_PER_TICK = 1_000_000_000 // CLOCK_TICKS


# --- reading /proc ---------------------------------------------------------------------------


def _stat_line(comm: bytes, utime: int, stime: int, start: int) -> bytes:
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime)]
    fields += ["0", "0", "20", "0", "1", "0", str(start), "1000", "10"]
    return b"42 (" + comm + b") " + " ".join(fields).encode() + b"\n"


def test_stat_is_read_after_the_last_parenthesis_whatever_the_comm_holds() -> None:
    hostile = b"a) 1 2 (\xff\xfe\n"
    assert parse_stat(_stat_line(hostile, 7, 3, 900)) == (
        7 * NS_PER_TICK,
        3 * NS_PER_TICK,
        900 * NS_PER_TICK,
    )


@pytest.mark.parametrize("data", [b"", b"42 (x) S 1 2", b"42 (x) " + b"z " * 30, b"\xff" * 100])
def test_stat_that_does_not_parse_is_none_not_an_exception(data: bytes) -> None:
    assert parse_stat(data) is None


def test_status_gives_resident_and_peak_memory_in_bytes() -> None:
    status = b"Name:\tagent\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t1\n"
    assert parse_status(status) == (1024 * 1024, 2048 * 1024)
    assert parse_status(b"Name:\tkthreadd\n") == (None, None)
    assert parse_status(b"VmRSS:\tlots kB\n") == (None, None)


def test_a_process_that_is_gone_is_not_read(tmp_path: Path) -> None:
    assert process_usage(999_999, tmp_path) is None


def test_this_process_is_read_as_proc_says() -> None:
    usage = process_usage(int(Path("/proc/self").resolve().name))
    assert usage is not None
    assert usage.counters.rss_bytes is not None and usage.counters.rss_bytes > 0
    assert usage.counters.peak_rss_bytes is not None
    assert usage.counters.peak_rss_bytes >= usage.counters.rss_bytes


def test_every_process_counter_is_declared_once() -> None:
    assert [spec.name for spec in PROCESS_COUNTERS] == list(ProcessCounters._fields)
    assert len({metric.name for metric in OWNER_METRICS}) == len(OWNER_METRICS)
    with pytest.raises(KeyError, match="owner metrics"):
        owner_metric("nonsense")


# --- the section's arithmetic ----------------------------------------------------------------

POD = Workload(container_id="c" * 64, container_name="agent", pod="agent-x7k2p", namespace="kube-system")
ALPHA = ProgramOwner(10, "alpha", POD)
BETA = ProgramOwner(20, "beta", POD)
SECOND = 1_000_000_000


def _spans() -> dict[int, ProcessSpan]:
    return {
        10: ProcessSpan(
            ProcessCounters(SECOND, 0, 1, 1), ProcessCounters(SECOND + 300_000_000, 100_000_000, 50, 80)
        ),
        20: ProcessSpan(ProcessCounters(0, 0, 1, 1), ProcessCounters(200_000_000, 0, 10, 20), gone=True),
    }


def test_whole_cost_is_the_process_cpu_and_its_programs_kernel_cpu() -> None:
    section = owners_section(
        [
            HeldProgram(1, (ALPHA,), Counters(100_000_000, 1000)),
            HeldProgram(2, (BETA,), Counters(50_000_000, 500)),
        ],
        _spans(),
        2 * SECOND,
    )
    assert section is not None
    alpha, beta = section.owners
    assert alpha.metrics["process_cpu_ns"] == 400_000_000
    assert alpha.metrics["user_time_ns"] == 300_000_000
    assert alpha.metrics["kernel_cpu_ns"] == 100_000_000
    assert alpha.metrics["whole_cpu_ns"] == 500_000_000
    assert alpha.metrics["whole_cpu_percent"] == pytest.approx(25.0)
    assert alpha.metrics["rss_bytes"] == 50
    assert alpha.metrics["peak_rss_bytes"] == 80
    # Gone inside the window: what it used until its last reading is still its own.
    assert beta.gone and beta.metrics["process_cpu_ns"] == 200_000_000
    assert section.total["whole_cpu_ns"] == 750_000_000


def test_a_shared_program_is_charged_to_each_holder_and_counted_once_in_totals() -> None:
    section = owners_section(
        [
            HeldProgram(1, (ALPHA, BETA), Counters(100_000_000, 1000)),
            HeldProgram(2, (BETA,), Counters(50_000_000, 500)),
        ],
        _spans(),
        2 * SECOND,
    )
    assert section is not None
    alpha, beta = section.owners
    assert alpha.metrics["kernel_cpu_ns"] == 100_000_000
    assert alpha.shared_program_ids == (1,)
    assert beta.metrics["kernel_cpu_ns"] == 150_000_000
    assert beta.program_ids == (1, 2) and beta.shared_program_ids == (1,)
    # Not 250 ms: program 1 once.
    assert section.total["kernel_cpu_ns"] == 150_000_000
    pods = [group for group in section.groups if group.by == "pod"]
    assert [(group.name, group.pids) for group in pods] == [("kube-system/agent-x7k2p", (10, 20))]
    assert pods[0].metrics["kernel_cpu_ns"] == 150_000_000
    assert pods[0].metrics["process_cpu_ns"] == 600_000_000
    assert pods[0].metrics["programs"] == 2


def test_an_owner_never_read_has_its_kernel_cpu_only() -> None:
    section = owners_section([HeldProgram(1, (ALPHA,), Counters(10, 1))], {}, SECOND)
    assert section is not None
    (alpha,) = section.owners
    assert alpha.unread and alpha.metrics["process_cpu_ns"] == 0 and "rss_bytes" not in alpha.metrics
    assert owners_section([HeldProgram(1, (), Counters(10, 1))], {}, SECOND) is None


# --- the report --------------------------------------------------------------------------------


def test_reports_without_owners_read_as_before() -> None:
    for path in sorted(GOLDEN.glob("*.json")):
        report = report_from_json(path.read_text())
        assert report.owners is None, path.name
        assert "owners" not in report_to_dict(report)


def _two_agent_report_text() -> str:
    section = owners_section(
        [
            HeldProgram(1, (ALPHA, BETA), Counters(100_000_000, 1000)),
            HeldProgram(2, (BETA,), Counters(50_000_000, 500)),
        ],
        _spans(),
        2 * SECOND,
    )
    data = json.loads((GOLDEN / sorted(path.name for path in GOLDEN.glob("*.json"))[0]).read_text())
    assert section is not None
    from kstat.formats.report_json import owners_to_dict  # noqa: PLC0415

    data["owners"] = owners_to_dict(section)
    return json.dumps(data)


def test_the_owners_section_is_written_and_read_back_the_same() -> None:
    text = _two_agent_report_text()
    report = report_from_json(text)
    assert report.owners is not None
    again = report_from_json(report_to_json(report))
    assert again.owners == report.owners
    alpha, beta = report.owners.owners
    assert (alpha.pid, alpha.command, alpha.workload.pod) == (10, "alpha", "agent-x7k2p")
    assert beta.gone and beta.shared_program_ids == (1,)
    assert report.owners.total["kernel_cpu_ns"] == 150_000_000


def test_an_owner_of_thousands_of_programs_is_written_as_the_c_encoder_writes_it_whole() -> None:
    """Its program ids go to the encoder as their JSON (`_long_numbers_encoded`: given as a
    list, 10,000 ids cost 2 MB of the report's peak), byte for byte what it would have written,
    in the report file and in the NDJSON stream's last line."""
    import orjson  # noqa: PLC0415

    from kstat.formats.report_json import (  # noqa: PLC0415
        _long_numbers_encoded,
        _unstructure_report,
        report_json_chunks,
        report_line_chunks,
    )

    held = [HeldProgram(program_id, (ALPHA, BETA), Counters(program_id, 1)) for program_id in range(1, 3001)]
    section = owners_section([*held, HeldProgram(5000, (BETA,), Counters(1, 1))], _spans(), 2 * SECOND)
    report = evolve(report_from_json(_two_agent_report_text()), owners=section)
    whole = report_to_dict(report)
    assert len(whole["owners"]["processes"][0]["program_ids"]) == 3000
    fields = _unstructure_report(report, with_programs=False)
    encoded = _long_numbers_encoded(fields, indented=True)
    assert isinstance(encoded["owners"]["processes"][0]["program_ids"], orjson.Fragment)  # not the list
    assert fields["owners"]["processes"][0]["program_ids"] == list(range(1, 3001))  # left as it was
    assert b"".join(report_json_chunks(report)) == orjson.dumps(whole, option=orjson.OPT_INDENT_2) + b"\n"
    first = {"kind": "summary"}
    assert b"".join(report_line_chunks(report, first)) == orjson.dumps({**first, **whole})
    assert report_from_json(report_to_json(report)).owners == section


def test_a_bad_owners_section_is_one_clear_error() -> None:
    data = json.loads(_two_agent_report_text())
    data["owners"]["processes"][0]["whole_cpu_ns"] = "lots"
    with pytest.raises(Exception, match=r"owners\.processes\[0\]\.whole_cpu_ns"):
        report_from_json(json.dumps(data))


# --- two real agents ---------------------------------------------------------------------------


class BusyAgent:
    """tests/busy_agent.py: a process holding a busy socket filter, burning CPU on demand."""

    def __init__(self, name: str, work_instructions: int) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.busy_agent", name, str(work_instructions)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = json.loads(self.process.stdout.readline())  # its program is loaded and attached
        self.pid: int = ready["pid"]
        self.program_id: int = ready["id"]
        self.port: int = ready["port"]
        self._sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sender.connect(("127.0.0.1", self.port))

    def ask(self, line: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"

    def send(self, count: int) -> None:
        """Packets from this process: the filter runs in the sender's context, not the agent's."""
        for _ in range(count):
            self._sender.send(b"kstat")

    def cpu_ns(self) -> int:
        """What /proc/PID/stat says the agent has used, user and system."""
        times = parse_stat(Path(f"/proc/{self.pid}/stat").read_bytes())
        assert times is not None
        return times[0] + times[1]

    def close(self) -> None:
        self._sender.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def agents() -> Iterator[tuple[BusyAgent, BusyAgent]]:
    first = BusyAgent("agent-alpha", 2000)
    try:
        second = BusyAgent("agent-beta", 6000)
    except BaseException:
        first.close()
        raise
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _run_time_ns(program_id: int) -> int:
    from kstat.abi.bpf import program_fd  # noqa: PLC0415
    from kstat.sources.syscalls import ProgramReader  # noqa: PLC0415

    fd = program_fd(program_id)
    assert fd is not None
    try:
        return ProgramReader().read_fd(fd).counters.run_time_ns
    finally:
        import os  # noqa: PLC0415

        os.close(fd)


@pytest.mark.kernel
async def test_two_agents_whole_cost_matches_the_kernels_own_accounting(
    agents: tuple[BusyAgent, BusyAgent],
) -> None:
    import trio  # noqa: PLC0415

    alpha, beta = agents
    burns_ms = {alpha.name: 400, beta.name: 800}
    packets = {alpha.name: 20_000, beta.name: 20_000}
    before_cpu = {agent.name: agent.cpu_ns() for agent in agents}
    before_run = {agent.name: _run_time_ns(agent.program_id) for agent in agents}

    async def body(probe: object) -> None:
        from tests.windows import WindowProbe  # noqa: PLC0415

        assert isinstance(probe, WindowProbe)
        for agent in agents:
            await trio.to_thread.run_sync(agent.ask, f"burn {burns_ms[agent.name]}")
            await trio.to_thread.run_sync(agent.send, packets[agent.name])
        # Two passes more: the details stage has read /proc after the burns.
        await probe.wait_for_snapshots(probe.snapshots_seen + 2)

    result = await run_window(body)
    report = result.report
    section = report.owners
    assert section is not None
    used = {agent.name: agent.cpu_ns() - before_cpu[agent.name] for agent in agents}
    ran = {agent.name: _run_time_ns(agent.program_id) - before_run[agent.name] for agent in agents}
    for agent in agents:
        (cost,) = [owner for owner in section.owners if owner.pid == agent.pid]
        assert cost.command == agent.name
        assert agent.program_id in cost.program_ids
        metrics = cost.metrics
        # The burn is what the agent used (its process time), to a clock tick or two.
        assert used[agent.name] == pytest.approx(
            burns_ms[agent.name] * 1_000_000, rel=0.05, abs=2 * NS_PER_TICK
        )
        assert metrics["process_cpu_ns"] == pytest.approx(used[agent.name], rel=0.05)
        assert metrics["kernel_cpu_ns"] == pytest.approx(ran[agent.name], rel=0.05)
        assert metrics["whole_cpu_ns"] == pytest.approx(used[agent.name] + ran[agent.name], rel=0.05)
        assert metrics["whole_cpu_percent"] == pytest.approx(
            (used[agent.name] + ran[agent.name]) * 100 / report.collection_duration_ns, rel=0.05
        )
        line = report.program(agent.program_id)
        assert line.run_count == packets[agent.name]
        assert metrics["kernel_cpu_ns"] == line.runtime_ns
        assert metrics["rss_bytes"] > 0 and metrics["peak_rss_bytes"] >= metrics["rss_bytes"]
    # And in the report's JSON.
    again = report_from_json(report_to_json(report))
    assert again.owners == section


@pytest.mark.kernel
async def test_an_agent_that_exits_mid_window_keeps_what_it_used() -> None:
    import trio  # noqa: PLC0415

    agent = BusyAgent("agent-gone", 0)
    program_id = agent.program_id
    cpu: list[int] = []

    async def body(probe: object) -> None:
        from tests.windows import WindowProbe  # noqa: PLC0415

        assert isinstance(probe, WindowProbe)
        await trio.to_thread.run_sync(agent.ask, "burn 300")
        cpu.append(agent.cpu_ns())
        await probe.wait_for_snapshots(probe.snapshots_seen + 2)
        await trio.to_thread.run_sync(agent.close)
        await probe.wait_for_snapshots(probe.snapshots_seen + 2)

    before = agent.cpu_ns()
    result = await run_window(body)
    section = result.report.owners
    assert section is not None
    (cost,) = [owner for owner in section.owners if program_id in owner.program_ids]
    assert cost.gone
    assert cost.metrics["process_cpu_ns"] == pytest.approx(cpu[0] - before, rel=0.05, abs=2 * NS_PER_TICK)


def test_owner_records_have_the_fixed_keys_and_the_sections_figures() -> None:
    from kstat.formats.records import RECORD_KEYS, summary_records  # noqa: PLC0415

    report = report_from_json(_two_agent_report_text())
    records = list(summary_records(report, "node-1"))
    assert all(tuple(record) == RECORD_KEYS for record in records)
    owners = [record for record in records if record["kind"] == "owner"]
    assert [(record["owner_pid"], record["owner_command"]) for record in owners] == [
        (10, "alpha"),
        (20, "beta"),
    ]
    assert owners[0]["owner_whole_cpu_ns"] == 500_000_000 and owners[1]["owner_gone"] is True
    assert owners[0]["owner_pod"] == "agent-x7k2p"
    (pod,) = [r for r in records if r["kind"] == "owner_group" and r["owner_group_by"] == "pod"]
    assert pod["owner_kernel_cpu_ns"] == 150_000_000
    (total,) = [record for record in records if record["kind"] == "owner_total"]
    assert total["owner_kernel_cpu_ns"] == 150_000_000 and records[-1] is total


# --- a window replayed: summary, Prometheus, StatsD -------------------------------------------


def _replayed() -> list[Snapshot]:
    from kstat.core.model import ProgramDetails  # noqa: PLC0415
    from kstat.core.owner_cost import ProcessUsage  # noqa: PLC0415
    from tests.builders import program, snapshot  # noqa: PLC0415

    held_by_both = ProgramDetails(owners=(ALPHA, BETA))
    held_by_alpha = ProgramDetails(owners=(ALPHA,))
    boot = 1_000_000_000  # both started long before the window (10 s of boot time in)

    def at(
        sequence: int, seconds: float, alpha_user_ms: int, shared_ns: int, own_ns: int, *, beta: bool
    ) -> Snapshot:
        taken = snapshot(
            sequence,
            seconds,
            program(1, shared_ns, shared_ns // 100, details=held_by_both),
            program(2, own_ns, own_ns // 100, details=held_by_alpha),
        )
        processes = [ProcessUsage(10, boot, ProcessCounters(alpha_user_ms * 1_000_000, 0, 4096, 8192))]
        if beta:
            processes.append(ProcessUsage(20, boot, ProcessCounters(sequence * 50_000_000, 0, 100, 100)))
        return evolve(taken, processes=tuple(processes))

    return [
        at(0, 0.0, 100, 0, 0, beta=True),
        at(1, 1.0, 300, 10_000_000, 5_000_000, beta=True),
        at(2, 2.0, 600, 30_000_000, 5_000_000, beta=False),  # beta exited after its second reading
    ]


def test_a_replayed_window_charges_each_owner_and_keeps_what_a_gone_one_used() -> None:
    from tests.builders import report_of  # noqa: PLC0415

    report = report_of(*_replayed())
    assert report.owners is not None
    alpha, beta = report.owners.owners
    assert alpha.metrics["process_cpu_ns"] == 500_000_000
    assert alpha.metrics["kernel_cpu_ns"] == 35_000_000
    assert alpha.metrics["whole_cpu_percent"] == pytest.approx(26.75)
    assert beta.gone and beta.metrics["process_cpu_ns"] == 50_000_000
    assert beta.metrics["kernel_cpu_ns"] == 30_000_000
    assert report.owners.total["kernel_cpu_ns"] == 35_000_000 == report.total_runtime_ns


def test_prometheus_has_owner_series_with_the_info_series_labels() -> None:
    from kstat.core.events import IntervalEnded, WindowStarted  # noqa: PLC0415
    from kstat.formats.prometheus import Format, exposition_of  # noqa: PLC0415
    from tests.builders import events_of  # noqa: PLC0415

    events = [event for event in events_of(*_replayed()) if isinstance(event, WindowStarted | IntervalEnded)]
    body = exposition_of(events).render(Format.TEXT).body.decode()
    labels = 'pid="10",command="alpha",pod="agent-x7k2p",namespace="kube-system",container="agent",unit=""'
    assert f"kstat_owner_user_seconds_total{{{labels}}} 0.6\n" in body
    assert f"kstat_owner_kernel_cpu_seconds_total{{{labels}}} 0.035\n" in body
    assert f"kstat_owner_whole_cpu_seconds_total{{{labels}}} 0.635\n" in body
    assert f"kstat_owner_rss_bytes{{{labels}}} 4096\n" in body
    assert f"kstat_owner_programs{{{labels}}} 2\n" in body
    assert "# TYPE kstat_owner_user_seconds_total counter" in body
    assert 'pid="20"' not in body  # gone: no series of its own any more


def test_statsd_sends_each_owners_interval_cost() -> None:
    from kstat.core.events import IntervalEnded, WindowStarted  # noqa: PLC0415
    from kstat.formats.statsd import IntervalLines  # noqa: PLC0415
    from kstat.sinks.statsd import StatsdSettings  # noqa: PLC0415
    from tests.builders import events_of  # noqa: PLC0415

    for tags in (False, True):
        lines = IntervalLines(StatsdSettings("127.0.0.1", prefix="kt", dogstatsd_tags=tags))
        sent = []
        for event in events_of(*_replayed()):
            if isinstance(event, WindowStarted):
                lines.start(event)
            elif isinstance(event, IntervalEnded):
                sent.append(lines.owner_lines(event))
        if tags:
            assert (
                "kt.owner.process_cpu_ns:200000000|c|#command:alpha,pid:10,pod:agent-x7k2p,"
                "namespace:kube-system,container:agent" in sent[0]
            )
        else:
            assert "kt.owner.alpha.10.process_cpu_ns:200000000|c" in sent[0]
            assert "kt.owner.alpha.10.kernel_cpu_ns:15000000|c" in sent[0]
            assert "kt.owner.alpha.10.whole_cpu_percent:21.5|g" in sent[0]
            assert "kt.owner.beta.20.kernel_cpu_ns:10000000|c" in sent[0]
            assert not [line for line in sent[1] if ".beta." in line]


# --- compare and --fail-on on an agent's whole cost -----------------------------------------


def test_an_owner_threshold_reads_naturally_and_unknown_ones_are_one_clear_line() -> None:
    from kstat.analysis.compare import parse_threshold  # noqa: PLC0415
    from kstat.errors import UsageError  # noqa: PLC0415

    threshold = parse_threshold("owner:whole_cpu_percent:+10%")
    assert (threshold.scope, threshold.metric, threshold.limit, threshold.relative) == (
        "owner",
        "whole_cpu_percent",
        10.0,
        True,
    )
    assert threshold.text == "owner:whole_cpu_percent:+10%"
    assert parse_threshold("runtime_ns:+1").scope == "program"
    with pytest.raises(UsageError, match="unknown owner metric 'runtime_ns'"):
        parse_threshold("owner:runtime_ns:+1%")
    with pytest.raises(UsageError, match="unknown metric 'whole_cpu_percent'"):
        parse_threshold("whole_cpu_percent:+1%")


@pytest.mark.kernel
async def test_compare_gates_on_an_agents_whole_cpu(
    agents: tuple[BusyAgent, BusyAgent], tmp_path: Path
) -> None:
    import trio  # noqa: PLC0415

    from tests.windows import WindowProbe  # noqa: PLC0415

    alpha, beta = agents

    async def window(alpha_burn_ms: int) -> Path:
        async def body(probe: WindowProbe) -> None:
            await trio.to_thread.run_sync(alpha.ask, f"burn {alpha_burn_ms}")
            await trio.to_thread.run_sync(beta.ask, "burn 200")
            await trio.to_thread.run_sync(alpha.send, 5_000)
            await probe.wait_for_snapshots(probe.snapshots_seen + 2)

        report = (await run_window(body)).report
        path = tmp_path / f"alpha-{alpha_burn_ms}.json"
        path.write_text(report_to_json(report))
        return path

    baseline = await window(200)
    current = await window(800)

    def compare(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kstat", "compare", str(baseline), str(current), *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    gated = compare("--fail-on", "owner:whole_cpu_percent:+50%")
    assert gated.returncode == 1, gated.stderr
    regressions = [line for line in gated.stdout.splitlines() if "owner:whole_cpu_percent" in line]
    # Only the agents are this test's (other processes of the host may hold programs too).
    assert [line.split(":")[0].strip() for line in regressions if "agent-" in line] == ["agent-alpha (owner)"]
    assert "Whole cost per owner" in gated.stdout
    data = json.loads(compare("--format", "json").stdout)
    (row,) = [owner for owner in data["owners"] if owner["command"] == "agent-alpha"]
    assert row["change_percent"]["process_cpu_ns"] > 200  # 800 ms against 200 ms
    bad = compare("--fail-on", "owner:runtime_ns:+1%")
    assert bad.returncode == 2 and "unknown owner metric" in bad.stderr.splitlines()[-1]


def test_the_report_page_has_the_owner_catalogues_table() -> None:
    from kstat.core.owner_cost import OWNER_TABLE_END, OWNER_TABLE_START, owner_markdown_table  # noqa: PLC0415

    page = (REPO / "docs" / "report.md").read_text()
    table = page.split(OWNER_TABLE_START)[1].split(OWNER_TABLE_END)[0]
    assert table.strip() == owner_markdown_table().strip()


def test_top_shows_the_owners_whole_cost_on_the_o_key() -> None:
    from rich.console import Console  # noqa: PLC0415

    from kstat.core.events import IntervalEnded, WindowStarted  # noqa: PLC0415
    from kstat.live.screen import render  # noqa: PLC0415
    from kstat.live.state import Screen, TopState  # noqa: PLC0415
    from tests.builders import events_of  # noqa: PLC0415

    state = TopState()
    for event in events_of(*_replayed()[:2]):
        if isinstance(event, WindowStarted):
            state.apply_start(event)
        elif isinstance(event, IntervalEnded):
            state.apply_interval(event)
    state.press("o")
    assert state.screen in {Screen.OWNERS}
    assert [cost.pid for cost in state.owners] == [10, 20]
    assert state.owners[0].metrics["whole_cpu_percent"] == pytest.approx(21.5)
    assert state.owners[1].metrics["whole_cpu_percent"] == pytest.approx(6.0)
    for width in (150, 80):
        console = Console(width=width, height=20, force_terminal=False, color_system=None)
        with console.capture() as captured:
            console.print(render(state, width, 20))
        screen = captured.get()
        assert "WHOLE CPU %" in screen and "alpha" in screen and "21.5" in screen
        assert all(len(line) <= width for line in screen.splitlines())
    state.press("o")
    assert state.screen in {Screen.TABLE}


def test_plot_draws_each_owners_whole_cost_beside_the_baseline(tmp_path: Path) -> None:
    baseline = tmp_path / "base.json"
    current = tmp_path / "cur.json"
    baseline.write_text(_two_agent_report_text())
    data = json.loads(_two_agent_report_text())
    # Compare and plot work the shares out from the times, over the report's own window.
    data["owners"]["processes"][0]["user_time_ns"] = 900_000_000
    current.write_text(json.dumps(data))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "kstat",
            "plot",
            str(current),
            "--baseline",
            str(baseline),
            "-o",
            str(tmp_path / "c.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    chart = tmp_path / "c-owners.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from kstat.analysis.charts import comparison_charts  # noqa: PLC0415

    charts = comparison_charts(report_from_json(current.read_text()), report_from_json(baseline.read_text()))
    axis = charts.figures["owners"].axes[0]
    labels = [label.get_text() for label in axis.get_yticklabels()]
    assert labels == ["alpha (baseline)", "alpha (current)", "beta (baseline)", "beta (current)"]
    texts = [text.get_text() for text in axis.texts]
    elapsed_s = report_from_json(current.read_text()).collection_duration_ns / 1e9
    process = 1_000_000_000 / 1e9 / elapsed_s * 100  # 900 ms user, 100 ms system
    kernel = 0.1 / elapsed_s * 100
    assert texts[1] == f"{process + kernel:.3g} %  ({process:.3g} + {kernel:.3g})"
    assert texts[0] != texts[1]
