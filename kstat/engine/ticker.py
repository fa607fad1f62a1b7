"""The window's clock: the first snapshot now, one each interval, the last at the window's end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from kstat._logging import get_logger
from kstat.engine.sampler import Sample, SnapshotSource

log = get_logger(__name__)

SampleHandler = Callable[[Sample, bool], Awaitable[None]]


async def sample_window(
    source: SnapshotSource,
    *,
    duration_ns: int | None,
    interval_ns: int,
    stop: trio.Event,
    on_sample: SampleHandler,
) -> None:
    """Take the first snapshot now, one per interval, and the last one at the end of the window.

    The window ends after `duration_ns` (never, when None) or as soon as `stop` is set; either
    way the last snapshot is taken then, so the report covers exactly the time collected. A
    pass that overruns its interval delays the next tick instead of queueing missed ones.
    `on_sample` gets each sample and whether it is the window's last.
    """
    interval_s = interval_ns / 1e9
    first = await source.take()
    # The window's clock starts at the first snapshot's moment (the middle of its pass), so
    # the measured elapsed time is never shorter than the duration asked for.
    window_start = trio.current_time() - first.snapshot.pass_duration_ns / 2e9
    deadline = window_start + duration_ns / 1e9 if duration_ns is not None else float("inf")
    await on_sample(first, False)
    next_tick = window_start + interval_s
    while True:
        with trio.move_on_at(min(next_tick, deadline)):
            await stop.wait()
        now = trio.current_time()
        if stop.is_set() or now >= deadline:
            break
        await on_sample(await source.take(), False)
        next_tick += interval_s
        if next_tick <= trio.current_time():
            missed = int((trio.current_time() - next_tick) / interval_s) + 1
            log.debug("snapshot pass overran its interval", skipped_ticks=missed)
            next_tick += missed * interval_s
    await on_sample(await source.take(), True)
