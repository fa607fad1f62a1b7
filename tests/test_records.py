"""NDJSON's record layout: flat lines with fixed keys that add up to the report, from the spec
on the command line to jq."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kstat.analysis.plot import read_stream
from kstat.core.catalogue import METRICS, Kind
from kstat.core.events import IntervalEnded, WindowStarted
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
from kstat.errors import UsageError
from kstat.formats.ndjson import json_line
from kstat.formats.records import RECORD_KEYS, interval_records, start_records, summary_records
from kstat.sinks.ndjson import from_spec
from tests.builders import events_of, program, report_of, snapshot
from tests.kstat_process import wait_until_ready
from tests.names import KT
from tests.windows import LoadFilter

# The page that documents the records.
RECORDS_PAGE = Path(__file__).parent.parent / "docs" / "sinks.md"
KSTAT = [sys.executable, "-m", "kstat"]

# The jq examples of docs/sinks.md, run here against real records (kept word for word there).
JQ_COSTLIEST_PER_INTERVAL = (
    'jq -sc \'[.[] | select(.kind == "program")] | group_by(.sequence)[]'
    " | max_by(.estimated_cpu_percent) | {timestamp, name, estimated_cpu_percent}'"
)
JQ_CPU_PER_OWNER = (
    'jq -sc \'[.[] | select(.kind == "summary")] | group_by(.owner_pid)[]'
    " | {owner_pid: .[0].owner_pid, owner_command: .[0].owner_command,"
    " estimated_cpu_percent: (map(.estimated_cpu_percent) | add)}'"
)

# Anything a loader may call a program, a container or a unit: dots, spaces, quotes, unicode.
names = st.text(min_size=0, max_size=20)
workloads = st.builds(
    Workload,
    container_id=st.none() | st.text(alphabet="0123456789abcdef", min_size=12, max_size=64),
    pod=st.none() | names,
    namespace=st.none() | names,
    unit=st.none() | names,
)
owners = st.lists(
    st.builds(ProgramOwner, pid=st.integers(1, 4_194_304), command=names, workload=workloads), max_size=3
)
footprints = st.none() | st.builds(
    ProgramFootprint,
    jited_size_bytes=st.integers(0, 1 << 20),
    xlated_size_bytes=st.integers(0, 1 << 20),
    verified_instructions=st.none() | st.integers(0, 1_000_000),
    memlock_bytes=st.none() | st.integers(0, 1 << 30),
    maps=st.lists(
        st.builds(
            MapFootprint, id=st.integers(1, 1 << 31), memlock_bytes=st.none() | st.integers(0, 1 << 30)
        ),
        max_size=4,
    ).map(tuple),
)
# A program: its name, owners, attachments, footprint; when it appears and goes; runs per pass.
lives = st.lists(
    st.tuples(
        names,
        owners,
        st.lists(names, max_size=3),
        footprints,
        st.integers(0, 5),
        st.integers(0, 5),
        st.lists(st.integers(0, 1_000), min_size=6, max_size=6),
    ),
    min_size=0,
    max_size=8,
)


def _window(chosen: list[Any], ids: list[int]) -> list[Snapshot]:
    snapshots = []
    for sequence in range(6):
        present: list[ProgramStats] = []
        for program_id, (name, holders, attachments, footprint, appear, span, runs) in zip(
            ids, chosen, strict=True
        ):
            if appear <= sequence <= appear + span:
                total = sum(runs[: sequence + 1])
                load_time_ns = 1_000 if appear == 0 else 10_000_000_000 + appear * 10**9 - 1
                present.append(
                    program(
                        program_id,
                        total * 7,
                        total,
                        name=name,
                        load_time_ns=load_time_ns,
                        footprint=footprint,
                        details=ProgramDetails(tuple(holders), tuple(attachments)),
                    )
                )
        snapshots.append(snapshot(sequence, float(sequence), *present))
    return snapshots


@settings(max_examples=150, deadline=None)
@given(
    chosen=lives,
    ids=st.lists(st.integers(1, 2**32 - 1), min_size=8, max_size=8, unique=True),
    skip=st.sets(st.integers(1, 5)),
)
def test_no_key_comes_from_the_data_and_the_records_add_up(
    chosen: list[Any], ids: list[int], skip: set[int]
) -> None:
    """Random programs (any names, colliding or empty, any ids, owners, attachments, footprints)
    loading and unloading, a lagging sink merging intervals: every record has exactly
    RECORD_KEYS in order, and each program's `program` lines add up to its `summary` line."""
    snapshots = _window(chosen, ids[: len(chosen)])
    events = events_of(*snapshots)
    started = events[0]
    assert isinstance(started, WindowStarted)
    intervals = [event for event in events if isinstance(event, IntervalEnded)]
    delivered, pending = [], []
    for event in intervals:
        pending.append(event)
        if event.current.sequence not in skip or event is intervals[-1]:
            delivered.append(merged(pending))
            pending = []
    records = list(start_records(started))
    for event in delivered:
        records += interval_records(event, "node-a")
    report = report_of(*snapshots)
    records += summary_records(report, "node-a")

    for record in records:
        assert tuple(record) == RECORD_KEYS
        line = json_line(record)
        assert line.count(b"\n") == 1 and json.loads(line) == record

    summed: Counter[tuple[int, int]] = Counter()
    for record in records:
        if record["kind"] == "program":
            summed[record["id"], record["load_time_ns"]] += record["run_count"]
    summary = {
        (record["id"], record["load_time_ns"]): record["run_count"]
        for record in records
        if record["kind"] == "summary"
    }
    assert {identity: count for identity, count in summed.items() if count} == {
        identity: count for identity, count in summary.items() if count
    }
    kinds = Counter(record["kind"] for record in records)
    assert kinds["total"] == len(delivered) and kinds["summary_total"] == 1
    assert sum(r["run_count"] for r in records if r["kind"] == "total") == report.total_run_count
    # Every program is said once with its footprint, when first met.
    seen = [(r["id"], r["load_time_ns"]) for r in records if r["kind"] == "program_seen"]
    assert sorted(seen) == sorted(set(seen)) == sorted(summary)


