"""The library API: collect around a block of code, from trio or from plain synchronous code.

async with kstat.collect(interval="100ms") as session:
    await drive_traffic()
    so_far = await session.report_so_far()
report = session.report
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio
from attrs import define

from kstat._version import __version__
from kstat.core.events import Event, IntervalEnded, Sink
from kstat.core.filters import ProgramFilter
from kstat.core.model import ProgramStats
from kstat.core.report import Report
from kstat.durations import parse_duration_ns
from kstat.engine.sampler import SNAPSHOT_METHODS
from kstat.engine.scheduler import (
    DEFAULT_INTERVAL_NS,
    Collection,
    CollectionResult,
    CollectionSettings,
    SinkFailure,
)
from kstat.engine.summary import Summary
from kstat.errors import UsageError, sole_exception

# Where they lived before reading reports got a module of its own: still importable from here.
from kstat.report_files import load_report as load_report  # noqa: PLC0414
from kstat.report_files import save_report as save_report  # noqa: PLC0414
from kstat.sources.syscalls import ProgramReader

Duration = str | float | int
"""A duration: Go notation ("100ms", "1m30s") or seconds as a number."""


def to_ns(duration: Duration) -> int:
    """Nanoseconds from "100ms" or from seconds (0.1)."""
    if isinstance(duration, str):
        return parse_duration_ns(duration)
    if isinstance(duration, bool) or duration < 0:
        raise UsageError(f"duration {duration!r} must be a non-negative number of seconds")
    return round(duration * 1_000_000_000)


def _settings(
    interval: Duration | None,
    duration: Duration | None,
    select: ProgramFilter | None,
    host_root: str | Path = "/",
    snapshot_method: str = "auto",
    *,
    per_cpu: bool = False,
) -> CollectionSettings:
    interval_ns = DEFAULT_INTERVAL_NS if interval is None else to_ns(interval)
    if interval_ns <= 0:
        raise UsageError("interval must be longer than zero")
    duration_ns = None if duration is None else to_ns(duration)
    return CollectionSettings(
        duration_ns=duration_ns,
        interval_ns=interval_ns,
        program_filter=select or ProgramFilter(),
        host_root=Path(host_root),
        snapshot_method=_snapshot_method(snapshot_method),
        per_cpu=per_cpu,
    )


def _snapshot_method(method: str) -> str:
    if method not in SNAPSHOT_METHODS:
        raise UsageError(f"snapshot_method must be one of {', '.join(SNAPSHOT_METHODS)}, not {method!r}")
    return method


@define
class Session:
    """A collection window in progress; after the `with` block, `report` holds its result."""

    _collection: Collection
    _result: CollectionResult | None = None

    @property
    def report(self) -> Report:
        """The window's report; available once the `with` block has ended."""
        if self._result is None:
            raise RuntimeError("the window is still open: use report_so_far() inside the block")
        return self._result.report

    @property
    def failed_sinks(self) -> tuple[SinkFailure, ...]:
        return () if self._result is None else self._result.failed_sinks

    async def report_so_far(self) -> Report:
        """The delta from the window's start to now, while the window goes on."""
        return await self._collection.report_so_far()

    def stop(self) -> None:
        """End the window now instead of at the end of the block (or of `duration`)."""
        self._collection.stop.request("stopped by caller")


@asynccontextmanager
async def collect(
    *,
    interval: Duration | None = None,
    duration: Duration | None = None,
    sinks: Sequence[Sink] = (),
    select: ProgramFilter | None = None,
    host_root: str | Path = "/",
    snapshot_method: str = "auto",
    per_cpu: bool = False,
) -> AsyncIterator[Session]:
    """Collect kernel stats while the block runs (or for `duration`, if that ends first).

    The window has started when the block begins: the stats are on and the baseline reading is
    taken (what the CLI's `--ready-file` says), so everything the block does is inside it; it
    ends when the block exits, and `session.report` then holds the delta report. `select` limits
    it to some programs (`kstat.ProgramFilter(name="^my_agent_", pids=(pid,))`, or by where
    their owners run: `kstat.ProgramFilter(pods=("agent-x7k2p",))`); `host_root` is where the
    host's filesystem is, whose kubelet log tree names pods; `snapshot_method` is "auto" (kstat's
    BPF iterator where the kernel allows it), "iterator" or "syscalls"; `per_cpu` keeps each
    program's run time and runs per CPU as well (the iterator only: each line's `per_cpu`, the
    `busiest_cpu_percent` metric). Raises
    PermissionDenied or UnsupportedKernel on entry when the kernel will not cooperate.
    """
    settings = _settings(interval, duration, select, host_root, snapshot_method, per_cpu=per_cpu)
    async with _collect(settings, sinks) as session:
        yield session


