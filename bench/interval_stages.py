"""Where a steady interval goes, stage by stage, with busy programs: the same stages the command
runs (the counter read, the details stage's snapshot and delta, the summary, StatsD's lines and
datagrams, NDJSON's line), each timed on its own, on real programs with real traffic.

The programs are the caller's (loaded, some of them busy); the kernel's stats must be on, or
no program runs a counted run. Each interval is taken `spacing_s` after the one before, so that
every busy program moves in each. A stage's time is the CPU time it took (this thread's).
"""

from __future__ import annotations

import cProfile
import gc
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

from attrs import evolve, frozen

from bench.measure import Timing
from kstat._datagrams import batch_datagrams
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramChanges, Reading
from kstat.engine.heap import settle_heap
from kstat.engine.sampler import CounterTaker, Describer, SnapshotBuilder
from kstat.engine.summary import Summary
from kstat.formats.ndjson import interval_to_dict, json_line, start_to_dicts
from kstat.formats.statsd import IntervalLines
from kstat.sinks.statsd import parse_statsd_url
from kstat.sources.iterator import IteratorReader
from kstat.sources.own_programs import OwnPrograms

STAGES: Final = ("read", "describe", "snapshot and delta", "summary", "statsd", "ndjson")
_STATSD_URL: Final = "statsd://127.0.0.1:8125"
_T = TypeVar("_T")


@frozen
class IntervalStages:
    programs_seen: int
    # Programs that ran in each measured interval (the delta's lines), median.
    active_programs: int
    statsd_lines: int
    ndjson_bytes: int
    # Per stage, one sample per interval.
    stages: dict[str, Timing]
    total: Timing
    # CPU time in the garbage collector's collections during the measured intervals (part of
    # the stages' times: a collection runs inside whichever stage allocated), per interval.
    collector_ns_per_interval: float
    collections_per_interval: float


def measure_interval_stages(
    intervals: int,
    online_cpus: int,
    *,
    spacing_s: float = 0.5,
    profile_to: Path | None = None,
    replayed_busy: int = 0,
    freeze_heap: bool = True,
) -> IntervalStages:
    """`intervals` steady intervals after two warm-up ones; with `profile_to`, a cProfile of
    the measured intervals' stages (all of them on this thread) is written there.

    With `replayed_busy`, the stages after the read are fed readings made from the first one
    instead of the kernel's (the read is still timed): that many programs ran in each, and no
    program came or went, whatever other tenants of the host load meanwhile."""
    reader = IteratorReader()
    counters = CounterTaker(reader)
    describer = Describer()
    builder = SnapshotBuilder(online_cpus=online_cpus, own_programs=OwnPrograms())
    settings = parse_statsd_url(_STATSD_URL)
    try:
        reading = counters.read()
        describer.describe(reading)
        first = builder.build(reading).snapshot
        replay = _Replay(reading, replayed_busy) if replayed_busy else None
        started = WindowStarted(first, round(spacing_s * 1e9), None, online_cpus, "", "bench", None)
        summary = Summary()
        summary.observe(started)
        statsd = IntervalLines(settings)
        statsd.start(started)
        start_to_dicts(started)
        previous = first
        thresholds = gc.get_threshold()
        if freeze_heap:
            settle_heap()  # as the command does once its window has started
        samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
        totals: list[float] = []
        active: list[int] = []
        lines: list[int] = []
        sizes: list[int] = []
        profiler = cProfile.Profile() if profile_to is not None else None
        collector = _CollectorTime()
        for index in range(intervals + 2):
            time.sleep(spacing_s)
            measured = index >= 2
            if measured and profiler is not None:
                profiler.enable()
            if index == 2:
                collector.start()
            timer = _Timer()
            reading = timer.run("read", counters.read)
            if replay is not None:
                reading = replay.next()
            timer.run("describe", partial(describer.describe, reading))
            sample = timer.run("snapshot and delta", partial(builder.build, reading))
            assert sample.delta is not None
            event = IntervalEnded(previous, sample.snapshot, sample.delta)
            timer.run("summary", partial(summary.observe, event))
            sent = timer.run("statsd", partial(_statsd_datagrams, statsd, event, settings.mtu))
            line = timer.run("ndjson", partial(_ndjson_line, event))
            if profiler is not None:
                profiler.disable()
            previous = sample.snapshot
            if not measured:
                continue
            for stage in STAGES:
                samples[stage].append(timer.taken[stage])
            totals.append(sum(timer.taken.values()))
            active.append(len(event.delta.lines))
            lines.append(sum(datagram.count(b"\n") + 1 for datagram in sent))
            sizes.append(len(line))
        collector.stop()
        if profiler is not None and profile_to is not None:
            profiler.dump_stats(profile_to)
    finally:
        collector.stop()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        counters.close()
    return IntervalStages(
        programs_seen=len(previous.programs),
        active_programs=sorted(active)[len(active) // 2],
        statsd_lines=sorted(lines)[len(lines) // 2],
        ndjson_bytes=sorted(sizes)[len(sizes) // 2],
        stages={stage: Timing.of(found) for stage, found in samples.items()},
        total=Timing.of(totals),
        collector_ns_per_interval=collector.taken_ns / intervals,
        collections_per_interval=collector.collections / intervals,
    )


def _statsd_datagrams(statsd: IntervalLines, event: IntervalEnded, mtu: int) -> list[bytes]:
    return list(batch_datagrams(statsd.lines_for(event.delta) + statsd.owner_lines(event), mtu))


def _ndjson_line(event: IntervalEnded) -> bytes:
    return json_line(interval_to_dict(event))


class _Replay:
    """Readings in which the first `busy` programs each ran once more than in the one before."""

    def __init__(self, first: Reading, busy: int) -> None:
        self.programs = list(first.programs)
        self.clocks = first.clocks
        self.busy = busy
        self.passes = 0

    def next(self) -> Reading:
        self.passes += 1
        moved = []
        for index, before in enumerate(self.programs[: self.busy]):
            counters = before.counters
            after = evolve(
                before,
                counters=counters._replace(
                    run_count=counters.run_count + 1, run_time_ns=counters.run_time_ns + 250
                ),
            )
            self.programs[index] = after
            moved.append((before, after))
        step = self.passes * 1_000_000_000
        clocks = evolve(
            self.clocks,
            monotonic_start_ns=self.clocks.monotonic_start_ns + step,
            monotonic_end_ns=self.clocks.monotonic_end_ns + step,
            boottime_start_ns=self.clocks.boottime_start_ns + step,
            wall_start_ns=self.clocks.wall_start_ns + step,
            wall_end_ns=self.clocks.wall_end_ns + step,
        )
        return Reading(list(self.programs), ProgramChanges(moved=moved), clocks)


class _CollectorTime:
    """The CPU time the garbage collector's collections take, from gc's callbacks."""

    def __init__(self) -> None:
        self.taken_ns = 0
        self.collections = 0
        self._began = 0

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.thread_time_ns()
        else:
            self.taken_ns += time.thread_time_ns() - self._began
            self.collections += 1


class _Timer:
    def __init__(self) -> None:
        self.taken: dict[str, float] = {}

    def run(self, stage: str, call: Callable[[], _T]) -> _T:
        # This thread's CPU time, the kernel's part of the read included: what the process pays,
        # and not moved by the other tenants of a loaded host taking the CPU meanwhile.
        before = time.thread_time_ns()
        result = call()
        self.taken[stage] = float(time.thread_time_ns() - before)
        return result