def test_a_record_says_who_owns_the_program_and_where_it_is_attached() -> None:
    owner = ProgramOwner(
        4242, "flowd", Workload(container_id="ab12", container_name="flow", pod="flow-x", namespace="net")
    )
    details = ProgramDetails((owner, ProgramOwner(1, "init")), ("xdp:eth0", "tc:lo"))
    first = snapshot(0, 0.0, program(7, 100, 1, name="handle.ingress", details=details))
    second = snapshot(1, 0.5, program(7, 2_100, 21, name="handle.ingress", details=details))
    interval = next(event for event in events_of(first, second) if isinstance(event, IntervalEnded))
    program_line, total = interval_records(interval, "node-a")
    assert program_line | {"timestamp": None, "timestamp_ns": None} == dict.fromkeys(RECORD_KEYS) | {
        "kind": "program",
        "host_name": "node-a",
        "sequence": 1,
        "elapsed_ns": 500_000_000,
        "key": "handle.ingress",
        "id": 7,
        "name": "handle.ingress",
        "kernel_name": "handle.ingress",
        "type": "SocketFilter",
        "tag": "00aa",
        "load_time_ns": 1_000,
        "owner_pid": 4242,
        "owner_command": "flowd",
        "owner_count": 2,
        "owner_container_id": "ab12",
        "owner_container_name": "flow",
        "owner_pod": "flow-x",
        "owner_namespace": "net",
        "attachment": "xdp:eth0,tc:lo",
        "attachment_count": 2,
        "loaded": False,
        "unloaded": False,
        "skipped_snapshots": 0,
        "counter_run_time_ns": 2_100,
        "counter_run_count": 21,
        "counter_recursion_misses": 0,
        "runtime_ns": 2_000,
        "run_count": 20,
        "recursion_misses": 0,
        "avg_runtime_ns": 100,
        "mean_runtime_ns": 100.0,
        "events_per_sec": 40.0,
        "estimated_cpu_percent": pytest.approx(0.0004),
        "estimated_cpu_percent_of_all_cpus": pytest.approx(0.0002),
        "cpu_percent_per_1000_events_per_sec": pytest.approx(0.01),
    }
    assert program_line["timestamp"] == "2023-11-14T22:13:20.5Z"
    assert program_line["timestamp_ns"] == 1_700_000_000_500_000_000
    assert (total["kind"], total["program_count"], total["idle_programs"], total["run_count"]) == (
        "total",
        1,
        0,
        20,
    )


def test_every_metric_of_the_catalogue_is_a_key() -> None:
    assert {metric.name for metric in METRICS} <= set(RECORD_KEYS)
    assert len(set(RECORD_KEYS)) == len(RECORD_KEYS)
    assert all(key.isascii() and key == key.lower() and "." not in key for key in RECORD_KEYS)


@pytest.mark.parametrize(
    ("spec", "path", "layout"),
    [
        ("-", None, "nested"),
        ("-?layout=records", None, "records"),
        ("{dir}/k?.ndjson", "{dir}/k?.ndjson", "nested"),  # a `?` of the path's own
        ("{dir}/k.ndjson?layout=nested", "{dir}/k.ndjson", "nested"),
    ],
)
def test_the_layout_follows_the_path(spec: str, path: str | None, layout: str, tmp_path: Path) -> None:
    made = from_spec(spec.format(dir=tmp_path))
    wanted = None if path is None else path.format(dir=tmp_path)
    assert (None if made.path is None else str(made.path), made.layout) == (wanted, layout)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("-?layout=flat", "unknown layout 'flat': expected nested or records"),
        ("-?format=records", "unknown option 'format': ndjson takes ?layout=nested|records"),
        ("?layout=records", "ndjson needs a path"),
    ],
)
def test_a_bad_layout_is_a_usage_error(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("?", r"\?").replace("|", r"\|")):
        from_spec(spec)


