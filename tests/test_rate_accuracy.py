"""The report's rates divide by the true span of its counters (issue 28.1), at 10,000 programs.

Two probe pairs get time-stamped packets (`bench.traffic`): the early probe of a pair from
before kstat is launched until half its window, the late one from then until kstat has exited.
What kstat counted of each places its baseline and its final read between two sends, so the
span between the reads is known to about a tenth of a millisecond. One pair is loaded before
another process's 10,000 idle programs (read first in a pass), one after them (read last).

The kernel's offsets are in kstat's cache, as after any earlier run on this kernel: the
baseline at launch is then one iterator read. (The first run on a kernel reads its baseline by
syscalls, a walk of about 0.1 s at 10,000 programs: docs/kernels.md says what that costs.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

import kstat
from bench.traffic import NS_PER_S, ProbePair, TimedTraffic
from kstat.sources import offsets_cache
from kstat.sources.iterator import VMLINUX_BTF, KernelOffsets
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.kstat_process import PATIENCE, KstatProcess
from tests.names import KT

pytestmark = pytest.mark.kernel

OTHERS: Final = 10_000
RATE_PER_S: Final = 5_000
WINDOW_S: Final = 4.0
# Issue 28's bound on the rates' error: the report's window against the counters' true span.
WITHIN: Final = 0.002


def _pair(prefix: str) -> tuple[ProbePair, list[LoopbackTarget]]:
    targets = [LoopbackTarget(SocketFilter(f"{prefix}_{side}")) for side in ("e", "l")]
    return ProbePair(targets[0], targets[1], RATE_PER_S), targets


@pytest.fixture
def probes_around_ten_thousand() -> Iterator[tuple[ProbePair, ProbePair]]:
    first, first_targets = _pair("kstat_ra_a")
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.idle_holder", str(OTHERS), f"{KT}ra_idle"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    last_targets: list[LoopbackTarget] = []
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline())["count"] == OTHERS
        last, last_targets = _pair("kstat_ra_z")
        yield first, last
    finally:
        for target in (*first_targets, *last_targets):
            target.close()
            target.program.close()
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=120)


def test_rates_divide_by_the_counters_true_span(
    tmp_path: Path, probes_around_ten_thousand: tuple[ProbePair, ProbePair], monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = probes_around_ten_thousand
    monkeypatch.setenv("KSTAT_CACHE_DIR", str(tmp_path / "cache"))
    offsets_cache.offsets(KernelOffsets, KernelOffsets.of_running_kernel, VMLINUX_BTF)
    traffic = TimedTraffic(pairs, busy=(), busy_rate_per_s=0)
    output, ready = tmp_path / "report.json", tmp_path / "ready"
    traffic.start()
    try:
        launched = time.monotonic_ns()
        process = KstatProcess(
            ["-duration", f"{WINDOW_S:g}s", "-output", str(output), "--ready-file", str(ready)],
            whole_host=True,
        )
        process.wait_for_window(timeout_s=60)
        assert [entry["by"] for entry in process.log if entry.get("event") == "baseline taken"] == [
            "iterator"
        ]
        # Half the window after kstat said it was ready: well inside the window either way.
        traffic.switch_at(time.monotonic_ns() + round(WINDOW_S / 2 * NS_PER_S))
        returncode, _ = process.finish()
    finally:
        traffic.stop()
    assert returncode == 0, process.stderr_lines
    report = kstat.load_report(output)
    counted = {line.kernel_name: line.run_count for line in report.programs}
    reported_ns = report.collection_duration_ns
    failures = []
    for pair, prefix in zip(pairs, ("kstat_ra_a", "kstat_ra_z"), strict=True):
        baseline = pair.baseline(counted[f"{prefix}_e"])
        final = pair.final(counted[f"{prefix}_l"])
        span_ns = final.at_ns - baseline.at_ns
        placed_to_ns = baseline.uncertainty_ns + final.uncertainty_ns
        error = abs(span_ns - reported_ns) - placed_to_ns
        if error > WITHIN * span_ns:
            failures.append(
                f"{prefix}: the report's window is {reported_ns / 1e6:.2f} ms, the counters' true span "
                f"{span_ns / 1e6:.2f} ms (±{placed_to_ns / 1e6:.2f} ms): off by "
                f"{abs(span_ns - reported_ns) / span_ns:.3%}, more than {WITHIN:.1%}"
            )
        # And the baseline came soon after launch: the time-stamped traffic places it.
        assert baseline.at_ns - launched < 5 * NS_PER_S * PATIENCE
    assert not failures, failures
