"""Running a collection window around a test's own actions (shared by the kernel tests)."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

import trio

from kstat.abi.bpf import program_fd
from kstat.core.events import Sink
from kstat.core.filters import ProgramFilter
from kstat.core.model import Snapshot
from kstat.engine.scheduler import (
    DEFAULT_END_TIMEOUT_NS,
    CollectionResult,
    CollectionSettings,
    StopRequest,
    collect,
)
from kstat.testing.loader import LoopbackTarget
from tests.names import KT

Body = Callable[["WindowProbe"], Awaitable[None]]
# The `load_filter` fixture: load a socket filter and attach it to a loopback UDP socket.
LoadFilter = Callable[..., LoopbackTarget]


class WindowProbe:
    """Lets a test act inside a running window and wait for the sampler's progress."""

    def __init__(self) -> None:
        self.snapshots_seen = 0
        self._progress = trio.Event()

    def saw(self, snapshot: Snapshot) -> None:
        self.snapshots_seen = snapshot.sequence + 1
        self._progress.set()
        self._progress = trio.Event()

    async def wait_for_snapshots(self, count: int) -> None:
        while self.snapshots_seen < count:
            await self._progress.wait()


async def run_window(
    body: Body,
    *,
    interval_ns: int = 100_000_000,
    sinks: list[Sink] | None = None,
    end_timeout_ns: int = DEFAULT_END_TIMEOUT_NS,
    program_filter: ProgramFilter | None = None,
) -> CollectionResult:
    """Collect until `body` returns, with `body` running inside the window, of the programs
    `program_filter` selects: by default this suite's own (named with its prefix), so that other
    tenants' programs on the host, another suite's among them, neither slow the window nor show
    in its report."""
    probe = WindowProbe()
    stop = StopRequest()
    results: list[CollectionResult] = []

    async def collect_into_results() -> None:
        settings = CollectionSettings(
            duration_ns=None,
            interval_ns=interval_ns,
            end_timeout_ns=end_timeout_ns,
            program_filter=program_filter or ProgramFilter(name=f"^{KT}"),
        )
        results.append(await collect(settings, sinks or [], stop=stop, on_snapshot=probe.saw))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_into_results)
        await probe.wait_for_snapshots(1)
        await body(probe)
        stop.request("test done")
    return results[0]


async def send(target: LoopbackTarget, count: int) -> None:
    """Send packets off the event loop, as a test's traffic."""
    await trio.to_thread.run_sync(target.send, count)


def wait_until_freed(program_id: int) -> None:
    """Until the kernel has freed a closed program: a little later, after an RCU grace period
    (seconds, on a busy host)."""
    deadline = time.monotonic() + 30
    while (fd := program_fd(program_id)) is not None:
        os.close(fd)
        assert time.monotonic() < deadline, f"program {program_id} still loaded"
        time.sleep(0.001)  # polling the kernel; no result depends on how long it takes
