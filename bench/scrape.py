"""The Prometheus endpoint at fleet scale: 10,000 programs, every one of them running each
interval, scraped over HTTP as Prometheus scrapes (OpenMetrics, gzip). What a scrape costs is
the send of bytes rendered once per interval; what a render costs is paid on the sink's own
thread. The window is scripted (the counters are the kernel's shape, not its values): the
endpoint is what is measured, not the sampler."""

from __future__ import annotations

import statistics
import time
import urllib.request
from typing import Final

import trio
from attrs import evolve, frozen

from kstat.core.counters import Counters
from kstat.core.delta import changes_between, interval_delta
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramStats, Snapshot
from kstat.formats.prometheus import series_per_program
from kstat.sinks.prometheus import PrometheusSettings, PrometheusSink

PROGRAMS: Final = 10_000
SCRAPES: Final = 50
# Prometheus's own Accept header.
ACCEPT: Final = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


@frozen
class ScrapeResult:
    programs: int
    series: int
    series_per_program_budget: int
    body_bytes: int
    gzip_bytes: int
    scrape_p50_ms: float
    scrape_max_ms: float
    render_s: float


def _snapshot(sequence: int, programs: tuple[ProgramStats, ...]) -> Snapshot:
    now = time.time_ns()
    return Snapshot(
        sequence, time.monotonic_ns(), time.clock_gettime_ns(time.CLOCK_BOOTTIME), now, 1, programs
    )


def _scrape(port: int) -> tuple[float, int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept": ACCEPT, "Accept-Encoding": "gzip"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        encoding = response.headers.get("Content-Encoding", "")
    return time.perf_counter() - started, len(body), encoding.encode()


def measure_scrape(programs: int = PROGRAMS, scrapes: int = SCRAPES) -> ScrapeResult:
    first = tuple(
        ProgramStats.described(
            id=number,
            type="SchedCls",
            name=f"agent_flow_parse_{number}",
            tag=f"{number:016x}",
            load_time_ns=1_000,
            counters=Counters(0, 0, 0),
        )
        for number in range(1, programs + 1)
    )
    sink = PrometheusSink(PrometheusSettings("127.0.0.1", 0))
    found: dict[str, float] = {}

    async def run() -> None:
        send, receive = trio.open_memory_channel[WindowStarted | IntervalEnded](4)
        async with trio.open_nursery() as nursery, send:
            nursery.start_soon(sink.consume, receive)
            previous = _snapshot(0, first)
            await send.send(
                WindowStarted(previous, 1_000_000_000, None, 2, "", "bpf_enable_stats", None, "bench")
            )
            for sequence in range(1, 4):  # every program ran in every interval
                current = _snapshot(
                    sequence,
                    tuple(
                        evolve(entry, counters=Counters(sequence * 1_000 + entry.id, sequence * 10, 0))
                        for entry in first
                    ),
                )
                delta = interval_delta(previous, current, changes_between(previous, current), online_cpus=2)
                await send.send(IntervalEnded(previous, current, delta))
                previous = current
                while sink.exposition.health.snapshots < sequence + 1:
                    await trio.sleep(0.01)
                # The first scrape asks for gzip; every render after it compresses.
                await trio.to_thread.run_sync(_scrape, sink.port)
            times = []
            sizes = []
            for _ in range(scrapes):
                elapsed, size, _ = await trio.to_thread.run_sync(_scrape, sink.port)
                times.append(elapsed)
                sizes.append(size)
            served = sink._served
            assert served is not None
            rendered = next(iter(served.plain.values()))
            found.update(
                p50=statistics.median(times) * 1000,
                max=max(times) * 1000,
                series=rendered.series,
                body=len(rendered.body),
                gzip=statistics.median(sizes),
                render=sink._render_s,
            )
            nursery.cancel_scope.cancel()

    trio.run(run)
    return ScrapeResult(
        programs=programs,
        series=int(found["series"]),
        series_per_program_budget=series_per_program(),
        body_bytes=int(found["body"]),
        gzip_bytes=int(found["gzip"]),
        scrape_p50_ms=found["p50"],
        scrape_max_ms=found["max"],
        render_s=found["render"],
    )


if __name__ == "__main__":
    print(measure_scrape())
