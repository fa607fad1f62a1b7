"""The endpoint under abuse cannot starve the collector: a real `kstat serve` under `ulimit -n
1024` (systemd's default), 1,100 idle connections held open and 500 scrapes at once, while
exactly N packets pass a socket filter. The interval stays within 10 % of the one asked (the
NDJSON stream's own timestamps say), every scrape gets a whole answer or a quick 503, and the
report is written with every run counted."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Final

import pytest
from attrs import define, field

from tests.holders import program_holder
from tests.kstat_process import KstatProcess
from tests.names import KT
from tests.statsd_daemon import free_port
from tests.test_prometheus import _unix
from tests.windows import LoadFilter

pytestmark = pytest.mark.kernel

INTERVAL_S: Final = 0.25
IDLE_CONNECTIONS: Final = 1_100
CONCURRENT_SCRAPES: Final = 500
HELD_PROGRAMS: Final = 300
# A child that lowers its own open-file limit, then becomes `python -m kstat ...`.
UNDER_ULIMIT: Final = [
    sys.executable,
    "-c",
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


REQUEST: Final = b"GET /metrics HTTP/1.1\r\nHost: kstat\r\nAccept: */*\r\n\r\n"


@define
class Scrape:
    """One scrape in flight, as Prometheus does it: connect, ask at once, read to the end."""

    connection: socket.socket
    started: float
    asked: bool = False
    data: bytearray = field(factory=bytearray)
    problem: str = ""
    duration_s: float = 0.0

    @property
    def status(self) -> int:
        """The answer's status; 0 when there is no whole answer."""
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        if self.problem or not head:
            return 0
        lengths = [
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ]
        status = int(head.split(b" ", 2)[1])
        if lengths != [len(body)] or (status == 200 and b"kstat_program_runs_total" not in body):
            return 0
        return status


def scrapes(port: int, count: int, timeout_s: float = 20) -> list[Scrape]:
    """`count` scrapes at once, from one loop over non-blocking sockets: each asks the moment
    it is connected (trio's tasks, or threads, would each wait their turn on a busy machine and
    look idle to kstat)."""
    selector = selectors.DefaultSelector()
    pending = []
    for _ in range(count):
        connection = socket.socket()
        connection.setblocking(False)
        connection.connect_ex(("127.0.0.1", port))
        scrape = Scrape(connection, time.monotonic())
        selector.register(connection, selectors.EVENT_WRITE, scrape)
        pending.append(scrape)
    deadline = time.monotonic() + timeout_s
    left = count
    while left and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            scrape = key.data
            try:
                if not scrape.asked:
                    error = scrape.connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, os.strerror(error))
                    scrape.connection.send(REQUEST)
                    scrape.asked = True
                    selector.modify(scrape.connection, selectors.EVENT_READ, scrape)
                    continue
                chunk = scrape.connection.recv(65536)
                if chunk:
                    scrape.data += chunk
                    continue
            except OSError as error:
                scrape.problem = f"{error.strerror} after {len(scrape.data)} bytes"
            if not scrape.data and not scrape.problem:
                scrape.problem = "empty reply"
            scrape.duration_s = time.monotonic() - scrape.started
            selector.unregister(scrape.connection)
            scrape.connection.close()
            left -= 1
    for scrape in pending:
        if scrape.duration_s == 0:
            scrape.problem = "no answer in time"
            scrape.connection.close()
    selector.close()
    return pending


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """Connections that never ask anything (a slowloris, or a port scanner)."""
    held = []
    for _ in range(count):
        connection = socket.socket()
        connection.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            connection.connect(("127.0.0.1", port))
        held.append(connection)
    return held


