"""The scheduler: stats on, the sampler's samples turned into events for a nursery of sinks,
stats off, the report out.

Fan-out policy (why a slow sink cannot hurt the measurement):
- every sink has its own bounded channel; during the window an interval is only ever offered
  to it (`send_nowait`), and one that does not fit is held back and merged with the next
  (`merge_deltas`), so a lagging sink gets fewer, longer intervals whose deltas still add up
  to the report, never a gap;
- the window's start always fits (the channel is empty then), and its last interval and its
  end (with the report) are sent waiting, once the stats are off;
- the summary is a sink too, but its lane never skips: it waits for the summary, which costs
  little per interval (only the programs that changed), so the report misses nothing;
- a sink that raises is logged and cut off; the others and the report carry on, and the
  result lists it as failed;
- once the window has ended, every sink's remaining work (its last events and whatever it does
  after them) shares one deadline; a sink still busy then is cancelled and listed as failed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final

import trio
from attrs import define, evolve, field, frozen

from kstat._logging import get_logger
from kstat._version import __version__
from kstat.core.changes import changes
from kstat.core.delta import IntervalDelta, changes_between, interval_delta, merge_deltas
from kstat.core.events import Event, IntervalEnded, ReopenFiles, Sink, WindowEnded, WindowStarted
from kstat.core.filters import ProgramFilter
from kstat.core.model import PassClocks, Reading, Snapshot
from kstat.core.report import KERNEL_NAME_KEYS, Report, keyed_by_kernel_name
from kstat.durations import format_duration_ns
from kstat.engine.clock import CounterClock, Slip
from kstat.engine.clock_process import ProcessClock
from kstat.engine.heap import settle_heap, window_is_over
from kstat.engine.sampler import (
    CounterRead,
    CounterTaker,
    Describer,
    PassReader,
    Sample,
    SnapshotBuilder,
    SnapshotSource,
    SnapshotTaker,
    open_reader,
)
from kstat.engine.summary import Summary
from kstat.engine.ticker import sample_window
from kstat.errors import KstatError, OutputClosed, sole_exception
from kstat.sources.attribution import Attributor
from kstat.sources.early import EarlyBaseline
from kstat.sources.host import kernel_release, online_cpu_count
from kstat.sources.iterator import IteratorReader, forget_kernel_layout
from kstat.sources.own_programs import OwnPrograms
from kstat.sources.owners import IteratorOwners, OwnerSource, ProcWalk, open_owner_source
from kstat.sources.process_tree import ProcessTree
from kstat.sources.stats_switch import StatsMethod, runtime_stats_enabled
from kstat.sources.syscalls import ProgramReader
from kstat.sources.workloads import node_name

log = get_logger(__name__)

DEFAULT_INTERVAL_NS: Final = 1_000_000_000
# Enough for a sink to fall a few intervals behind before its intervals start being merged.
SINK_CHANNEL_CAPACITY: Final = 8
# Intervals held back for a lagging sink before they are merged into one (bounds the memory a
# sink that stopped reading can hold).
MAX_PENDING_INTERVALS: Final = 16
# How long, after the window's end, the sinks together may take to deliver it.
DEFAULT_END_TIMEOUT_NS: Final = 30_000_000_000
# What is left of it after a second Ctrl-C or SIGTERM.
HURRIED_END_S: Final = 1.0

StatsSwitch = Callable[[], AbstractContextManager[StatsMethod]]


@frozen
class CollectionSettings:
    """How long to collect (None: until stopped), how often to snapshot, what to report on."""

    duration_ns: int | None
    interval_ns: int = DEFAULT_INTERVAL_NS
    program_filter: ProgramFilter = field(factory=ProgramFilter)
    # The sinks' shared deadline once the window has ended.
    end_timeout_ns: int = DEFAULT_END_TIMEOUT_NS
    # Where the host's filesystem is mounted (`/`, or `/host` for kstat in a container): the
    # kubelet's log tree there names the pods of owners.
    host_root: Path = Path("/")
    # How a pass reads the programs: "auto" (the BPF iterator where the kernel allows it),
    # "iterator" or "syscalls".
    snapshot_method: str = "auto"
    # The report's program_stats keys: kstat's (None: full names, `<name>#<id>` where shared)
    # or KERNEL_NAME_KEYS, as the Go tool keys them.
    program_keys: str | None = None
    # Each program's run time and runs per CPU as well (the BPF iterator only): a vector per
    # program, and per-CPU series where exported, so only when asked.
    per_cpu: bool = False
    # No garbage collection until the window's first readings are described, then every object
    # the process holds (kstat's modules, the programs' facts) moved out of the collector's
    # sight and the youngest generation collected less often (`kstat.engine.heap`): a full
    # collection walks all it sees while holding the interpreter's lock, which the counter
    # clock needs to read (0.3-0.6 s at 10,000 programs on a busy host, a slip each), and young
    # ones took 2-9 ms an interval. For the command line, whose process is kstat's own; a
    # library caller's is not.
    freeze_gc_at_start: bool = False
    # The counter clock in a process of its own where the window reads by kstat's iterator
    # (kstat.engine.clock_process): no read waits for this process's interpreter lock. For the
    # command line; a library caller's window keeps it on a thread of the caller's process.
    clock_process: bool = False


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
    # Per sink: snapshots whose intervals it got merged into a later one, being too slow.
    skipped_snapshots: dict[str, int]


def merged(pending: Sequence[IntervalEnded]) -> IntervalEnded:
    """Consecutive intervals as one: the first one's start, the last one's end."""
    if len(pending) == 1:
        return pending[0]
    return IntervalEnded(
        pending[0].previous,
        pending[-1].current,
        merge_deltas([event.delta for event in pending]),
        pending[-1].failed_sinks,
    )


@define
class _SinkLane:
    """One sink with its own channel and its own fate."""

    sink: Sink
    send_channel: trio.MemorySendChannel[Event]
    receive_channel: trio.MemoryReceiveChannel[Event]
    skipped: int = 0
    # Intervals that did not fit in the channel yet, oldest first.
    pending: list[IntervalEnded] = field(factory=list)
    failure: SinkFailure | None = None
    closed: bool = False
    # A ReopenFiles that did not fit in the channel yet: it goes before the next interval.
    reopen_pending: bool = False
    # Around the sink's consume: its deadline is set when the window ends.
    scope: trio.CancelScope = field(factory=trio.CancelScope)
    done: trio.Event = field(factory=trio.Event)
    end_timeout_s: float = DEFAULT_END_TIMEOUT_NS / 1e9
    # Around the delivery of the window's end: the same deadline as `scope`.
    delivery: trio.CancelScope = field(factory=trio.CancelScope)

    def hurry(self, deadline: float) -> None:
        """Bring the end's deadline forward (never back)."""
        self.end_timeout_s = min(self.end_timeout_s, max(0.0, deadline - trio.current_time()))
        for scope in (self.scope, self.delivery):
            scope.deadline = min(scope.deadline, deadline)

    @property
    def name(self) -> str:
        return repr(self.sink)

    @property
    def alive(self) -> bool:
        return self.failure is None and not self.closed

    def offer(self, event: Event) -> None:
        """Give the sink an event if its channel has room; otherwise hold it for later."""
        if not self.alive:
            return
        if isinstance(event, ReopenFiles):
            self.reopen_pending = True
        elif isinstance(event, IntervalEnded):
            self.pending.append(event)
        statistics = self.send_channel.statistics()
        room = statistics.max_buffer_size - statistics.current_buffer_used
        if room < (1 if isinstance(event, ReopenFiles) or not self.reopen_pending else 2):
            if isinstance(event, IntervalEnded):
                self.skipped += 1
                if len(self.pending) > MAX_PENDING_INTERVALS:
                    # Merged on the event loop, but rarely: once per that many held intervals.
                    self.pending = [merged(self.pending)]
            return
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            # WouldBlock cannot happen (room was checked); the others: the sink stopped reading.
            if self.reopen_pending:
                self.send_channel.send_nowait(ReopenFiles())
                self.reopen_pending = False
            if isinstance(event, IntervalEnded):
                event, self.pending = merged(self.pending), []
                self.send_channel.send_nowait(event)
            elif isinstance(event, WindowStarted):
                self.send_channel.send_nowait(event)

    async def run(self, stop: StopRequest) -> None:
        with self.scope:
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
                    self._fail(error)
        if self.scope.cancelled_caught and self.failure is None:
            self.failure = SinkFailure(
                self.name, f"did not finish within {self.end_timeout_s:g} s of the window's end; cancelled"
            )
            log.error("sink stuck after the window ended; cancelled", sink=self.name)
        self.done.set()

    async def deliver_end(
        self, last: IntervalEnded, report: Report, timeout_s: float, deadline: float
    ) -> None:
        """The window's last interval (with anything held back) and its end, then wait for
        the sink to finish, all by `deadline` (`timeout_s` after the window's end)."""
        self.end_timeout_s = timeout_s
        self.scope.deadline = deadline
        self.delivery.deadline = deadline
        with self.delivery:
            try:
                if self.alive:
                    if self.reopen_pending:
                        await self.send_channel.send(ReopenFiles())
                    await self.send_channel.send(merged([*self.pending, last]))
                    self.pending = []
                    await self.send_channel.send(WindowEnded(report))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the sink stopped reading early: it simply gets nothing more
            finally:
                self.send_channel.close()
            await self.done.wait()

    def _fail(self, error: Exception) -> None:
        message = str(error) if isinstance(error, KstatError) else f"{type(error).__name__}: {error}"
        self.failure = SinkFailure(self.name, message)
        log.error("sink failed", sink=self.name, error=message)


