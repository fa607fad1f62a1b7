"""The NDJSON stream: per-interval deltas that add up to the report, line by line, in pipes."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

import kstat
from kstat.core.counters import Counters
from kstat.core.events import IntervalEnded
from kstat.core.filters import ProgramFilter
from kstat.core.model import (
    MapFootprint,
    ProgramDetails,
    ProgramFootprint,
    ProgramOwner,
    ProgramStats,
    Snapshot,
    Workload,
)
from kstat.engine.scheduler import merged
from kstat.formats.ndjson import interval_to_dict, json_line, summary_line, summary_to_dict
from kstat.formats.report_json import program_to_dict, report_to_dict
from kstat.sinks.ndjson import NdjsonSink
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.builders import events_of, interval, program, report_of, snapshot
from tests.kstat_process import KstatProcess
from tests.names import KT
from tests.statsd_daemon import running_statsd
from tests.windows import LoadFilter, WindowProbe, run_window, send

KSTAT = f"{sys.executable} -m kstat"


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def interval_sums(lines: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """run_count summed over interval lines, per program identity (id, load time)."""
    sums: dict[tuple[int, int], int] = {}
    for line in lines:
        if line["kind"] != "interval":
            continue
        for stats in line["program_stats"].values():
            identity = (stats["id"], stats["load_time_ns"])
            sums[identity] = sums.get(identity, 0) + stats["run_count"]
    return sums


def report_counts(report: dict[str, Any]) -> dict[tuple[int, int], int]:
    return {
        (stats["id"], stats["load_time_ns"]): stats["run_count"] for stats in report["program_stats"].values()
    }


# A program's life in a synthetic window: when it appears, when it goes, runs per snapshot.
lives = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=6),
        st.integers(min_value=0, max_value=6),
        st.lists(st.integers(min_value=0, max_value=1_000), min_size=8, max_size=8),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@given(lives=lives, skip=st.sets(st.integers(min_value=1, max_value=6)))
def test_interval_deltas_add_up_to_the_report_whatever_comes_and_goes(
    lives: list[tuple[int, int, list[int], bool]], skip: set[int]
) -> None:
    """Programs load and unload at any snapshot, a lagging sink skips some: sums still match."""
    snapshots: list[Snapshot] = []
    for sequence in range(8):
        present: list[ProgramStats] = []
        for index, (appear, span, runs, loaded_before_window) in enumerate(lives):
            if appear <= sequence <= appear + span:
                # Loaded before the window only if the first pass saw it; otherwise loaded just
                # before the pass that first saw it.
                before = loaded_before_window and appear == 0
                load_time_ns = 1_000 if before else 10_000_000_000 + appear * 10**9 - 1
                total = sum(runs[: sequence + 1])
                present.append(program(index + 1, total * 10, total, load_time_ns=load_time_ns))
        snapshots.append(snapshot(sequence, float(sequence), *present))
    # What a lagging sink gets: the intervals ending at skipped snapshots merged into the next.
    intervals = [event for event in events_of(*snapshots) if isinstance(event, IntervalEnded)]
    delivered: list[IntervalEnded] = []
    pending: list[IntervalEnded] = []
    for event in intervals:
        pending.append(event)
        if event.current.sequence not in skip or event is intervals[-1]:
            delivered.append(merged(pending))
            pending = []
    lines = [interval_to_dict(event) for event in delivered]
    assert [line["skipped_snapshots"] for line in lines] == [
        event.current.sequence - event.previous.sequence - 1 for event in delivered
    ]
    report = report_to_dict(report_of(*snapshots))
    sums = interval_sums(lines)
    for identity, count in report_counts(report).items():
        assert sums.get(identity, 0) == count, (identity, sums, report_counts(report))


def test_an_interval_line_has_deltas_and_absolute_counters() -> None:
    first = snapshot(0, 0.0, program(1, 500, 5, name="flow"))
    second = snapshot(1, 0.5, program(1, 2_500, 25, name="flow"))
    line = interval_to_dict(interval(first, second))
    stats = line["program_stats"]["flow"]
    assert (stats["run_count"], stats["runtime_ns"], stats["avg_runtime_ns"]) == (20, 2_000, 100)
    assert stats["events_per_sec"] == pytest.approx(40.0)
    assert stats["counters"] == {"run_time_ns": 2_500, "run_cnt": 25, "recursion_misses": 0}
    assert (line["kind"], line["sequence"], line["elapsed_ns"]) == ("interval", 1, 500_000_000)
    assert line["total_run_count"] == 20


@pytest.mark.kernel
async def test_each_line_is_in_the_file_as_its_interval_ends(load_filter: LoadFilter, tmp_path: Path) -> None:
    target = load_filter(f"{KT}nd")
    stream = tmp_path / "s.ndjson"
    lines_on_disk: list[tuple[int, int]] = []

    async def body(probe: WindowProbe) -> None:
        for _ in range(4):
            await send(target, 250)
            await probe.wait_for_snapshots(probe.snapshots_seen + 2)
            lines_on_disk.append((probe.snapshots_seen, len(stream.read_text().splitlines())))

    # Its own program alone: the lines' pace is what is tested, not another tenant's 10,000
    # programs' lines at the start.
    own = ProgramFilter(ids=(target.program.id,))
    result = await run_window(body, sinks=[NdjsonSink(stream)], program_filter=own)
    lines = read_lines(stream)
    assert result.report.snapshots is not None
    # One line per program loaded at the start (its footprint, once), then the intervals.
    programs_at_start = result.report.num_programs - sum(
        1 for line in result.report.programs if line.loaded_during_window
    )
    assert [line["kind"] for line in lines] == ["program"] * programs_at_start + ["interval"] * (
        result.report.snapshots - 1
    ) + ["summary"]
    # Once snapshot k is taken, the lines of the intervals before it are on disk (one may
    # still be on its way through the sink's thread).
    assert all(count >= seen - 2 for seen, count in lines_on_disk)
    assert interval_sums(lines)[(target.program.id, target.program.stats().load_time_ns)] == 1_000
    assert lines[-1]["program_stats"][f"{KT}nd"]["run_count"] == 1_000
    assert lines[-1]["total_run_count"] == result.report.total_run_count


@pytest.mark.kernel
@pytest.mark.parametrize("per_cpu", [False, True])
def test_the_last_walk_decoded_after_the_window_closed_its_reader_still_adds_up(
    load_filter: LoadFilter, tmp_path: Path, per_cpu: bool
) -> None:
    """The details stage decodes the window's last walk after the clock has stopped and the
    iterator closed. Closing it forgot the walk before, so the last walk's programs were all
    new: the last interval said 0 runs where the report said 900 (a harness on a busy host, or
    one whose body never gives the event loop a turn, as here)."""
    target = load_filter(f"{KT}ndlast{int(per_cpu)}")
    stream = tmp_path / "records.ndjson"

    async def window() -> kstat.Report:
        async with kstat.collect(
            interval="10s",
            # By id: the other parameter's program of this name may still be being freed.
            select=kstat.ProgramFilter(ids=(target.program.id,)),
            per_cpu=per_cpu,
            snapshot_method="iterator",
            sinks=[NdjsonSink(stream, layout="records")],
        ) as session:
            target.send(900)  # blocking: the details stage gets no turn before the window ends
        return session.report

    report = trio.run(window)
    assert report.program(target.program.id).run_count == 900
    records = [json.loads(text) for text in stream.read_text().splitlines()]
    programs = [record for record in records if record["kind"] == "program"]
    assert [(record["sequence"], record["run_count"]) for record in programs] == [(1, 900)]
    assert [record["sequence"] for record in records if record["kind"] == "program_seen"] == [0]


@pytest.mark.kernel
@settings(max_examples=4, deadline=None)
@given(bursts=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=5))
def test_real_traffic_sums_match_the_report(
    bursts: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With the kernel as oracle: any schedule of bursts, the intervals add up to the report."""
    stream = tmp_path_factory.mktemp("nd") / "s.ndjson"
    with SocketFilter(f"{KT}prop") as loaded, LoopbackTarget(loaded) as target:

        async def body(probe: WindowProbe) -> None:
            for burst in bursts:
                await send(target, burst)
                await trio.sleep(0.06)

        result = trio.run(partial(run_window, body, interval_ns=25_000_000, sinks=[NdjsonSink(stream)]))
        reported = result.report.program(loaded.id).run_count
        summed = interval_sums(read_lines(stream)).get((loaded.id, loaded.stats().load_time_ns), 0)
    assert reported == summed == sum(bursts)


