"""`kstat demo`: load a few programs of kstat's own, drive them with loopback traffic while
collecting, and show that the kernel's run counts equal the packets sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import trio
from attrs import frozen

from kstat._logging import get_logger
from kstat.core.events import Sink
from kstat.core.filters import ProgramFilter
from kstat.core.model import Snapshot
from kstat.engine.scheduler import CollectionResult, CollectionSettings, StopRequest, collect
from kstat.testing.loader import LoopbackTarget, SocketFilter

log = get_logger(__name__)


@frozen
class DemoProgram:
    # The kernel keeps 15 characters; the full name travels in the program's BTF.
    kernel_name: str
    name: str
    # ALU instructions per run: the programs differ in weight, so their average runtimes do.
    work_instructions: int


DEMO_PROGRAMS = (
    DemoProgram("kstat_lite", "kstat_demo_light_socket_filter", 0),
    DemoProgram("kstat_mid", "kstat_demo_medium_socket_filter", 256),
    DemoProgram("kstat_heavy", "kstat_demo_heavy_socket_filter", 1024),
)


@contextmanager
def demo_targets(work_scale: float = 1.0) -> Iterator[list[LoopbackTarget]]:
    """The demo programs, loaded and attached to loopback sockets; unloaded on exit.

    `work_scale` multiplies each program's work: 2.0 is the same workload, heavier per run.
    """
    with ExitStack() as stack:
        targets = []
        for program in DEMO_PROGRAMS:
            loaded = stack.enter_context(
                SocketFilter(
                    program.kernel_name,
                    round(program.work_instructions * work_scale),
                    function_name=program.name,
                )
            )
            targets.append(stack.enter_context(LoopbackTarget(loaded)))
        log.info("demo programs loaded", programs=[program.name for program in DEMO_PROGRAMS])
        yield targets


def run_workload(
    duration_s: float, rate_per_program: int, work_scale: float, linger_s: float, stop: threading.Event
) -> dict[str, int]:
    """`kstat demo --workload-only`: load, drive traffic, linger, unload; no collection of its own.

    What an agent and its load test look like to `kstat run` (or to a kstat running beside). A
    collector sees a program's counters only while it is loaded: the linger lets its snapshots
    catch the final ones before the programs go.
    """
    with demo_targets(work_scale) as targets:
        sent = drive_traffic(targets, rate_per_program, duration_s, stop)
        stop.wait(linger_s)
    packets = {program.name: count for program, count in zip(DEMO_PROGRAMS, sent, strict=True)}
    for name, count in packets.items():
        log.info("demo traffic", program=name, packets_sent=count)
    return packets


# Datagrams per pacing step, per program: large enough to keep Python's overhead per packet low.
_BURST = 50


def drive_traffic(
    targets: Sequence[LoopbackTarget], rate_per_program: int, duration_s: float, stop: threading.Event
) -> list[int]:
    """Send `rate_per_program` datagrams a second to each target until `duration_s` or `stop`.

    Runs on a worker thread (it blocks in send and sleep); returns the datagrams sent to each.
    """
    sent = [0] * len(targets)
    started = time.monotonic()
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if elapsed >= duration_s:
            break
        due = int(elapsed * rate_per_program) + _BURST
        for index, target in enumerate(targets):
            burst = min(_BURST, due - sent[index])
            if burst > 0:
                target.send(burst)
                sent[index] += burst
        if min(sent) >= due:
            stop.wait(_BURST / rate_per_program)
    return sent


async def run_demo(
    *,
    duration_ns: int,
    interval_ns: int,
    rate_per_program: int,
    work_scale: float,
    sinks: Sequence[Sink],
    user_stop: StopRequest,
    snapshot_method: str = "auto",
    only_its_own: bool = True,
    program_keys: str | None = None,
    per_cpu: bool = False,
) -> tuple[CollectionResult, dict[str, int]]:
    """Collect a window that exactly brackets the demo traffic; returns the result and packets
    sent. The report has the demo's own programs alone unless `only_its_own` is False."""
    with demo_targets(work_scale) as targets:
        own = ProgramFilter(ids=tuple(target.program.id for target in targets))
        window_started = trio.Event()
        collection_stop = StopRequest()
        results: list[CollectionResult] = []

        def note_window_start(snapshot: Snapshot) -> None:
            window_started.set()

        async def collect_window() -> None:
            settings = CollectionSettings(
                duration_ns=None,
                interval_ns=interval_ns,
                snapshot_method=snapshot_method,
                per_cpu=per_cpu,
                program_filter=own if only_its_own else ProgramFilter(),
                program_keys=program_keys,
            )
            results.append(
                await collect(settings, sinks, stop=collection_stop, on_snapshot=note_window_start)
            )

        traffic_stop = threading.Event()

        async def relay_user_stop() -> None:
            await user_stop.event.wait()
            traffic_stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_user_stop)
            async with trio.open_nursery() as window:
                window.start_soon(collect_window)
                await window_started.wait()
                # The traffic starts after the first snapshot and ends before the last one, so
                # the report's run counts must equal the packets sent.
                sent = await trio.to_thread.run_sync(
                    drive_traffic, targets, rate_per_program, duration_ns / 1e9, traffic_stop
                )
                collection_stop.request(user_stop.reason or "demo traffic done")
            nursery.cancel_scope.cancel()
    result = results[0]
    packets = {program.name: count for program, count in zip(DEMO_PROGRAMS, sent, strict=True)}
    for name, count in packets.items():
        counted = sum(line.run_count for line in result.report.program_stats.values() if line.name == name)
        log.info("demo traffic", program=name, packets_sent=count, runs_counted=counted)
    return result, packets