@asynccontextmanager
async def _collect(
    settings: CollectionSettings, sinks: Sequence[Sink], *, keep_unloaded: int | None = None
) -> AsyncIterator[Session]:
    summary = Summary(generator=f"kstat {__version__}", retain_unloaded=keep_unloaded)
    collection = Collection(settings, sinks, summary=summary)
    session = Session(collection)

    async def run_window() -> None:
        session._result = await collection.run()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_window)
            # If the window cannot start, run_window raises, this wait is cancelled, and the
            # nursery re-raises the error below. The block begins once the baseline is read, not
            # once its details are looked up: nothing the block does can fall before the window.
            await collection.baseline_taken.wait()
            try:
                yield session
            finally:
                collection.stop.request("block ended")
    except BaseExceptionGroup as group:
        # The caller's own exception, or kstat's typed error, rather than a group of one.
        sole = sole_exception(group)
        if sole is None:
            raise
        raise sole from None


class _Forwarding:
    """A sink handing each interval to the caller of `stream`. While the caller is busy its
    lane lags like any sink's, so the caller gets merged intervals, never a gap."""

    def __init__(self, send_channel: trio.MemorySendChannel[IntervalEnded]) -> None:
        self._send_channel = send_channel

    def __repr__(self) -> str:
        return "stream"

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        async with self._send_channel:
            async for event in events:
                if isinstance(event, IntervalEnded):
                    try:
                        await self._send_channel.send(event)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return  # the caller left the block: it wants no more


@define
class IntervalStream:
    """The intervals of a continuous collection, as they end: `async for interval in stream`."""

    session: Session
    _intervals: trio.MemoryReceiveChannel[IntervalEnded]

    def __aiter__(self) -> AsyncIterator[IntervalEnded]:
        return self._intervals.__aiter__()

    async def report_so_far(self) -> Report:
        """The delta from the start to now, while collection goes on."""
        return await self.session.report_so_far()

    def stop(self) -> None:
        """End the collection: the iteration ends after the last interval."""
        self.session.stop()


@asynccontextmanager
async def stream(
    *,
    interval: Duration | None = None,
    select: ProgramFilter | None = None,
    host_root: str | Path = "/",
    sinks: Sequence[Sink] = (),
    keep_unloaded: int = 1000,
    snapshot_method: str = "auto",
    per_cpu: bool = False,
) -> AsyncIterator[IntervalStream]:
    """Collect until the block ends (or `stop()`), yielding each interval as it ends: what
    `kstat serve` does, for embedding.

        async with kstat.stream(interval="1s") as intervals:
            async for interval in intervals:
                for key, line in interval.delta.lines.items():  # the programs that ran
                    ...

    Each item is an `IntervalEnded` event: the interval's delta, computed once, with the report's
    fields for every program that did something. Memory stays flat over a long run (at most
    `keep_unloaded` unloaded programs are remembered for the final report, `session.report`).
    """
    send_channel, receive_channel = trio.open_memory_channel[IntervalEnded](1)
    forwarding = _Forwarding(send_channel)
    async with (
        _collect(
            _settings(interval, None, select, host_root, snapshot_method, per_cpu=per_cpu),
            [*sinks, forwarding],
            keep_unloaded=keep_unloaded,
        ) as session,
        receive_channel,
    ):
        yield IntervalStream(session, receive_channel)


class SyncSession:
    """A window collected by trio on a background thread, for synchronous callers."""

    def __init__(self, settings: CollectionSettings, sinks: Sequence[Sink]) -> None:
        self._settings = settings
        self._sinks = sinks
        self._session: Session | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._release: trio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="kstat-collector", daemon=True)

    @property
    def report(self) -> Report:
        """The window's report; available once the `with` block has ended."""
        if self._session is None:
            raise RuntimeError("the window never started")
        return self._session.report

    @property
    def failed_sinks(self) -> tuple[SinkFailure, ...]:
        return () if self._session is None else self._session.failed_sinks

    def report_so_far(self) -> Report:
        """The delta from the window's start to now (blocks for one snapshot pass)."""
        if self._session is None or self._token is None:
            raise RuntimeError("the window is not open")
        return trio.from_thread.run(self._session.report_so_far, trio_token=self._token)

    def open(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._release is not None and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._release.set, trio_token=self._token)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as error:  # noqa: BLE001 - handed over to the caller's thread as it is
            self._error = error
        finally:
            self._started.set()

    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._release = trio.Event()
        async with _collect(self._settings, self._sinks) as session:
            self._session = session
            self._started.set()
            await self._release.wait()


@contextmanager
def collect_sync(
    *,
    interval: Duration | None = None,
    duration: Duration | None = None,
    sinks: Sequence[Sink] = (),
    select: ProgramFilter | None = None,
    host_root: str | Path = "/",
    snapshot_method: str = "auto",
    per_cpu: bool = False,
) -> Iterator[SyncSession]:
    """`collect` for synchronous code: trio runs the window on a background thread.

    For plain pytest tests and scripts. The block runs in the caller's thread; the window has
    started when it begins and has ended, with `session.report` filled in, when it exits.
    """
    session = SyncSession(
        _settings(interval, duration, select, host_root, snapshot_method, per_cpu=per_cpu), sinks
    )
    session.open()
    try:
        yield session
    finally:
        session.close()


def read_programs() -> list[ProgramStats]:
    """Every loaded program's cumulative counters, read once, synchronously.

    The counters only move while some process holds the kernel's stats on (kstat does during
    a window); outside one they stand still.
    """
    return ProgramReader().read_all()