def test_scrapes_and_idle_connections_leave_the_interval_and_the_report_alone(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The test's own clients need more than kstat may have.
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65_536)), hard))
    port = free_port(socket.SOCK_STREAM)
    stream, report_path = tmp_path / "kstat.ndjson", tmp_path / "report.json"
    target = load_filter(f"{KT}abused")
    # 300 programs more, held by another process as an agent's are: a body of realistic size.
    holder = program_holder(*(f"{KT}ab_{number}:" for number in range(HELD_PROGRAMS)))
    kstat = KstatProcess(
        [
            "serve",
            # The exposition is ours alone, whatever other tenants of the host load meanwhile.
            "--name",
            f"^{KT}ab",
            "--interval",
            f"{int(INTERVAL_S * 1000)}ms",
            "--sink",
            f"prometheus://127.0.0.1:{port}",
            "--sink",
            f"ndjson:{stream}",
            "-o",
            str(report_path),
        ],
        prefix=UNDER_ULIMIT,
    )
    kstat.wait_for_window()
    held: list[socket.socket] = []
    answered: list[Scrape] = []
    sent = 0
    try:
        deadline = time.monotonic() + 30
        while scrapes(port, 1)[0].status != 200:  # the baseline's render is served
            assert time.monotonic() < deadline, kstat.stderr_lines
            time.sleep(0.05)
        quiet_from = time.time()
        time.sleep(8 * INTERVAL_S)
        quiet_until = loaded_at = time.time()
        held = idle_connections(port, IDLE_CONNECTIONS)
        for _ in range(3):
            target.send(100)
            sent += 100
            answered += scrapes(port, CONCURRENT_SCRAPES)
            time.sleep(1)  # Prometheus scrapes every few seconds: meanwhile idlers can be closed
        assert kstat.process.poll() is None, kstat.stderr_lines
        # Still held by the abuser, the endpoint still answers (once an idler can be closed).
        deadline = time.monotonic() + 10
        while scrapes(port, 1)[0].status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        unloaded_at = time.time()
    finally:
        for connection in held:
            connection.close()
        holder.close()
    kstat.signal(signal.SIGTERM)
    returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert not [line for line in kstat.stderr_lines if "Too many open files" in line]
    # Every scrape got a whole exposition or a quick refusal: no empty or cut replies.
    statuses = [scrape.status for scrape in answered]
    assert len(statuses) == 3 * CONCURRENT_SCRAPES
    assert set(statuses) <= {200, 503}, [scrape.problem for scrape in answered if scrape.problem][:10]
    assert statuses.count(200) >= 64
    # The interval kept, by kstat's own clock: the intervals that ended under the abuse against
    # those before it (the same kstat, the same host). On a host whose other tenants load and
    # unload thousands of programs meanwhile, passes slip for reasons of their own (the busy-host
    # issue's): then the quiet phase says so and the comparison means nothing.
    lines = [json.loads(line) for line in stream.read_text().splitlines()]
    intervals = [
        (_unix(line["end_time"]), line["elapsed_ns"] / 1e9) for line in lines if line["kind"] == "interval"
    ]
    quiet = [elapsed for end, elapsed in intervals if quiet_from < end - elapsed and end <= quiet_until]
    abused = [elapsed for end, elapsed in intervals if loaded_at < end - elapsed and end <= unloaded_at]

    def kept(elapsed: list[float]) -> bool:
        """On time on average, and 9 intervals in 10 within 10 % of the one asked."""
        within = [abs(one - INTERVAL_S) <= INTERVAL_S * 0.1 for one in elapsed]
        on_average = abs(sum(elapsed) / len(elapsed) - INTERVAL_S) <= INTERVAL_S * 0.1
        return on_average and sum(within) >= 0.9 * len(within)

    if len(quiet) < 4 or not kept(quiet):
        pytest.skip(f"the host alone stretches the interval (before any abuse: {quiet}); rerun alone")
    assert len(abused) >= (unloaded_at - loaded_at) / INTERVAL_S * 0.8, abused
    assert kept(abused), (quiet, abused)
    report = json.loads(report_path.read_text())
    assert report["program_stats"][f"{KT}abused"]["run_count"] == sent