def _open_lane(sink: Sink) -> _SinkLane:
    send_channel, receive_channel = trio.open_memory_channel[Event](SINK_CHANNEL_CAPACITY)
    return _SinkLane(sink, send_channel, receive_channel)


SnapshotObserver = Callable[[Snapshot], None]
SampleHandler = Callable[[Sample, bool], Awaitable[None]]


@define
class _ClockedWindow:
    """The kernel's window: counter reads on the counter clock's thread, on time; behind it,
    the details stage (names, footprint, owners, then the snapshot and its delta) on a worker
    thread of its own, taking every reading that arrived since its last turn in one batch (one
    owner walk for all of them); then the samples, in order, to the scheduler."""

    counters: CounterTaker
    describer: Describer
    builder: SnapshotBuilder
    # One thread each: the details stage never waits behind anything else's threads (a
    # Prometheus render, a sink's encoder), and never runs two batches at once.
    _details_threads: trio.CapacityLimiter = field(factory=lambda: trio.CapacityLimiter(1))
    _last_reading: Reading | None = None

    async def run(
        self,
        stats_switch: StatsSwitch,
        stats_method: list[StatsMethod],
        took_baseline: Callable[[PassClocks, int], None],
        *,
        duration_ns: int | None,
        interval_ns: int,
        stop: trio.Event,
        on_sample: SampleHandler,
        first: Reading | None = None,
        freeze_gc: bool = False,
        clock_process: bool = False,
    ) -> None:
        token = trio.lowlevel.current_trio_token()
        arrived: deque[tuple[CounterRead, bool]] = deque()
        baseline = [False]
        failure: list[BaseException] = []
        woken = [trio.Event()]
        clock_done = trio.Event()
        frozen: list[bool] = []

        def arrive(read: CounterRead, final: bool, slip: Slip | None) -> None:  # on the loop
            if not arrived and not baseline[0]:
                baseline[0] = True
                took_baseline(read.clocks, read.program_count())
            arrived.append((read, final))
            if slip is not None:
                self._slipped(slip)
            woken[0].set()

        def failed(error: BaseException) -> None:  # on the loop
            failure.append(error)
            woken[0].set()

        def post(function: Callable[..., None], *args: object) -> None:  # on the clock's thread
            # Never blocks the clock: the loop runs it when it can. Once trio has exited
            # (the window failed), there is nobody left to tell.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(function, *args)

        # The clock's thread reads and stamps, no more: an iterator's walk is decoded by the
        # details stage (`_stage`), so the clock's Python is a few statements a read. Asked
        # to, and reading by the iterator, it is a process of its own (no lock to wait for).
        def deliver(read: CounterRead, final: bool, slip: Slip | None) -> None:
            post(arrive, read, final, slip)

        def on_error(error: BaseException) -> None:
            post(failed, error)

        def on_finished() -> None:
            post(clock_done.set)

        first_read = None if first is None else CounterRead.of(first)

        def thread_clock() -> CounterClock[CounterRead]:
            return CounterClock(
                self.counters.take,
                deliver,
                interval_ns=interval_ns,
                duration_ns=duration_ns,
                on_error=on_error,
                on_finished=on_finished,
                first=first_read,
            )

        reader = self.counters.reader
        clock: CounterClock[CounterRead] | ProcessClock
        if clock_process and isinstance(reader, IteratorReader):
            # The same callbacks as the thread's (typed apart: the two take different readers).
            clock = ProcessClock(
                reader,
                self.counters.ignored_ids,
                deliver,
                interval_ns=interval_ns,
                duration_ns=duration_ns,
                on_error=on_error,
                on_finished=on_finished,
                first=first_read,
            )
        else:
            clock = thread_clock()

        async def details() -> None:
            while True:
                await woken[0].wait()
                woken[0] = trio.Event()
                if failure:
                    raise failure[0]
                batch = list(arrived)
                arrived.clear()
                samples = await trio.to_thread.run_sync(
                    self._stage, [read for read, _ in batch], limiter=self._details_threads
                )
                if freeze_gc and not frozen:
                    # The window's start described: what the process holds now stays, and the
                    # collector goes on with what comes after it only.
                    frozen.append(True)
                    settle_heap()
                    if collecting:
                        gc.enable()
                for sample, (_, final) in zip(samples, batch, strict=True):
                    await on_sample(sample, final)
                    if final:
                        return

        async def counters() -> None:
            try:
                nonlocal clock
                with stats_switch() as method:
                    stats_method.append(method)
                    try:
                        clock.start()
                    except OSError as error:
                        log.warning(
                            "the counter clock's process did not start; a thread reads", error=str(error)
                        )
                        clock = thread_clock()
                        clock.start()
                    try:
                        async with trio.open_nursery() as watching:
                            watching.start_soon(_stop_when, stop, clock)
                            await clock_done.wait()
                            watching.cancel_scope.cancel()
                    finally:
                        clock.stop()
                        # The stats go off only once the clock's thread has taken its last read.
                        await trio.to_thread.run_sync(clock.join, abandon_on_cancel=False)
            finally:
                self.counters.close()  # the iterator's program and link go with the window

        # Until then no collection at all: the start (every program met first, described)
        # makes most of the objects a window keeps, and would set off full collections.
        collecting = gc.isenabled()
        if freeze_gc:
            gc.disable()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(details)
                await counters()
        finally:
            if freeze_gc and collecting:
                gc.enable()

    def _stage(self, reads: list[CounterRead]) -> list[Sample]:
        """The details stage's batch, on its thread: the reads decoded (in their order), what
        they met first described (one owner walk for all of them), then each reading's
        snapshot and delta."""
        ordered = []
        for read in reads:
            reading = read.reading()
            if reading.fresh_reader and self._last_reading is not None:
                # The first read of a reader that took over: what changed since the other
                # reader's last read, by the specification itself.
                reading = evolve(reading, changes=changes(self._last_reading.programs, reading.programs))
            ordered.append(reading)
            self._last_reading = reading
        self.describer.describe_many(ordered)
        return [self.builder.build(reading) for reading in ordered]

    def _slipped(self, slip: Slip) -> None:
        # The first interval after a baseline read at launch spans kstat's own start: said, not
        # warned about.
        say = log.info if slip.startup else log.warning
        say(
            "the interval slipped: a gap between counter reads was more than twice the interval",
            gap=format_duration_ns(slip.gap_ns),
            interval=format_duration_ns(slip.interval_ns),
            read=format_duration_ns(slip.read_ns),
            clock_woke_late_by=format_duration_ns(slip.late_wake_ns),
            cause=slip.cause,
        )


