"""The scheduler's fan-out, without root: a scripted snapshot source and trio's mock clock.

Sinks that keep up, lag, fail, close their output or get stuck, during the window and after
it; the summary never misses an interval, and every sink's deltas add up to the report.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from kstat.core.events import Event, IntervalEnded, WindowEnded, WindowStarted
from kstat.core.model import Snapshot
from kstat.core.report import Report
from kstat.engine.scheduler import Collection, CollectionResult, CollectionSettings, StopRequest
from kstat.errors import OutputClosed
from tests.builders import FakeSource, program, snapshot, stats_left_alone

S = 1_000_000_000
# Runs added per snapshot: program 1 runs 10 times an interval, program 2 never, program 3
# appears at snapshot 3 (loaded then) and runs 5 times an interval.
SNAPSHOT_COUNT = 11


def scripted(index: int) -> Snapshot:
    programs = [
        program(1, 100 * index, 10 * index, name="busy"),
        program(2, 0, 0, name="idle"),
    ]
    if index >= 3:
        # Loaded after the window began (boot time 10 s + 3 s): every run counts.
        programs.append(
            program(3, 50 * (index - 2), 5 * (index - 2), name="late", load_time_ns=12_500_000_000)
        )
    return snapshot(index, float(index), *programs)


SCRIPT = [scripted(index) for index in range(SNAPSHOT_COUNT)]


class Recorder:
    """Records every event; `delay_s` of (mock) time per event makes it lag."""

    def __init__(self, name: str = "recorder", delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s
        self.events: list[Event] = []

    def __repr__(self) -> str:
        return self.name

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        async for event in events:
            self.events.append(event)
            await trio.sleep(self.delay_s)

    @property
    def intervals(self) -> list[IntervalEnded]:
        return [event for event in self.events if isinstance(event, IntervalEnded)]

    @property
    def reports(self) -> list[Report]:
        return [event.report for event in self.events if isinstance(event, WindowEnded)]

    def runs_of(self, name: str) -> int:
        """A program's runs, added up over the intervals this sink got."""
        return sum(event.delta.lines[name].run_count for event in self.intervals if name in event.delta.lines)


async def collect_scripted(
    sinks: list[object],
    *,
    duration_s: float = 10.0,
    end_timeout_s: float = 30.0,
    stop: StopRequest | None = None,
) -> CollectionResult:
    settings = CollectionSettings(
        duration_ns=int(duration_s * S), interval_ns=S, end_timeout_ns=int(end_timeout_s * S)
    )
    collection = Collection(
        settings,
        sinks,  # type: ignore[arg-type]  # the sinks here are duck-typed on purpose
        stop or StopRequest(),
        source=FakeSource(SCRIPT),
        stats_switch=stats_left_alone,
    )
    return await collection.run()


async def test_every_sink_gets_the_start_each_interval_and_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = Recorder("first"), Recorder("second")
    result = await collect_scripted([first, second])
    report = result.report
    assert report.snapshots == SNAPSHOT_COUNT
    assert report.collection_duration_ns == 10 * S
    for sink in (first, second):
        assert isinstance(sink.events[0], WindowStarted)
        assert [event.current.sequence for event in sink.intervals] == list(range(1, SNAPSHOT_COUNT))
        assert sink.reports == [report]
        assert isinstance(sink.events[-1], WindowEnded)
    # Worked out from the script: 10 runs an interval for 10 intervals; 5 an interval from
    # the program's load, which the window saw at snapshot 3 and counts from zero.
    assert report.program("busy").run_count == 100
    assert report.program("idle").run_count == 0
    assert report.program("late").run_count == 5 * 8
    assert report.program("late").loaded_during_window
    assert result.failed_sinks == ()
    assert result.skipped_snapshots == {"first": 0, "second": 0}


