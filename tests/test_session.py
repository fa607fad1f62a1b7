"""The collector as a library, in trio, against real programs and real packet counts."""

from __future__ import annotations

import pytest
import trio

from kstat.core.events import Event, IntervalEnded, WindowEnded, WindowStarted
from kstat.core.report import Report
from kstat.engine.scheduler import CollectionSettings, collect
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.names import KT
from tests.windows import LoadFilter, WindowProbe, run_window, send, wait_until_freed

pytestmark = pytest.mark.kernel


def line_for(report: Report, program_id: int) -> tuple[str, int]:
    matches = [(key, line.run_count) for key, line in report.program_stats.items() if line.id == program_id]
    assert len(matches) == 1, report.program_stats
    return matches[0]


async def test_run_count_equals_packets_sent_inside_the_window(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}win")
    target.send(77)  # before the window: must not count

    async def body(probe: WindowProbe) -> None:
        await send(target, 2_500)

    result = await run_window(body)
    target.send(33)  # after the window: must not count either
    line = result.report.program(f"{KT}win")
    assert line.run_count == 2_500
    assert line.avg_runtime_ns > 0
    assert result.report.stopped_by == "test done"
    assert result.report.stats_enabled_by == "bpf_enable_stats"
    assert not result.failed_sinks


async def test_a_program_without_runs_appears_with_zeros(load_filter: LoadFilter) -> None:
    idle = load_filter(f"{KT}idle")

    async def body(probe: WindowProbe) -> None:
        await probe.wait_for_snapshots(2)

    line = (await run_window(body)).report.program(idle.program.id)
    assert (line.name, line.run_count, line.runtime_ns, line.avg_runtime_ns) == (f"{KT}idle", 0, 0, 0)


async def test_programs_sharing_a_name_are_both_reported(load_filter: LoadFilter) -> None:
    first = load_filter(f"{KT}twin")
    second = load_filter(f"{KT}twin")

    async def body(probe: WindowProbe) -> None:
        await send(first, 300)
        await send(second, 500)

    report = (await run_window(body)).report
    assert line_for(report, first.program.id) == (f"{KT}twin#{first.program.id}", 300)
    assert line_for(report, second.program.id) == (f"{KT}twin#{second.program.id}", 500)


async def test_a_program_loaded_mid_window_counts_from_its_load(load_filter: LoadFilter) -> None:
    late: list[LoopbackTarget] = []

    async def body(probe: WindowProbe) -> None:
        late.append(load_filter(f"{KT}late"))
        await send(late[0], 400)

    # A long interval: the sampler first sees the program in the last snapshot.
    result = await run_window(body, interval_ns=60_000_000_000)
    line = result.report.program(late[0].program.id)
    assert line.run_count == 400
    assert line.loaded_during_window
    assert result.report.snapshots == 2


async def test_a_program_unloaded_mid_window_is_reported_up_to_its_last_sighting() -> None:
    program = SocketFilter(f"{KT}leave")
    target = LoopbackTarget(program)
    program_id = program.id

    async def body(probe: WindowProbe) -> None:
        await send(target, 600)
        await probe.wait_for_snapshots(probe.snapshots_seen + 2)
        target.close()
        program.close()
        await trio.to_thread.run_sync(wait_until_freed, program_id)
        await probe.wait_for_snapshots(probe.snapshots_seen + 2)

    line = (await run_window(body)).report.program(program_id)
    assert line.run_count == 600
    assert line.unloaded_during_window


async def test_the_window_ends_after_its_duration(load_filter: LoadFilter) -> None:
    load_filter(f"{KT}dur")
    settings = CollectionSettings(duration_ns=350_000_000, interval_ns=100_000_000)
    started = trio.current_time()
    result = await collect(settings, [])
    # Ends after its duration (the bound is only "it does end": a busy host describes slowly).
    assert 0.35 <= trio.current_time() - started < 60
    assert 350_000_000 <= result.report.collection_duration_ns < 1_000_000_000
    # The baseline, a read at each of three ticks and the last at the end: five, unless a busy
    # host delayed a tick past the next (a late read delays the next tick rather than queueing).
    assert result.report.snapshots is not None and 3 <= result.report.snapshots <= 5
    assert result.report.stopped_by is None


class RecordingSink:
    def __init__(self, delay_s: float = 0) -> None:
        self.delay_s = delay_s
        # The snapshot each event ended at (the window's start is snapshot 0).
        self.sequences: list[int] = []
        self.run_counts: list[int] = []
        self.reports: list[Report] = []

    def __repr__(self) -> str:
        return f"recording(delay={self.delay_s})"

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        async for event in events:
            if isinstance(event, WindowStarted):
                self.sequences.append(event.snapshot.sequence)
            elif isinstance(event, IntervalEnded):
                self.sequences.append(event.current.sequence)
                line = event.delta.lines.get(f"{KT}slow")
                self.run_counts.append(line.run_count if line is not None else 0)
            elif isinstance(event, WindowEnded):
                self.reports.append(event.report)
            await trio.sleep(self.delay_s)


class BrokenSink(RecordingSink):
    def __repr__(self) -> str:
        return "broken"

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        async for _ in events:
            raise RuntimeError("disk on fire")


async def test_a_failing_sink_is_isolated_and_reported(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}sinks")
    healthy, broken = RecordingSink(), BrokenSink()

    async def body(probe: WindowProbe) -> None:
        await send(target, 50)
        await probe.wait_for_snapshots(3)

    result = await run_window(body, sinks=[broken, healthy])
    assert [failure.sink for failure in result.failed_sinks] == ["broken"]
    assert "disk on fire" in result.failed_sinks[0].error
    assert healthy.sequences == list(range(result.report.snapshots or 0))
    assert healthy.reports == [result.report]
    assert broken.reports == []
    assert result.report.program(f"{KT}sinks").run_count == 50


async def test_a_slow_sink_gets_merged_intervals_that_still_add_up(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}slow")
    slow = RecordingSink(delay_s=0.5)

    async def body(probe: WindowProbe) -> None:
        for _ in range(4):
            await send(target, 100)
            await probe.wait_for_snapshots(probe.snapshots_seen + 10)

    result = await run_window(body, interval_ns=10_000_000, sinks=[slow])
    assert result.report.snapshots is not None
    last_sequence = result.report.snapshots - 1
    assert slow.sequences[0] == 0
    assert slow.sequences[-1] == last_sequence
    skipped = result.skipped_snapshots[repr(slow)]
    assert skipped > 0
    assert len(slow.sequences) + skipped == result.report.snapshots
    assert sum(slow.run_counts) == result.report.program(f"{KT}slow").run_count == 400


class StuckSink(RecordingSink):
    """Takes the first event, then never reads again (a deadlocked third-party sink)."""

    def __repr__(self) -> str:
        return "stuck"

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        await events.receive()
        await trio.sleep_forever()


async def test_a_stuck_sink_cannot_hold_the_window_open(load_filter: LoadFilter) -> None:
    load_filter(f"{KT}stuck")
    healthy, stuck = RecordingSink(), StuckSink()

    async def body(probe: WindowProbe) -> None:
        await probe.wait_for_snapshots(20)  # far more than the stuck sink's channel holds

    with trio.fail_after(10):
        result = await run_window(
            body, interval_ns=10_000_000, sinks=[stuck, healthy], end_timeout_ns=300_000_000
        )
    assert [failure.sink for failure in result.failed_sinks] == ["stuck"]
    assert "within 0.3 s of the window's end" in result.failed_sinks[0].error
    assert healthy.reports == [result.report]