@contextlib.contextmanager
def _adopted_stats(stats_fd: int) -> Iterator[StatsMethod]:
    """A BPF_ENABLE_STATS fd opened before the window (with its baseline): closed with it."""
    try:
        yield StatsMethod.BPF_ENABLE_STATS
    finally:
        os.close(stats_fd)


async def _stop_when(stop: trio.Event, clock: CounterClock[CounterRead] | ProcessClock) -> None:
    await stop.wait()
    clock.stop()


@define
class Collection:
    """One window: stats on, events fanned out to sinks, stats off, the report delivered.

    `run()` does the whole window; while it runs, `report_so_far()` gives the delta from the
    first snapshot to a fresh one, for callers that check while traffic flows. The snapshot
    source and the stats switch are the kernel's unless given (tests give fakes).
    """

    settings: CollectionSettings
    sinks: Sequence[Sink] = ()
    stop: StopRequest = field(factory=StopRequest)
    # Called on the event loop with each snapshot as it is taken.
    on_snapshot: SnapshotObserver | None = None
    source: SnapshotSource | None = None
    stats_switch: StatsSwitch = runtime_stats_enabled
    # Set as soon as the window's first counter read is taken (before its details): from then on,
    # everything is inside the window. What `--ready-file` waits for.
    baseline_taken: trio.Event = field(factory=trio.Event)
    # That read's clocks and how many programs it saw (set with `baseline_taken`).
    baseline_clocks: PassClocks | None = None
    baseline_programs: int = 0
    # Set once the window's first snapshot (its details included) has gone to the sinks.
    window_started: trio.Event = field(factory=trio.Event)
    # Set once the last snapshot is taken and the stats are off: only delivery is left.
    window_ended: trio.Event = field(factory=trio.Event)
    summary: Summary = field(factory=lambda: Summary(generator=f"kstat {__version__}"))
    _online_cpus: int = field(factory=online_cpu_count)
    _lanes: list[_SinkLane] = field(factory=list)
    _hurried: bool = False
    _snapshot_method: str | None = None
    # kstat's own programs (the iterator), which no report lists.
    _own_program_ids: frozenset[int] = frozenset()
    # The kernel's window: its counter clock and details stage.
    _clocked: _ClockedWindow | None = None
    # The window's first reading, taken at launch by the command line (its stats fd included).
    early: EarlyBaseline | None = None
    # Whether the window adopted it (a method insisted on that it was not read by reads its own).
    _baseline_at_launch: bool = False
    _owner_source: OwnerSource | None = None
    # The process tree the filter names, followed while the window runs.
    _process_tree: ProcessTree | None = None
    _own_programs: OwnPrograms = field(factory=OwnPrograms)

    async def run(self) -> CollectionResult:
        """Collect the window and deliver it; returns the report and any sink failures.

        Raises PermissionDenied or UnsupportedKernel before the window starts when the kernel
        will not cooperate. The stats are on only while snapshots are being taken.
        """
        settings = self.settings
        summary_lane = _open_lane(self.summary)
        lanes = self._lanes = [_open_lane(sink) for sink in self.sinks]
        source = self.source
        clocked: _ClockedWindow | None = None
        early: EarlyBaseline | None = None
        if source is None:
            reader: PassReader
            # The launch's baseline holds no per-CPU counters (read before the flags were): a
            # window that keeps them reads its own.
            if (
                self.early is not None
                and settings.snapshot_method in ("auto", self.early.method)
                and not settings.per_cpu
            ):
                early = self.early
            self._baseline_at_launch = early is not None
            if self.early is not None and early is None:
                # A method insisted on that the baseline was not read by: it reads its own.
                if isinstance(self.early.reader, IteratorReader):
                    self.early.reader.close()
                os.close(self.early.stats_fd)
            stats_switch: StatsSwitch = self.stats_switch
            if early is not None:
                # The command line's baseline, read at launch with the stats on since.
                reader, self._snapshot_method = early.reader, early.method
                stats_switch = functools.partial(_adopted_stats, early.stats_fd)
                if isinstance(reader, IteratorReader):
                    log.info(
                        "snapshots by BPF iterator; its own program is left out of the report",
                        program_id=reader.own_id,
                        per_cpu_offsets_by=reader.per_cpu_offsets_by,
                    )
            else:
                # Loaded before the first read (it parses the kernel's BTF and runs a program,
                # off the loop): on a host with thousands of programs the iterator's reads are
                # what keeps the interval while the first details are looked up.
                reader, self._snapshot_method = await trio.to_thread.run_sync(
                    functools.partial(open_reader, settings.snapshot_method, per_cpu=settings.per_cpu)
                )
            # Owners from kstat's task-file iterator (or /proc where it cannot load): built off
            # the loop, once per window; its program is kstat's own, left out like the other.
            owner_source = self._owner_source = await trio.to_thread.run_sync(open_owner_source)
            if early is None or isinstance(early.reader, IteratorReader):
                # Every program built (else the iterator still comes): their offsets are kept.
                forget_kernel_layout()
            self._own_program_ids = reader.own_program_ids | owner_source.own_program_ids
            root = settings.program_filter.process_tree
            if root is not None:
                # Followed from now, before the baseline: a command started after it is in it
                # from its fork.
                self._process_tree = await trio.to_thread.run_sync(ProcessTree, root)
            clocked = self._clocked = _ClockedWindow(
                CounterTaker(reader, ignored_ids=owner_source.own_program_ids),
                Describer(
                    attributor=Attributor(host_root=settings.host_root, owner_source=owner_source),
                    process_tree=self._process_tree,
                ),
                SnapshotBuilder(
                    settings.program_filter,
                    online_cpus=self._online_cpus,
                    process_tree=self._process_tree,
                    own_programs=self._own_programs,
                ),
            )
        stats_method: list[StatsMethod] = []
        last_interval: list[IntervalEnded] = []
        previous: list[Snapshot] = []

        async def on_sample(sample: Sample, final: bool) -> None:
            snapshot = sample.snapshot
            log.debug(
                "snapshot",
                sequence=snapshot.sequence,
                programs=len(snapshot.programs),
                pass_duration=format_duration_ns(snapshot.pass_duration_ns),
            )
            event: Event
            if not previous:
                if not self.baseline_taken.is_set():  # a source of its own, not the kernel's
                    self._took_baseline(
                        PassClocks(
                            snapshot.monotonic_ns,
                            snapshot.monotonic_ns,
                            snapshot.boottime_at_start_ns,
                            snapshot.wall_time_ns,
                            snapshot.wall_time_ns,
                        ),
                        len(snapshot.programs),
                    )
                event = self._window_started(snapshot, stats_method[0])
            else:
                delta = sample.delta
                if delta is None:  # a source that gives no delta: computed here instead
                    delta = await trio.to_thread.run_sync(self._delta, previous[0], snapshot)
                failed = tuple(lane.name for lane in lanes if lane.failure is not None)
                event = IntervalEnded(previous[0], snapshot, delta, failed)
            previous[:] = [snapshot]
            if final and isinstance(event, IntervalEnded):
                # Held back: it goes out, waiting, once the stats are off.
                last_interval.append(event)
            else:
                await summary_lane.send_channel.send(event)
                for lane in lanes:
                    lane.offer(event)
            if self.on_snapshot is not None:
                self.on_snapshot(snapshot)
            if isinstance(event, WindowStarted):
                self.window_started.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.summary.consume, summary_lane.receive_channel)
                for lane in lanes:
                    nursery.start_soon(lane.run, self.stop)
                try:
                    if (
                        clocked is not None
                        and early is not None
                        and early.method == "syscalls"
                        and settings.snapshot_method == "auto"
                    ):
                        # The baseline was read by syscalls at launch: the iterator takes over
                        # as soon as it is loaded, while the window runs.
                        nursery.start_soon(self._load_iterator, clocked)
                    if clocked is not None:
                        await clocked.run(
                            stats_switch,
                            stats_method,
                            self._took_baseline,
                            first=None if early is None else early.reading,
                            duration_ns=settings.duration_ns,
                            interval_ns=settings.interval_ns,
                            stop=self.stop.event,
                            on_sample=on_sample,
                            freeze_gc=settings.freeze_gc_at_start,
                            clock_process=settings.clock_process,
                        )
                        # The window is read: what its stages kept for the next pass (every
                        # program's facts, verdicts and names, the reader's last walk) goes
                        # before the report is built, which can reuse the memory.
                        self._clocked = clocked = None
                    else:
                        assert source is not None
                        with self.stats_switch() as method:
                            stats_method.append(method)
                            await sample_window(
                                source,
                                duration_ns=settings.duration_ns,
                                interval_ns=settings.interval_ns,
                                stop=self.stop.event,
                                on_sample=on_sample,
                            )
                except BaseException:
                    for lane in (summary_lane, *lanes):
                        lane.send_channel.close()
                    raise
                finally:
                    if self._owner_source is not None:
                        # The details stage has finished with it: its program goes with the window.
                        self._owner_source.close()
                # The stats are off. The summary takes the last interval, then the report is
                # built and every sink gets the end, all sinks under one deadline.
                self.window_ended.set()
                async with summary_lane.send_channel:
                    await summary_lane.send_channel.send(last_interval[0])
                await self.summary.done.wait()
                if settings.freeze_gc_at_start:
                    window_is_over()
                report = self._keyed(
                    self.summary.report(stopped_by=self.stop.reason, snapshot_method=self._snapshot_method)
                )
                self._log_window_end(report)
                timeout_s = HURRIED_END_S if self._hurried else settings.end_timeout_ns / 1e9
                deadline = trio.current_time() + timeout_s
                for lane in lanes:
                    if lane.skipped:
                        log.warning("slow sink got merged intervals", sink=lane.name, skipped=lane.skipped)
                    nursery.start_soon(lane.deliver_end, last_interval[0], report, timeout_s, deadline)
        except BaseExceptionGroup as group:
            # One typed error (PermissionDenied, ...) is what callers want, not a group of one.
            sole = sole_exception(group)
            if sole is None:
                raise
            raise sole from None
        finally:
            if self._process_tree is not None:
                self._process_tree.close()
        return CollectionResult(
            report=report,
            failed_sinks=tuple(lane.failure for lane in lanes if lane.failure is not None),
            skipped_snapshots={lane.name: lane.skipped for lane in lanes},
        )

    async def _load_iterator(self, clocked: _ClockedWindow) -> None:
        """Load kstat's iterator while the window runs, and hand the reads over to it; on a
        kernel that cannot take it, the syscalls go on (said once, by `open_reader`)."""
        await self.baseline_taken.wait()
        reader, method = await trio.to_thread.run_sync(open_reader, "auto", abandon_on_cancel=True)
        if method == "iterator":
            if self.window_ended.is_set():
                reader.close()
                return
            clocked.counters.hand_over(reader)
            self._own_program_ids = self._own_program_ids | reader.own_program_ids
            self._snapshot_method = method
        forget_kernel_layout()  # every program built: the BTF's offsets are kept apart

    def _took_baseline(self, clocks: PassClocks, programs: int) -> None:
        self.baseline_clocks, self.baseline_programs = clocks, programs
        log.info(
            "baseline taken",
            programs=programs,
            read=format_duration_ns(clocks.duration_ns),
            by=self._snapshot_method,
            at_launch=self._baseline_at_launch,
        )
        self.baseline_taken.set()

    def hurry(self) -> None:
        """Cut the end short (a second Ctrl-C): every sink gets a second more to finish, then is
        cancelled; what it could not deliver it keeps where it can (the JSON report: a
        fallback file)."""
        self._hurried = True
        deadline = trio.current_time() + HURRIED_END_S
        for lane in self._lanes:
            lane.hurry(deadline)

    def reopen_files(self) -> None:
        """Ask every sink to reopen the files it writes by name (after a rotation: SIGHUP)."""
        log.info("reopening output files")
        for lane in self._lanes:
            lane.offer(ReopenFiles())

    async def report_so_far(self) -> Report:
        """The report from the window's first snapshot to one taken now (the window goes on)."""
        await self.window_started.wait()
        # The summary as it is now, with the snapshot it ended on: it goes on while the fresh
        # snapshot is taken, and the interval added must start where this copy stopped.
        view = self.summary.copy()
        last = view.last_snapshot
        assert last is not None
        # A taker of its own (a reader is one thread's), numbered after what the window has
        # seen, and told the owners and attachments the window already knows (no /proc scan
        # for them); the window's own snapshots and sinks are untouched.
        # The window's per-CPU counters need a per-CPU read here too (the syscalls have only
        # sums): an iterator of this call's own.
        reader: PassReader = ProgramReader()
        if self.settings.per_cpu and self._snapshot_method == "iterator":
            opened = functools.partial(open_reader, "iterator", per_cpu=True)
            reader = (await trio.to_thread.run_sync(opened))[0]
        taker = SnapshotTaker(
            self.settings.program_filter,
            reader=reader,
            next_sequence=last.sequence + 1,
            online_cpus=self._online_cpus,
            attributor=Attributor(
                host_root=self.settings.host_root,
                # The window's own iterator, shared: each read opens an iterator fd of its own.
                owner_source=self._owner_source
                if isinstance(self._owner_source, IteratorOwners)
                else ProcWalk(),
            ),
            ignored_ids=self._own_program_ids,
            known=dict(self._clocked.describer.known) if self._clocked is not None else {},
            process_tree=self._process_tree,
            own_programs=self._own_programs,
        )
        try:
            fresh = (await taker.take()).snapshot
        finally:
            taker.close()
        delta = await trio.to_thread.run_sync(self._delta, last, fresh)
        view.observe(IntervalEnded(last, fresh, delta))
        return self._keyed(view.report(stopped_by=None))

    def _keyed(self, report: Report) -> Report:
        """The report with the keys the settings ask for."""
        if self.settings.program_keys == KERNEL_NAME_KEYS:
            return keyed_by_kernel_name(report)
        return report

    def _delta(self, previous: Snapshot, current: Snapshot) -> IntervalDelta:
        started = self.summary.started
        return interval_delta(
            previous,
            current,
            changes_between(previous, current),
            online_cpus=self._online_cpus,
            window_start_boottime_ns=None if started is None else started.snapshot.boottime_at_start_ns,
        )

    def _window_started(self, snapshot: Snapshot, stats_method: StatsMethod) -> WindowStarted:
        settings = self.settings
        duration_ns = settings.duration_ns
        log.info(
            "window started",
            programs=len(snapshot.programs),
            duration=format_duration_ns(duration_ns) if duration_ns is not None else "until stopped",
            interval=format_duration_ns(settings.interval_ns),
        )
        if not snapshot.programs:
            log.warning("no eBPF programs are loaded; the report will have none unless some load")
        return WindowStarted(
            snapshot=snapshot,
            interval_ns=settings.interval_ns,
            requested_duration_ns=duration_ns,
            online_cpus=self._online_cpus,
            kernel_release=kernel_release(),
            stats_enabled_by=stats_method.value,
            program_filter=settings.program_filter.describe(),
            node=node_name(),
            snapshot_method=self._snapshot_method,
            baseline_at_launch=self._baseline_at_launch,
        )

    def _log_window_end(self, report: Report) -> None:
        log.info(
            "window ended",
            elapsed=format_duration_ns(report.collection_duration_ns),
            snapshots=report.snapshots,
            programs=report.num_programs,
            stopped_by=self.stop.reason,
        )


async def collect(
    settings: CollectionSettings,
    sinks: Sequence[Sink],
    *,
    stop: StopRequest | None = None,
    on_snapshot: SnapshotObserver | None = None,
) -> CollectionResult:
    """Collect one window and deliver it to `sinks` (see `Collection.run`)."""
    collection = Collection(settings, sinks, stop if stop is not None else StopRequest(), on_snapshot)
    return await collection.run()
