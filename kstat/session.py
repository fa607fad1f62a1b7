"""The scheduler: stats on, the sampler feeding a nursery of sinks, stats off, the report out.

Fan-out policy (why a slow sink cannot hurt the measurement):
- every sink has its own bounded channel; during the window the sampler only ever offers a
  snapshot (`send_nowait`) and counts it as skipped for a sink whose channel is full;
- a skipped snapshot is not simply lost: the next one offered carries forward the last reading
  of every program that vanished since (`carry_forward`), so a lagging sink's deltas still add
  up to the report;
- the first snapshot always fits (the channel is empty then) and the last one is sent with a
  waiting `send` after the stats are off again, so every sink sees both ends of the window;
- the summary is not a channel sink: it sees every snapshot, so the report never misses one;
- a sink that raises is logged and cut off; the others and the report carry on, and the
  result lists it as failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import structlog
import trio
from attrs import define, field, frozen

from kstat.attribution import Attributor
from kstat.durations import format_duration_ns
from kstat.errors import KstatError, OutputClosed, sole_exception
from kstat.filters import ProgramFilter
from kstat.host import kernel_release, online_cpu_count
from kstat.model import Snapshot, carry_forward
from kstat.report import Report
from kstat.runtime_stats import StatsMethod, runtime_stats_enabled
from kstat.sampler import SnapshotTaker, sample_window
from kstat.sink import Sink
from kstat.summary import Summary

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_NS = 1_000_000_000
# Enough for a sink to fall a few intervals behind before it starts skipping.
SINK_CHANNEL_CAPACITY = 8
# How long a sink may take to make room for the window's last snapshot.
LAST_SNAPSHOT_TIMEOUT_S = 30.0


@frozen
class CollectionSettings:
    """How long to collect (None: until stopped) and how often to snapshot."""

    duration_ns: int | None
    interval_ns: int = DEFAULT_INTERVAL_NS
    program_filter: ProgramFilter = field(factory=ProgramFilter)


@define
class StopRequest:
    """Ends a window early, remembering why (a signal name, "command exited", ...)."""

    event: trio.Event = field(factory=trio.Event)
    reason: str | None = None

    def request(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


@frozen
class SinkFailure:
    sink: str
    error: str


@frozen
class CollectionResult:
    report: Report
    failed_sinks: tuple[SinkFailure, ...]
    # Per sink: intermediate snapshots it was too slow to take.
    skipped_snapshots: dict[str, int]


@define
class _SinkLane:
    """One sink with its own channel and its own fate."""

    sink: Sink
    send_channel: trio.MemorySendChannel[Snapshot]
    receive_channel: trio.MemoryReceiveChannel[Snapshot]
    skipped: int = 0
    # The skipped snapshots' content still owed to the sink, merged into one.
    pending: Snapshot | None = None
    failure: SinkFailure | None = None
    closed: bool = False
    # Around the sink's consume: cancelled if the sink is stuck at the end of the window.
    consuming: trio.CancelScope = field(factory=trio.CancelScope)

    @property
    def name(self) -> str:
        return repr(self.sink)

    def offer(self, snapshot: Snapshot) -> None:
        if self.failure is not None or self.closed:
            return
        candidate = self._with_pending(snapshot)
        try:
            self.send_channel.send_nowait(candidate)
            self.pending = None
        except trio.WouldBlock:
            self.pending = candidate
            self.skipped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the sink stopped reading; nothing more to give it

    async def send_last(self, snapshot: Snapshot) -> None:
        async with self.send_channel:
            if self.failure is None and not self.closed:
                # A sink that stopped reading early simply gets nothing more.
                with (
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                    trio.move_on_after(LAST_SNAPSHOT_TIMEOUT_S) as waiting,
                ):
                    await self.send_channel.send(self._with_pending(snapshot))
                if waiting.cancelled_caught:
                    # Its channel stays full: a sink that never reads again must not hold
                    # kstat (and the other sinks' reports) forever.
                    self.failure = SinkFailure(
                        self.name,
                        f"did not take the window's last snapshot within {LAST_SNAPSHOT_TIMEOUT_S:g} s",
                    )
                    log.error("sink stuck; cancelling it", sink=self.name, waited_s=LAST_SNAPSHOT_TIMEOUT_S)
                    self.consuming.cancel()

    def _with_pending(self, snapshot: Snapshot) -> Snapshot:
        return snapshot if self.pending is None else carry_forward(self.pending, snapshot)

    async def consume(self, stop: StopRequest) -> None:
        with self.consuming:
            await self._consume(stop)

    async def _consume(self, stop: StopRequest) -> None:
        async with self.receive_channel:
            try:
                await self.sink.consume(self.receive_channel)
            except OutputClosed:
                # `kstat --sink ndjson:- | head -n 3`: the reader has seen enough; the window
                # ends as if by Ctrl-C, and the other sinks still get the whole report.
                self.closed = True
                log.info("output closed by its reader; ending the window", sink=self.name)
                stop.request(f"{self.name} closed")
            except Exception as error:  # noqa: BLE001 - isolate any sink's failure, and say so
                self._fail("consume", error)

    async def finish(self, report: Report) -> None:
        if self.failure is not None or self.closed:
            return
        try:
            await self.sink.finish(report)
        except OutputClosed:
            log.info("output closed by its reader before the report", sink=self.name)
        except Exception as error:  # noqa: BLE001 - isolate any sink's failure, and say so
            self._fail("finish", error)

    def _fail(self, stage: str, error: Exception) -> None:
        message = str(error) if isinstance(error, KstatError) else f"{type(error).__name__}: {error}"
        self.failure = SinkFailure(self.name, message)
        log.error("sink failed", sink=self.name, stage=stage, error=message)


@define
class Collection:
    """One window: stats on, snapshots fanned out to sinks, stats off, the report delivered.

    `run()` does the whole window; while it runs, `report_so_far()` gives the delta from the
    first snapshot to a fresh one, for callers that check while traffic flows.
    """

    settings: CollectionSettings
    sinks: Sequence[Sink] = ()
    stop: StopRequest = field(factory=StopRequest)
    on_snapshot: Callable[[Snapshot, Summary], None] | None = None
    window_started: trio.Event = field(factory=trio.Event)
    summary: Summary = field(factory=Summary)
    _stats_method: StatsMethod | None = None

    async def run(self) -> CollectionResult:
        """Collect the window and deliver it; returns the report and any sink failures.

        Raises PermissionDenied or UnsupportedKernel before the window starts when the kernel
        will not cooperate. The stats are on only while snapshots are being taken.
        """
        settings = self.settings
        lanes = []
        for sink in self.sinks:
            send_channel, receive_channel = trio.open_memory_channel[Snapshot](SINK_CHANNEL_CAPACITY)
            lanes.append(_SinkLane(sink, send_channel, receive_channel))

        async def observe(snapshot: Snapshot, final: bool) -> None:
            self.summary.observe(snapshot)
            log.debug(
                "snapshot",
                sequence=snapshot.sequence,
                programs=len(snapshot.programs),
                pass_duration=format_duration_ns(snapshot.pass_duration_ns),
            )
            if snapshot.sequence == 0:
                self._log_window_start(snapshot)
                self.window_started.set()
            if self.on_snapshot is not None:
                self.on_snapshot(snapshot, self.summary)
            if not final:
                # The last one is held back: it is sent, waiting, once the stats are off.
                for lane in lanes:
                    lane.offer(snapshot)

        try:
            async with trio.open_nursery() as nursery:
                for lane in lanes:
                    nursery.start_soon(lane.consume, self.stop)
                try:
                    with runtime_stats_enabled() as self._stats_method:
                        await sample_window(
                            SnapshotTaker(settings.program_filter),
                            duration_ns=settings.duration_ns,
                            interval_ns=settings.interval_ns,
                            stop=self.stop.event,
                            on_snapshot=observe,
                        )
                except BaseException:
                    for lane in lanes:
                        lane.send_channel.close()
                    raise
                last = self.summary.last_snapshot
                assert last is not None  # sample_window always takes the first and last snapshot
                for lane in lanes:
                    await lane.send_last(last)
        except BaseExceptionGroup as group:
            # One typed error (PermissionDenied, ...) is what callers want, not a group of one.
            sole = sole_exception(group)
            if sole is None:
                raise
            raise sole from None

        report = self._report(self.summary, stopped_by=self.stop.reason)
        log.info(
            "window ended",
            elapsed=format_duration_ns(report.collection_duration_ns),
            snapshots=report.snapshots,
            programs=report.num_programs,
            stopped_by=self.stop.reason,
        )
        for lane in lanes:
            if lane.skipped:
                log.warning("slow sink skipped snapshots", sink=lane.name, skipped=lane.skipped)
            await lane.finish(report)
        return CollectionResult(
            report=report,
            failed_sinks=tuple(lane.failure for lane in lanes if lane.failure is not None),
            skipped_snapshots={lane.name: lane.skipped for lane in lanes},
        )

    async def report_so_far(self) -> Report:
        """The report from the window's first snapshot to one taken now (the window goes on)."""
        await self.window_started.wait()
        last = self.summary.last_snapshot
        assert last is not None
        # A taker of its own (a reader is one thread's), numbered after what the window has
        # seen, and told the owners and attachments the window already knows (no /proc scan
        # for them); the window's own snapshots and sinks are untouched.
        taker = SnapshotTaker(
            self.settings.program_filter,
            next_sequence=last.sequence + 1,
            attributor=Attributor(known=dict(last.details)),
        )
        fresh = await taker.take()
        view = self.summary.copy()
        view.observe(fresh)
        return self._report(view, stopped_by=None)

    def _report(self, summary: Summary, *, stopped_by: str | None) -> Report:
        assert self._stats_method is not None
        return summary.report(
            requested_duration_ns=self.settings.duration_ns,
            interval_ns=self.settings.interval_ns,
            online_cpus=online_cpu_count(),
            kernel_release=kernel_release(),
            stats_enabled_by=self._stats_method.value,
            stopped_by=stopped_by,
            program_filter=self.settings.program_filter.describe(),
        )

    def _log_window_start(self, snapshot: Snapshot) -> None:
        duration_ns = self.settings.duration_ns
        log.info(
            "window started",
            programs=len(snapshot.programs),
            duration=format_duration_ns(duration_ns) if duration_ns is not None else "until stopped",
            interval=format_duration_ns(self.settings.interval_ns),
        )
        if not snapshot.programs:
            log.warning("no eBPF programs are loaded; the report will have none unless some load")


async def collect(
    settings: CollectionSettings,
    sinks: Sequence[Sink],
    *,
    stop: StopRequest | None = None,
    on_snapshot: Callable[[Snapshot, Summary], None] | None = None,
) -> CollectionResult:
    """Collect one window and deliver it to `sinks` (see `Collection.run`)."""
    collection = Collection(settings, sinks, stop if stop is not None else StopRequest(), on_snapshot)
    return await collection.run()
