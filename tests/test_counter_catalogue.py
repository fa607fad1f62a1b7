"""The counter catalogue: a counter is one entry plus the reader that fills it.

A counter added to kstat/core/counters.py alone (and filled by a reader) reaches the report
(and reads back), NDJSON lines and records, StatsD, the Prometheus exposition, OTLP, `kstat top`
and `kstat compare`; a counter the kernel lacks is None there, never 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kstat.abi.structs import PROG_INFO_SIZE, RECURSION_MISSES_END, ProgInfo
from kstat.core.counters import COUNTERS
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import Snapshot
from kstat.formats import ndjson
from kstat.formats.prometheus import Format, exposition_of
from kstat.formats.statsd import IntervalLines, metric_lines
from kstat.sources.syscalls import counters_read_by
from tests import builders

ROOT = Path(__file__).resolve().parent.parent


def test_a_fourth_counter_is_one_entry_and_reaches_every_output() -> None:
    # In a fresh interpreter: tests/fourth_counter.py replaces the counter catalogue before
    # anything of kstat imports it.
    done = subprocess.run(
        [sys.executable, "-m", "tests.fourth_counter"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    # Runs 10 -> 13 -> 20 over the window: the doubled counter 20 -> 26 -> 40.
    assert found["report"] == [20, 20]
    assert found["read back"] == [20, 20]
    # The first interval grew it by 6; the kernel's absolute reading at its end was 26.
    assert found["ndjson"] == [6, 26, 6]
    assert found["records"] is True
    assert found["statsd"] == [
        "kstat.prog1.run_count_doubled:20|c",
        "kstat.total.run_count_doubled:20|c",
        "kstat.prog1.run_count_doubled:6|c",
        "kstat.total.run_count_doubled:6|c",
    ]
    assert found["prometheus"] == [
        "# HELP kstat_program_run_count_doubled_total Twice the runs",
        "# TYPE kstat_program_run_count_doubled_total counter",
        'kstat_program_run_count_doubled_total{id="1",name="prog1",type="SocketFilter"} 20',
    ]
    assert found["otlp"] == [["kstat.program.run_count_doubled", "{run}", "sum"]]
    assert found["top"] == ["runs_doubled", "RUNS x2", 20]
    header, row = found["compare"]
    assert header.endswith("| runs x2 |")
    assert row.endswith("| 20 → 20 (+0.0%) |")
    assert found["syscalls"] is None


def test_the_syscall_reader_reads_each_counter_by_its_kernel_name() -> None:
    info = ProgInfo()
    info.run_time_ns, info.run_cnt, info.recursion_misses = 900, 7, 3
    by_name = dict(zip((spec.name for spec in COUNTERS), counters_read_by(PROG_INFO_SIZE)(info), strict=True))
    # The per-CPU splits are not bpf_prog_info's (it has sums only): None, not 0.
    assert {name: value for name, value in by_name.items() if value is not None} == {
        "run_time_ns": 900,
        "run_count": 7,
        "recursion_misses": 3,
    }
    assert by_name["per_cpu_run_time_ns"] is None
    # A kernel before 5.12 writes bpf_prog_info only up to run_cnt: no recursion misses.
    older = dict(
        zip((spec.name for spec in COUNTERS), counters_read_by(RECURSION_MISSES_END - 8)(info), strict=True)
    )
    assert older["recursion_misses"] is None
    assert (older["run_time_ns"], older["run_count"]) == (900, 7)


def test_a_counter_the_kernel_lacks_is_left_out_never_zero() -> None:
    # Before Linux 5.12 the kernel counts no recursion misses: the readers say None. Program 60
    # stays idle; its turn to be announced to StatsD is the first interval (60 modulo 60).
    def read(sequence: int, at_s: float, run_count: int) -> Snapshot:
        return builders.snapshot(
            sequence,
            at_s,
            builders.program(1, 50 * run_count, run_count, recursion_misses=None),
            builders.program(60, 0, 0, recursion_misses=None),
        )

    snapshots = [read(0, 0.0, 4), read(1, 1.0, 9)]
    events = builders.events_of(*snapshots)
    started, ended = events
    assert isinstance(started, WindowStarted)
    assert isinstance(ended, IntervalEnded)
    report = builders.report_of(*snapshots)
    assert report.unavailable_counters == ("recursion_misses",)
    assert "recursion_misses" not in report.program_stats["prog1"].metrics

    line = ndjson.interval_to_dict(ended)
    assert line["program_stats"]["prog1"]["counters"]["recursion_misses"] is None

    class Naming:
        prefix = "kstat"
        dogstatsd_tags = False

    interval = IntervalLines(Naming())
    interval.start(started)
    sent = interval.lines_for(ended.delta)
    assert {
        "kstat.prog1.run_count:5|c",
        "kstat.prog60.run_count:0|c",
        "kstat.prog60.events_per_sec:0|g",
    } <= set(sent)
    assert not [text for text in sent + metric_lines(report, Naming()) if "recursion_misses" in text]

    body = exposition_of([started, ended]).render(Format.TEXT).body.decode()
    assert 'kstat_program_runs_total{id="1",name="prog1",type="SocketFilter"} 5' in body.splitlines()
    assert not [text for text in body.splitlines() if text.startswith("kstat_program_recursion_misses")]
