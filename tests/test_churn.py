"""Exact under churn: programs loaded, run and unloaded inside the window, beside 10,000 other
programs held by another process, with the details stage busy; every run of every program that
lived at least two intervals is in the report."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import kstat
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.names import KT

pytestmark = pytest.mark.kernel

INTERVAL_S = 0.1
OTHERS = 10_000


@pytest.fixture
def ten_thousand_others() -> Iterator[int]:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.idle_holder", str(OTHERS), f"{KT}other"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready = json.loads(holder.stdout.readline())
        assert ready["count"] == OTHERS
        yield int(ready["pid"])
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=120)


def test_every_run_of_every_churned_program_is_counted(ten_thousand_others: int) -> None:
    sent: dict[int, int] = {}
    failures: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        """A program loading every 200 ms: it runs a known number of times at once, lives two
        and a half intervals, and is unloaded."""
        try:
            index = 0
            while not stop.is_set():
                program = SocketFilter(f"{KT}chn")
                with LoopbackTarget(program) as target:
                    packets = 10 + index
                    target.send(packets)
                    sent[program.id] = packets
                    time.sleep(2.5 * INTERVAL_S)  # its lifetime: part of the workload
                program.close()
                index += 1
                stop.wait(max(0.0, 0.2 - 2.5 * INTERVAL_S))
        except BaseException as error:  # noqa: BLE001 - re-raised by the test below
            failures.append(error)

    churner = threading.Thread(target=churn)
    select = kstat.ProgramFilter(name=f"^{KT}chn$")
    with kstat.collect_sync(interval=f"{INTERVAL_S}s", select=select) as session:
        churner.start()
        time.sleep(4)  # how long the churn goes on: the workload, not a wait for kstat
        stop.set()
        churner.join()
        # The last program's end is in the window: one more read after it.
        time.sleep(2 * INTERVAL_S)
    assert not failures, failures
    report = session.report
    counted = {line.id: line.run_count for line in report.programs}
    assert len(sent) >= 10
    assert counted == sent
    assert report.total_run_count == sum(sent.values())
    achieved = report.achieved_interval
    assert achieved is not None and achieved.max_ns < 2 * INTERVAL_S * 1e9 * 10