async def test_idle_programs_have_no_line_in_an_interval(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    await collect_scripted([recorder])
    for event in recorder.intervals:
        assert "idle" not in event.delta.lines
        assert event.delta.idle_programs == 1
    # The late program's first interval says it was loaded in it.
    appeared = next(event for event in recorder.intervals if "late" in event.delta.lines)
    assert appeared.current.sequence == 3
    assert appeared.delta.lines["late"].loaded_during_window


async def test_a_lagging_sink_gets_merged_intervals_that_add_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 25 s per event against a 1 s interval and a channel of 8: it falls far behind.
    slow, prompt = Recorder("slow", delay_s=25.0), Recorder("prompt")
    result = await collect_scripted([slow, prompt], duration_s=60.0, end_timeout_s=1_000.0)
    report = result.report
    skipped = result.skipped_snapshots["slow"]
    assert skipped > 0
    assert result.skipped_snapshots["prompt"] == 0
    # Never a gap: each interval starts where the one before it ended.
    sequences = [(event.previous.sequence, event.current.sequence) for event in slow.intervals]
    assert sequences[0][0] == 0
    assert sequences[-1][1] == (report.snapshots or 0) - 1
    assert all(before[1] == after[0] for before, after in itertools.pairwise(sequences))
    assert sum(event.skipped_snapshots for event in slow.intervals) == skipped
    for name in ("busy", "late"):
        assert slow.runs_of(name) == prompt.runs_of(name) == report.program(name).run_count
    assert slow.reports == [report]


async def test_a_failing_sink_is_cut_off_and_the_rest_carry_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Failing(Recorder):
        async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
            async for event in events:
                if isinstance(event, IntervalEnded) and event.current.sequence == 4:
                    raise RuntimeError("disk on fire")

    healthy = Recorder("healthy")
    result = await collect_scripted([Failing("failing"), healthy])
    assert [(failure.sink, failure.error) for failure in result.failed_sinks] == [
        ("failing", "RuntimeError: disk on fire")
    ]
    assert healthy.reports == [result.report]
    assert result.report.program("busy").run_count == 100


async def test_a_closed_output_ends_the_window_early(autojump_clock: trio.testing.MockClock) -> None:
    class ClosedAfterThree(Recorder):
        async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
            async for event in events:
                if isinstance(event, IntervalEnded) and event.current.sequence == 3:
                    raise OutputClosed("the reader went away")

    other = Recorder("other")
    stop = StopRequest()
    result = await collect_scripted([ClosedAfterThree("head"), other], duration_s=600.0, stop=stop)
    assert result.report.stopped_by == "head closed"
    assert result.report.collection_duration_ns < 10 * S
    assert result.failed_sinks == ()
    assert other.reports == [result.report]


async def test_a_sink_stuck_during_the_window_is_cancelled_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Stuck(Recorder):
        async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
            await events.receive()
            await trio.sleep_forever()

    healthy = Recorder("healthy")
    started = trio.current_time()
    result = await collect_scripted([Stuck("stuck"), healthy], end_timeout_s=7.0)
    # The window ran its 10 s, then the stuck sink had 7 s more, not forever.
    assert trio.current_time() - started == pytest.approx(17.0)
    assert [failure.sink for failure in result.failed_sinks] == ["stuck"]
    assert "within 7 s of the window's end" in result.failed_sinks[0].error
    assert healthy.reports == [result.report]


async def test_the_end_deadline_is_one_for_all_sinks(autojump_clock: trio.testing.MockClock) -> None:
    class SlowToFinish(Recorder):
        """Reads everything, then takes a long time over the report (a slow upload)."""

        async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
            async for _ in events:
                pass
            await trio.sleep(1_000)

    started = trio.current_time()
    result = await collect_scripted([SlowToFinish("a"), SlowToFinish("b"), Recorder("c")], end_timeout_s=5.0)
    # Both slow sinks are cancelled 5 s after the window's end: one deadline, not one each.
    assert trio.current_time() - started == pytest.approx(15.0)
    assert sorted(failure.sink for failure in result.failed_sinks) == ["a", "b"]


async def test_a_sink_that_stops_reading_early_is_no_failure(autojump_clock: trio.testing.MockClock) -> None:
    class FirstOnly(Recorder):
        async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
            self.events.append(await events.receive())

    first_only = FirstOnly("first-only")
    result = await collect_scripted([first_only, Recorder()])
    assert result.failed_sinks == ()
    assert len(first_only.events) == 1


async def test_the_summary_misses_nothing_when_every_sink_lags(
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await collect_scripted([Recorder("slow", delay_s=100.0)], duration_s=10.0, end_timeout_s=1_000.0)
    assert result.report.snapshots == SNAPSHOT_COUNT
    assert result.report.program("busy").run_count == 100
    assert result.report.program("late").run_count == 40


async def test_report_so_far_does_not_disturb_the_window(autojump_clock: trio.testing.MockClock) -> None:
    # A window whose source is a script cannot take a fresh kernel snapshot; what matters here
    # is that the summary's copy leaves the window's own summary alone.
    recorder = Recorder()
    collection = Collection(
        CollectionSettings(duration_ns=4 * S, interval_ns=S),
        [recorder],
        source=FakeSource(SCRIPT),
        stats_switch=stats_left_alone,
    )
    async with trio.open_nursery() as nursery:
        results: list[CollectionResult] = []

        async def run() -> None:
            results.append(await collection.run())

        nursery.start_soon(run)
        await collection.window_started.wait()
        await trio.sleep(2.5)
        view = collection.summary.copy()
        assert view.snapshot_count == 3
    assert results[0].report.snapshots == 5
    assert view.snapshot_count == 3


QUIET_LIBRARY = """
import trio
from kstat.engine.scheduler import Collection, CollectionSettings
from tests.builders import FakeSource, program, snapshot, stats_left_alone

async def main() -> None:
    collection = Collection(
        CollectionSettings(duration_ns=300_000_000, interval_ns=50_000_000),
        source=FakeSource([snapshot(0, 0.0, program(1, 0, 0))]),
        stats_switch=stats_left_alone,
    )
    report = (await collection.run()).report
    assert report.snapshots and report.snapshots > 3

trio.run(main)
"""


def test_embedded_with_structlog_unconfigured_kstat_says_nothing() -> None:
    """A library logs nothing below a warning unless its host configures logging."""
    shown = subprocess.run(
        [sys.executable, "-c", QUIET_LIBRARY],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (shown.stdout, shown.stderr) == ("", "")
