"""Per-CPU cost (`--per-cpu`): each program's run time and runs on each CPU, read by kstat's
BPF iterator, exact to the packets sent from senders pinned to each CPU (a socket filter on a
loopback UDP socket runs on the sending CPU, in its softirq)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from attrs import evolve
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

import kstat
from kstat.abi.bpf import enable_run_time_stats
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramStats
from kstat.errors import FeatureMissing
from kstat.formats.prometheus import exposition_of, negotiate
from kstat.formats.records import RECORD_KEYS
from kstat.sinks.ndjson import NdjsonSink
from kstat.sources.iterator import IteratorReader, possible_cpus
from kstat.testing.loader import LoopbackTarget
from tests.builders import events_of, program, snapshot
from tests.kstat_process import KstatProcess, run_kstat
from tests.names import KT
from tests.prometheus_server import PROMTOOL, require
from tests.statsd_daemon import free_port
from tests.windows import LoadFilter


def online_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def send_pinned(target: LoopbackTarget, cpu: int, count: int) -> None:
    """`count` packets sent by a thread pinned to `cpu` (its own affinity, not the process's)."""
    failure: list[BaseException] = []

    def sender() -> None:
        try:
            os.sched_setaffinity(0, {cpu})  # 0: this thread
            target.send(count)
        except Exception as error:  # noqa: BLE001 (handed to the test's thread)
            failure.append(error)

    thread = threading.Thread(target=sender)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@pytest.fixture
def per_cpu_reader() -> Iterator[Callable[[], IteratorReader]]:
    """IteratorReader(per_cpu=True) makers; skips where this kernel lacks the iterator."""
    made: list[IteratorReader] = []

    def make() -> IteratorReader:
        try:
            reader = IteratorReader(per_cpu=True)
        except FeatureMissing as missing:
            pytest.skip(f"kstat snapshots by syscalls here: {missing}")
        made.append(reader)
        return reader

    yield make
    for reader in made:
        reader.close()


@pytest.mark.kernel
def test_runs_per_cpu_are_the_packets_sent_on_each_cpu(
    load_filter: LoadFilter, per_cpu_reader: Callable[[], IteratorReader]
) -> None:
    cpus = online_cpus()
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to tell apart")
    target = load_filter(f"{KT}percpu")
    sent = {cpus[0]: 300, cpus[1]: 1_200}
    stats = enable_run_time_stats()
    try:
        for cpu, count in sent.items():
            send_pinned(target, cpu, count)
    finally:
        os.close(stats)
    reader = per_cpu_reader()
    (program,) = [found for found in reader.read().programs if found.id == target.program.id]
    counters = program.counters
    assert counters.per_cpu_run_count is not None and counters.per_cpu_run_time_ns is not None
    assert len(counters.per_cpu_run_count) == max(possible_cpus()) + 1
    runs = {cpu: count for cpu, count in enumerate(counters.per_cpu_run_count) if count}
    assert runs == sent
    # The sums are the per-CPU values' (read by the same walk), and every CPU that ran took time.
    assert counters.run_count == sum(counters.per_cpu_run_count) == 1_500
    assert counters.run_time_ns == sum(counters.per_cpu_run_time_ns)
    assert all(counters.per_cpu_run_time_ns[cpu] > 0 for cpu in sent)


@pytest.mark.kernel
def test_without_per_cpu_the_counters_carry_none(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}nopcpu")
    try:
        reader = IteratorReader()
    except FeatureMissing as missing:
        pytest.skip(f"kstat snapshots by syscalls here: {missing}")
    try:
        (program,) = [found for found in reader.read().programs if found.id == target.program.id]
    finally:
        reader.close()
    assert program.counters.per_cpu_run_count is None and program.counters.per_cpu_run_time_ns is None


@pytest.mark.kernel
def test_a_window_reports_each_cpus_runs_and_the_busiest_cpu(load_filter: LoadFilter, tmp_path: Path) -> None:
    cpus = online_cpus()
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to tell apart")
    target = load_filter(f"{KT}pcwin")
    sent = {cpus[0]: 200, cpus[1]: 700}
    stream = tmp_path / "records.ndjson"

    async def window() -> kstat.Report:
        async with kstat.collect(
            interval="50ms",
            select=kstat.ProgramFilter(name=f"^{KT}pcwin$"),
            per_cpu=True,
            sinks=[NdjsonSink(stream, layout="records")],
        ) as session:
            for cpu, count in sent.items():
                await trio.to_thread.run_sync(send_pinned, target, cpu, count)
            so_far = await session.report_so_far()
            line = so_far.program(f"{KT}pcwin")
            assert line.per_cpu is not None
            assert {cpu: values["run_count"] for cpu, values in line.per_cpu.items()} == sent
        return session.report

    report = trio.run(window)
    assert report.snapshot_method == "iterator"
    line = report.program(f"{KT}pcwin")
    assert line.per_cpu is not None
    assert {cpu: values["run_count"] for cpu, values in line.per_cpu.items()} == sent
    assert sum(values["runtime_ns"] for values in line.per_cpu.values()) == line.runtime_ns
    busiest = max(values["runtime_ns"] for values in line.per_cpu.values())
    elapsed = report.collection_duration_ns
    assert line.value("busiest_cpu_percent") == pytest.approx(busiest * 100 / elapsed)
    # One program: the total's busiest CPU is its own.
    assert report.total("busiest_cpu_percent") == pytest.approx(busiest * 100 / elapsed)
    # The report is a contract: the field is written and read back.
    again = kstat.report_from_dict(kstat.report_to_dict(report))
    assert again.program(f"{KT}pcwin").per_cpu == line.per_cpu
    # NDJSON records: one line per program and CPU, the intervals' adding up to the window's.
    records = [json.loads(text) for text in stream.read_text().splitlines()]
    assert all(tuple(record) == RECORD_KEYS for record in records)
    per_interval: dict[int, int] = {}
    for record in records:
        if record["kind"] == "program_cpu":
            per_interval[record["cpu"]] = per_interval.get(record["cpu"], 0) + record["run_count"]
    assert per_interval == sent, [
        (record["kind"], record["sequence"], record["run_count"]) for record in records
    ]
    summary = {record["cpu"]: record for record in records if record["kind"] == "summary_cpu"}
    assert {cpu: record["run_count"] for cpu, record in summary.items()} == sent
    for cpu, record in summary.items():
        assert record["key"] == f"{KT}pcwin" and record["runtime_ns"] == line.per_cpu[cpu]["runtime_ns"]
        assert record["estimated_cpu_percent"] == pytest.approx(record["runtime_ns"] * 100 / elapsed)
    assert all(record["cpu"] is None for record in records if not record["kind"].endswith("_cpu"))


@pytest.mark.kernel
def test_without_per_cpu_a_window_has_no_per_cpu_fields(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}pcnone")

    async def window() -> kstat.Report:
        async with kstat.collect(
            interval="50ms", select=kstat.ProgramFilter(name=f"^{KT}pcnone$"), snapshot_method="iterator"
        ) as session:
            await trio.to_thread.run_sync(target.send, 10)
        return session.report

    report = trio.run(window)
    data = kstat.report_to_dict(report)
    assert "per_cpu" not in data["program_stats"][f"{KT}pcnone"]
    assert "busiest_cpu_percent" not in data["program_stats"][f"{KT}pcnone"]
    assert "total_busiest_cpu_percent" not in data and "unavailable_counters" not in data


@pytest.mark.kernel
def test_by_syscalls_there_is_no_per_cpu_field(load_filter: LoadFilter) -> None:
    """bpf_prog_info has only sums: asked for per-CPU counters, the syscalls say so and leave
    the field out."""
    target = load_filter(f"{KT}pcsys")

    async def window() -> kstat.Report:
        async with kstat.collect(
            interval="50ms",
            select=kstat.ProgramFilter(name=f"^{KT}pcsys$"),
            snapshot_method="syscalls",
            per_cpu=True,
        ) as session:
            await trio.to_thread.run_sync(target.send, 10)
        return session.report

    report = trio.run(window)
    line = report.program(f"{KT}pcsys")
    assert line.run_count == 10 and line.per_cpu is None
    assert line.value("busiest_cpu_percent") is None


def _with_cpus(stats: ProgramStats, times: tuple[int, ...], runs: tuple[int, ...]) -> ProgramStats:
    counters = stats.counters._replace(per_cpu_run_time_ns=times, per_cpu_run_count=runs)
    return evolve(stats, counters=counters)


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
def test_prometheus_has_a_cpu_series_per_program_and_cpu_only_with_per_cpu(accept: str) -> None:
    """An encoder's test: per-CPU families only where the counters came per CPU, counted from the
    baseline like the sums, each CPU on which the program ran one series, read back by the
    official parsers."""
    early = program(1, 1_000, 10, name="early")
    window = (
        snapshot(0, 0.0, _with_cpus(early, (600, 400), (6, 4))),
        snapshot(
            1,
            1.0,
            _with_cpus(program(1, 3_000_001_000, 40, name="early"), (2_000_000_600, 1_000_000_400), (6, 34)),
        ),
    )
    exposition = exposition_of(
        [e for e in events_of(*window) if isinstance(e, WindowStarted | IntervalEnded)]
    )
    rendered = exposition.render(negotiate(accept))
    text = rendered.body.decode()
    parse = parse_openmetrics if accept else parse_text
    found = {
        (sample.name, sample.labels.get("cpu")): (sample.value, set(sample.labels))
        for family in parse(text)
        for sample in family.samples
        if "_cpu_" in sample.name
    }
    assert found == {
        ("kstat_program_cpu_runs_total", "1"): (30, {"id", "name", "type", "cpu"}),
        ("kstat_program_cpu_run_time_seconds_total", "0"): (
            pytest.approx(2.0),
            {"id", "name", "type", "cpu"},
        ),
        ("kstat_program_cpu_run_time_seconds_total", "1"): (
            pytest.approx(1.0),
            {"id", "name", "type", "cpu"},
        ),
    }
    plain = exposition_of(
        [
            e
            for e in events_of(
                *(snapshot(0, 0.0, early), snapshot(1, 1.0, program(1, 2_000, 20, name="early")))
            )
            if isinstance(e, WindowStarted | IntervalEnded)
        ]
    ).render(negotiate(accept))
    assert b"_cpu_" not in plain.body
    if not accept:
        checked = subprocess.run(
            [require(PROMTOOL), "check", "metrics"],
            input=rendered.body,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0 and checked.stdout + checked.stderr == b"", (
            checked.stdout + checked.stderr
        )


# A sender of its own process: `python -c _SENDER PORT COUNT`.
_SENDER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.connect(('127.0.0.1', int(sys.argv[1])))\n"
    "for _ in range(int(sys.argv[2])): s.send(b'k')"
)


@pytest.mark.kernel
def test_kstat_run_per_cpu_counts_a_command_pinned_by_taskset(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    """From the command line: `kstat run --per-cpu` around senders that `taskset` pins, the
    report's per_cpu exact to each CPU's packets, the NDJSON records' too."""
    cpus = online_cpus()
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to tell apart")
    target = load_filter(f"{KT}pcrun")
    port = target.port
    sent = {cpus[0]: 150, cpus[1]: 450}
    senders = " && ".join(
        f"taskset -c {cpu} {shlex.quote(sys.executable)} -c {shlex.quote(_SENDER)} {port} {count}"
        for cpu, count in sent.items()
    )
    report_path, records = tmp_path / "report.json", tmp_path / "records.ndjson"
    finished = run_kstat(
        [
            "run",
            "--per-cpu",
            "--scope",
            "host",
            "--name",
            f"^{KT}pcrun$",
            "-o",
            str(report_path),
            "--sink",
            f"ndjson:{records}?layout=records",
            "--",
            "sh",
            "-c",
            senders,
        ]
    )
    assert finished.returncode == 0, finished.stderr
    line = json.loads(report_path.read_text())["program_stats"][f"{KT}pcrun"]
    assert {int(cpu): values["run_count"] for cpu, values in line["per_cpu"].items()} == sent
    assert line["busiest_cpu_percent"] > 0
    summary = [json.loads(text) for text in records.read_text().splitlines()]
    assert {
        record["cpu"]: record["run_count"] for record in summary if record["kind"] == "summary_cpu"
    } == sent


def _scrape(port: int) -> str:
    """The exposition; empty while the endpoint says 503 (before its baseline)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
    except urllib.error.HTTPError as error:
        if error.code == 503:
            return ""
        raise
    return text


@pytest.mark.kernel
def test_kstat_serve_per_cpu_exposes_a_series_per_program_and_cpu(load_filter: LoadFilter) -> None:
    cpus = online_cpus()
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to tell apart")
    port = free_port(socket.SOCK_STREAM)
    kstat = KstatProcess(
        [
            "serve",
            "--per-cpu",
            "--interval",
            "200ms",
            "--name",
            f"^{KT}pcsrv$",
            "--sink",
            f"prometheus://127.0.0.1:{port}",
        ]
    )
    try:
        kstat.wait_for_window()
        target = load_filter(f"{KT}pcsrv")
        info = f'kstat_program_info{{id="{target.program.id}"'
        wait_for(lambda: info in _scrape(port))  # met: counted from zero (loaded after the start)
        sent = {cpus[0]: 111, cpus[1]: 222}
        for cpu, count in sent.items():
            send_pinned(target, cpu, count)
        wanted = [
            f'kstat_program_cpu_runs_total{{id="{target.program.id}",name="{KT}pcsrv",'
            f'type="SocketFilter",cpu="{cpu}"}} {count}'
            for cpu, count in sent.items()
        ]

        def all_there() -> str | None:
            text = _scrape(port)
            return text if all(line in text for line in wanted) else None

        text = wait_for(all_there)
        assert "kstat_program_cpu_run_time_seconds_total{" in text
    finally:
        kstat.signal(signal.SIGTERM)
        returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines


def wait_for(found: Callable[[], str | bool | None], timeout_s: float = 20) -> str:
    """Polls until `found` gives something (readiness, not a fixed sleep); its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = found()
        if value:
            return value if isinstance(value, str) else ""
        if time.monotonic() > deadline:
            raise AssertionError(f"not there in {timeout_s} s")
        time.sleep(0.05)


@pytest.mark.kernel
def test_compare_fails_on_the_busiest_cpu(load_filter: LoadFilter, tmp_path: Path) -> None:
    """`--fail-on busiest_cpu_percent:+0`: the same runs on one CPU instead of spread over two
    fail the gate (the sum over CPUs is the same; the busiest CPU gets twice the work)."""
    cpus = online_cpus()
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to tell apart")
    target = load_filter(f"{KT}pccmp", 2_000)
    reports = {}
    sides = {"spread": {cpus[0]: 1_500, cpus[1]: 1_500}, "one_cpu": {cpus[0]: 3_000}}
    for side, sent in sides.items():
        reports[side] = tmp_path / f"{side}.json"
        senders = " && ".join(
            f"taskset -c {cpu} {shlex.quote(sys.executable)} -c {shlex.quote(_SENDER)} {target.port} {count}"
            for cpu, count in sent.items()
        )
        finished = run_kstat(
            [
                "run",
                "--per-cpu",
                "--scope",
                "host",
                "--name",
                f"^{KT}pccmp$",
                "-o",
                str(reports[side]),
                "--",
                "sh",
                "-c",
                senders,
            ]
        )
        assert finished.returncode == 0, finished.stderr
        line = json.loads(reports[side].read_text())["program_stats"][f"{KT}pccmp"]
        assert {int(cpu): values["run_count"] for cpu, values in line["per_cpu"].items()} == sent
    gate = ["compare", "--fail-on", "busiest_cpu_percent:+0"]
    worse = run_kstat([*gate, str(reports["spread"]), str(reports["one_cpu"])])
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "busiest_cpu_percent" in worse.stdout + worse.stderr
    better = run_kstat([*gate, str(reports["one_cpu"]), str(reports["spread"])])
    assert better.returncode == 0, better.stdout + better.stderr