def test_a_bad_layout_on_the_command_line_is_one_line_and_exit_2() -> None:
    completed = subprocess.run(
        [*KSTAT, "--sink", "ndjson:-?layout=flat"], capture_output=True, text=True, timeout=30, check=False
    )
    assert completed.returncode == 2
    *_, error = completed.stderr.splitlines()  # after the usage line, as argparse does
    assert error.startswith("kstat: error: malformed sink") and "unknown layout 'flat'" in error
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sink", "ndjson:-?layout=records", "--sink", "stdout"], "would both write standard output"),
        (
            ["-o", "/tmp/k.json", "--sink", "ndjson:/tmp/k.json?layout=records"],
            "would both write /tmp/k.json",
        ),
    ],
)
def test_options_do_not_hide_two_sinks_writing_one_place(arguments: list[str], message: str) -> None:
    completed = subprocess.run([*KSTAT, *arguments], capture_output=True, text=True, timeout=30, check=False)
    assert completed.returncode == 2
    assert message in completed.stderr.splitlines()[-1]


def test_the_records_page_lists_every_key_that_is_not_a_metric_in_order() -> None:
    text = RECORDS_PAGE.read_text()
    table = text.split("<!-- record keys -->")[1].split("<!-- end of record keys -->")[0]
    listed = [row.split("`")[1] for row in table.splitlines() if row.startswith("| `")]
    metrics = {metric.name for metric in METRICS}
    assert listed == [key for key in RECORD_KEYS if key not in metrics]
    assert list(RECORD_KEYS[len(listed) :]) == [metric.name for metric in METRICS]


def test_the_records_page_shows_the_jq_examples_tested_here() -> None:
    text = RECORDS_PAGE.read_text()
    assert JQ_COSTLIEST_PER_INTERVAL in text
    assert JQ_CPU_PER_OWNER in text
    assert "ndjson:/var/log/kstat.ndjson?layout=records" in text


@pytest.mark.kernel
def test_records_from_the_command_line_add_up_to_the_report_and_answer_jq(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    """The kernel as oracle: exactly N runs, in the records and in the report, and the jq
    examples of docs/sinks.md answer from them."""
    heavy = load_filter(f"{KT}rec_a", 200)
    light = load_filter(f"{KT}rec_b")
    stream, nested, report_path = tmp_path / "k.ndjson", tmp_path / "nested.ndjson", tmp_path / "r.json"
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            *KSTAT,
            "--ready-file",
            str(ready),
            "-duration",
            "2s",
            "--interval",
            "200ms",
            "--name",
            f"^{KT}rec_",
            "-o",
            str(report_path),
            "--sink",
            f"ndjson:{stream}?layout=records",
            "--sink",
            f"ndjson:{nested}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until_ready(ready, process)
    heavy.send(300)
    light.send(120)
    time.sleep(0.4)  # a later interval gets these (the sums must hold across intervals)
    heavy.send(100)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    records = [json.loads(line) for line in stream.read_text().splitlines()]
    assert all(tuple(record) == RECORD_KEYS for record in records)
    report = json.loads(report_path.read_text())
    for target, sent in ((heavy, 400), (light, 120)):
        name = target.program.name
        runs = sum(r["run_count"] for r in records if r["kind"] == "program" and r["name"] == name)
        summary = [r for r in records if r["kind"] == "summary" and r["name"] == name]
        assert runs == sent == report["program_stats"][name]["run_count"]
        assert [r["run_count"] for r in summary] == [sent]
    # `kstat plot` reads the same intervals from either layout.
    over_time = [metric.name for metric in METRICS if metric.kind is not Kind.PROPERTY]

    def plotted(path: Path) -> list[tuple[int, dict[str, list[Any]]]]:
        return [
            (
                entry.elapsed_ns,
                {key: [line.value(name) for name in over_time] for key, line in entry.programs.items()},
            )
            for entry in read_stream(path)
        ]

    assert plotted(stream) == plotted(nested) != []
    total = [r for r in records if r["kind"] == "summary_total"]
    assert [r["run_count"] for r in total] == [520] == [report["total_run_count"]]

    def jq(program: str) -> list[dict[str, Any]]:
        shown = subprocess.run(
            f"{program} {stream}", shell=True, capture_output=True, text=True, timeout=30, check=True
        )
        return [json.loads(line) for line in shown.stdout.splitlines()]

    costliest = jq(JQ_COSTLIEST_PER_INTERVAL)
    busy = {r["sequence"] for r in records if r["kind"] == "program"}
    assert len(costliest) == len(busy)
    assert all(set(row) == {"timestamp", "name", "estimated_cpu_percent"} for row in costliest)
    per_owner = jq(JQ_CPU_PER_OWNER)
    assert [row["owner_pid"] for row in per_owner] == [os.getpid()]  # the test holds both
    assert per_owner[0]["estimated_cpu_percent"] == pytest.approx(
        sum(line["estimated_cpu_percent"] for line in report["program_stats"].values())
    )