@pytest.mark.kernel
def test_ndjson_through_jq(load_filter: LoadFilter) -> None:
    load_filter(f"{KT}jq")
    shown = subprocess.run(
        f"{KSTAT} -duration 1s --interval 250ms --sink ndjson:- | jq -c '[.kind, .num_programs]'",
        shell=True,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    kinds = [json.loads(line)[0] for line in shown.stdout.splitlines() if '"program"' not in line]
    assert kinds == ["interval"] * 4 + ["summary"]


@pytest.mark.kernel
def test_a_closed_pipe_ends_kstat_cleanly() -> None:
    shown = subprocess.run(
        f"{KSTAT} -duration 10m --interval 100ms --sink ndjson:- | head -n 3; "
        'echo "status ${PIPESTATUS[0]}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = shown.stdout.splitlines()
    assert len(lines) == 4
    assert lines[-1] == "status 0"
    assert "Traceback" not in shown.stderr
    assert "BrokenPipe" not in shown.stderr


@pytest.mark.kernel
def test_ndjson_statsd_and_report_agree(load_filter: LoadFilter, tmp_path: Path) -> None:
    """The issue's acceptance run: three outputs of one window, all consistent."""
    target = load_filter(f"{KT}all")
    with running_statsd(tmp_path) as statsd:
        stream, output = tmp_path / "s.ndjson", tmp_path / "r.json"
        kstat = KstatProcess(
            [
                "-duration", "5s", "--interval", "1s", "--name", f"^{KT}all$",
                "--sink", f"ndjson:{stream}",
                "--sink", f"statsd://127.0.0.1:{statsd.udp_port}",
                "-output", str(output),
            ]
        )  # fmt: skip
        kstat.wait_for_window()
        target.send(1_500)
        trio.run(trio.sleep, 1.2)
        target.send(500)
        returncode, _ = kstat.finish()
        assert returncode == 0, kstat.stderr_lines
        report = json.loads(output.read_text())
        lines = read_lines(stream)
        identity = (target.program.id, target.program.stats().load_time_ns)
        assert report["program_stats"][f"{KT}all"]["run_count"] == 2_000
        assert interval_sums(lines)[identity] == 2_000
        assert lines[-1]["kind"] == "summary"
        assert lines[-1]["program_stats"] == report["program_stats"]
        assert statsd.counters()[f"kstat.{KT}all.run_count"] == 2_000
        assert statsd.counters()["kstat.total.run_count"] == report["total_run_count"]


@pytest.mark.parametrize("count", [0, 1, 3, 300])
def test_the_summary_line_encoded_in_batches_is_the_reports_dict(count: int) -> None:
    """The last line is encoded a batch of programs at a time (never the report's objects made
    whole): the same bytes as the dict, whatever the number of programs."""
    programs = [program(pid, 0, 0, name=f"p{pid % 7}") for pid in range(1, count + 1)]
    later = [program(pid, pid * 10, pid, name=f"p{pid % 7}") for pid in range(1, count + 1)]
    report = report_of(snapshot(0, 0.0, *programs), snapshot(1, 1.0, *later))
    line = b"".join(summary_line(report))
    assert line == json_line(summary_to_dict(report))
    assert json.loads(line)["num_programs"] == count


def test_idle_programs_are_counted_not_listed_in_interval_lines() -> None:
    first = snapshot(0, 0.0, program(1, 500, 5, name="busy"), program(2, 70, 7, name="idle"))
    second = snapshot(1, 1.0, program(1, 900, 9, name="busy"), program(2, 70, 7, name="idle"))
    line = interval_to_dict(interval(first, second))
    assert list(line["program_stats"]) == ["busy"]
    assert (line["idle_programs"], line["num_programs"]) == (1, 2)
    # Loading or unloading is news even without runs.
    third = snapshot(2, 2.0, program(1, 900, 9, name="busy"))
    assert list(interval_to_dict(interval(second, third))["program_stats"]) == ["idle"]


def test_an_interval_line_is_the_report_shape_of_its_program_line() -> None:
    """Interval lines are written from the delta's sightings and figures, not from its lines:
    each must be what the report's encoder writes of the line (owners, a footprint told once,
    per-CPU growth, a program gone, a kernel that lacks a counter), plus `counters`."""
    owner = ProgramOwner(4242, "loader", Workload(pod="web-0", namespace="shop", container_name="app"))
    footprint = ProgramFootprint(
        jited_size_bytes=96,
        xlated_size_bytes=128,
        verified_instructions=7,
        memlock_bytes=4096,
        maps=(MapFootprint(3, 8192),),
    )
    with_owner = ProgramDetails(owners=(owner,), attachments=("xdp:eth0",))

    def busy(program_id: int, runs: int, **fields: Any) -> ProgramStats:
        return program(program_id, runs * 250, runs, details=with_owner, **fields)

    per_cpu = evolve(
        busy(4, 10),
        counters=Counters(2_500, 10, 0, per_cpu_run_time_ns=(1_000, 1_500), per_cpu_run_count=(4, 6)),
    )
    first = snapshot(
        0,
        0.0,
        busy(1, 10),
        busy(2, 10),
        busy(3, 5, recursion_misses=None),
        evolve(per_cpu, counters=Counters(0, 0, 0, per_cpu_run_time_ns=(0, 0), per_cpu_run_count=(0, 0))),
    )
    second = snapshot(
        1,
        1.0,
        busy(1, 30),
        busy(3, 9, recursion_misses=None),
        per_cpu,
        # Loaded inside the window: its footprint is told in its first line.
        busy(9, 2, load_time_ns=10_500_000_000, footprint=footprint, name="late"),
    )
    event = interval(first, second)
    lines = interval_to_dict(event)["program_stats"]
    assert set(lines) == {"prog1", "prog2", "prog3", "prog4", "late"}
    for key, written in lines.items():
        expected = program_to_dict(event.delta.lines[key])
        change = event.delta.active[key]
        if not change.unloaded:
            counters = change.last.counters
            expected["counters"] = {
                "run_time_ns": counters.run_time_ns,
                "run_cnt": counters.run_count,
                "recursion_misses": counters.recursion_misses,
            }
        assert json_line(written) == json_line(expected), key
    assert lines["late"]["map_ids"] == [3] and lines["late"]["jited_size_bytes"] == 96
    assert lines["prog2"]["unloaded_during_window"] is True and "counters" not in lines["prog2"]
    assert lines["prog4"]["per_cpu"] == {
        "0": {"run_count": 4, "runtime_ns": 1_000},
        "1": {"run_count": 6, "runtime_ns": 1_500},
    }
    assert lines["prog1"]["owners"] == [
        {"pid": 4242, "command": "loader", "container_name": "app", "pod": "web-0", "namespace": "shop"}
    ]
