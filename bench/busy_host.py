"""The interval on a busy, shared host (issue 26): what kstat achieves at 100 ms beside 10,000
programs held by the bench's process, programs loading and unloading, busy programs and a tenant
burning CPU, with NDJSON and StatsD on.

    python -m bench.busy_host            # 4 windows of 20 s (BUSY_HOST_QUICK=1: 1 of 5 s)

Four windows, the fewest with which a rank test between two sides of as many can say p < 0.05
(kstat.analysis.significance); BUSY_HOST_WINDOWS=N for more.

Each window's report says what its counter clock achieved (`achieved_interval`: the p50, p99
and largest gap between two reads, and how many slipped); the target is a p99 gap of at most
1.2 times the interval asked for. The churned programs' runs are checked too: every run of a
program that lived two intervals is in the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import kstat
from bench.programs import ProgramSet, raise_open_file_limit
from kstat.testing.loader import LoopbackTarget, SocketFilter

INTERVAL_MS: Final = 100
TARGET_P99_RATIO: Final = 1.2
HELD: Final = 10_000
BUSY: Final = 200
BUSY_RATE_PER_S: Final = 20_000
CHURN_EVERY_S: Final = 0.05
CHURN_LIFETIME_S: Final = 2.5 * INTERVAL_MS / 1000


@contextmanager
def _busy_programs() -> Iterator[threading.Event]:
    """BUSY attached programs, BUSY_RATE_PER_S packets a second among them, from a thread."""
    targets = [LoopbackTarget(SocketFilter(f"kbusy_{index}")) for index in range(BUSY)]
    stop = threading.Event()

    def send() -> None:
        sent, started = 0, time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * BUSY_RATE_PER_S) - sent
            for index in range(sent, sent + due):
                targets[index % BUSY].send(1)
            sent += max(due, 0)
            time.sleep(0.001)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join()
        for target in targets:
            target.close()
            target.program.close()


class _Churn:
    """A program loaded every CHURN_EVERY_S, run a known number of times, unloaded after
    CHURN_LIFETIME_S: the runs each one had, by id."""

    def __init__(self) -> None:
        self.runs: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._churn, daemon=True)

    def _churn(self) -> None:
        living: list[tuple[float, LoopbackTarget]] = []
        index = 0
        while not self._stop.is_set():
            target = LoopbackTarget(SocketFilter("kchurn"))
            target.send(10 + index % 20)
            self.runs[target.program.id] = 10 + index % 20
            living.append((time.monotonic() + CHURN_LIFETIME_S, target))
            index += 1
            while living and living[0][0] <= time.monotonic():
                _, gone = living.pop(0)
                gone.close()
                gone.program.close()
            self._stop.wait(CHURN_EVERY_S)
        for _, target in living:
            target.close()
            target.program.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _burner() -> subprocess.Popen[bytes]:
    """Another tenant's process keeping a CPU busy in user space."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _window(duration_s: float, scratch: Path, index: int) -> dict[str, object]:
    report_path = scratch / f"busy-{index}.json"
    log_path = scratch / f"busy-{index}.log"
    churn = _Churn()
    churn.start()
    started = time.monotonic()
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kstat",
                "-duration",
                f"{duration_s:g}s",
                "--interval",
                f"{INTERVAL_MS}ms",
                "-output",
                str(report_path),
                "--sink",
                f"ndjson:{scratch / f'busy-{index}.ndjson'}",
                "--sink",
                "statsd://127.0.0.1:9",
            ],
            check=True,
            stderr=log_path.open("wb"),
        )
    finally:
        churn.stop()
    causes: dict[str, int] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if "cause" in entry:
                causes[entry["cause"]] = causes.get(entry["cause"], 0) + 1
    report = kstat.load_report(report_path)
    achieved = report.achieved_interval
    assert achieved is not None
    counted = {line.id: line.run_count for line in report.programs if line.kernel_name == "kchurn"}
    # A churned program read twice has every run counted; one gone before a second read (the
    # reads slipping past its 250 ms) may be short of its runs.
    missed = sum(1 for pid, runs in churn.runs.items() if pid in counted and counted[pid] != runs)
    return {
        "p50_ms": achieved.p50_ns / 1e6,
        "p99_ms": achieved.p99_ns / 1e6,
        "max_ms": achieved.max_ns / 1e6,
        "slipped": achieved.slipped,
        "churned": len(churn.runs),
        "churned_reported": len(counted),
        "churned_wrong": missed,
        "programs": report.num_programs,
        "slip_causes": causes,
        "seconds": time.monotonic() - started,
    }


def measure(windows: int, duration_s: float) -> list[dict[str, object]]:
    raise_open_file_limit(HELD + BUSY + 2_048)
    held = ProgramSet()
    burner = _burner()
    found: list[dict[str, object]] = []
    try:
        held.resize(HELD)
        with tempfile.TemporaryDirectory(prefix="kstat-busy-") as scratch, _busy_programs():
            for index in range(windows):
                found.append(_window(duration_s, Path(scratch), index))
    finally:
        burner.kill()
        burner.wait()
        held.close()
    return found


def describe(found: list[dict[str, object]]) -> list[str]:
    def spread(key: str) -> str:
        values = sorted(float(str(window[key])) for window in found)
        return f"{statistics.median(values):.1f} [{values[0]:.1f}-{values[-1]:.1f}]"

    p99_ratio = statistics.median(float(str(window["p99_ms"])) for window in found) / INTERVAL_MS
    lines = [
        f"  busy host: {HELD:,} idle programs held by the bench, {BUSY} busy ({BUSY_RATE_PER_S:,} runs/s), "
        f"a program loaded every {CHURN_EVERY_S * 1000:.0f} ms living {CHURN_LIFETIME_S * 1000:.0f} ms, "
        f"a tenant burning a CPU; NDJSON and StatsD on; {len(found)} windows, median [lowest-highest]",
        f"    gap between reads at {INTERVAL_MS} ms: p50 {spread('p50_ms')} ms, p99 {spread('p99_ms')} ms, "
        f"largest {spread('max_ms')} ms; slipped {spread('slipped')}",
        f"    p99 / interval: {p99_ratio:.2f} (target <= {TARGET_P99_RATIO}): "
        + ("met" if p99_ratio <= TARGET_P99_RATIO else "NOT met"),
        "    churned programs: "
        + ", ".join(
            f"{window['churned_reported']} of {window['churned']} in the report, "
            f"{window['churned_wrong']} short of their runs (those read once only: gone before a "
            "second read, where reads slipped)"
            for window in found
        ),
    ]
    causes: dict[str, int] = {}
    for window in found:
        for cause, count in dict(window["slip_causes"]).items():  # type: ignore[call-overload]
            causes[cause] = causes.get(cause, 0) + count
    lines += [
        f"    slips logged: {count} x {cause}"
        for cause, count in sorted(causes.items(), key=lambda item: -item[1])
    ]
    return lines


def main() -> None:
    quick = bool(os.environ.get("BUSY_HOST_QUICK"))
    found = measure(1 if quick else int(os.environ.get("BUSY_HOST_WINDOWS", "4")), 5.0 if quick else 20.0)
    print("\n".join(describe(found)))
    print(json.dumps(found))


if __name__ == "__main__":
    main()
