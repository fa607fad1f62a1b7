"""The sampler: one snapshot of every program per interval, taken off the event loop."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
import trio
from attrs import define, field

from kstat._bpf import ProgramReader
from kstat.attribution import Attributor
from kstat.filters import ProgramFilter
from kstat.model import ProgramDetails, ProgramIdentity, ProgramStats, Snapshot

log = structlog.get_logger(__name__)

# Called with each snapshot and whether it is the window's last one.
SnapshotHandler = Callable[[Snapshot, bool], Awaitable[None]]


def _midpoint(before: int, after: int) -> int:
    return before + (after - before) // 2


@define
class SnapshotTaker:
    """Reads all programs with one reader; each pass runs on a worker thread.

    A pass costs a few syscalls per program, so thousands of programs would hold the event loop
    for milliseconds; the thread keeps the sinks and signal handling responsive meanwhile.
    """

    program_filter: ProgramFilter = field(factory=ProgramFilter)
    next_sequence: int = 0
    _reader: ProgramReader = field(factory=ProgramReader)
    _attributor: Attributor = field(factory=Attributor)
    _verdicts: dict[ProgramIdentity, bool] = field(factory=dict)

    def take_blocking(self) -> Snapshot:
        monotonic_before = time.monotonic_ns()
        boottime_before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall_before = time.time_ns()
        programs = self._reader.read_all()
        monotonic_after = time.monotonic_ns()
        wall_after = time.time_ns()
        # After the clocks: owners and attachments are not part of the counters' moment.
        details = self._attributor.details_for(programs)
        if not self.program_filter.is_empty:
            programs = self._selected(programs, details)
            details = {program.identity: details[program.identity] for program in programs}
        sequence = self.next_sequence
        self.next_sequence += 1
        return Snapshot(
            sequence=sequence,
            monotonic_ns=_midpoint(monotonic_before, monotonic_after),
            boottime_at_start_ns=boottime_before,
            wall_time_ns=_midpoint(wall_before, wall_after),
            pass_duration_ns=monotonic_after - monotonic_before,
            programs=tuple(programs),
            details=details,
        )

    def _selected(
        self, programs: list[ProgramStats], details: Mapping[ProgramIdentity, ProgramDetails]
    ) -> list[ProgramStats]:
        """The programs the filter selects. What it looks at (names, type, owners) is fixed per
        program, so each program is judged once, not once a pass (a regex on every name)."""
        known, verdicts = self._verdicts, {}
        selects = self.program_filter.selects
        for program in programs:
            identity = program.identity
            verdict = known.get(identity)
            verdicts[identity] = verdict if verdict is not None else selects(program, details[identity])
        self._verdicts = verdicts  # only what is loaded now
        return [program for program in programs if verdicts[program.identity]]

    async def take(self) -> Snapshot:
        # Not abandoned on cancel: a pass is short, and finishing it closes its fds.
        return await trio.to_thread.run_sync(self.take_blocking)


async def sample_window(
    taker: SnapshotTaker,
    *,
    duration_ns: int | None,
    interval_ns: int,
    stop: trio.Event,
    on_snapshot: SnapshotHandler,
) -> None:
    """Take the first snapshot now, one per interval, and the last one at the end of the window.

    The window ends after `duration_ns` (never, when None) or as soon as `stop` is set; either
    way the last snapshot is taken then, so the report covers exactly the time collected. A
    pass that overruns its interval delays the next tick instead of queueing missed ones.
    """
    interval_s = interval_ns / 1e9
    first = await taker.take()
    # The window's clock starts at the first snapshot's moment (the middle of its pass), so
    # the measured elapsed time is never shorter than the duration asked for.
    window_start = trio.current_time() - first.pass_duration_ns / 2e9
    deadline = window_start + duration_ns / 1e9 if duration_ns is not None else float("inf")
    await on_snapshot(first, False)
    next_tick = window_start + interval_s
    while True:
        with trio.move_on_at(min(next_tick, deadline)):
            await stop.wait()
        now = trio.current_time()
        if stop.is_set() or now >= deadline:
            break
        await on_snapshot(await taker.take(), False)
        next_tick += interval_s
        if next_tick <= trio.current_time():
            missed = int((trio.current_time() - next_tick) / interval_s) + 1
            log.debug("snapshot pass overran its interval", skipped_ticks=missed)
            next_tick += missed * interval_s
    await on_snapshot(await taker.take(), True)
