"""What a window sends its sinks, and the protocol a sink implements.

Every sink gets, in this order: one `WindowStarted`, an `IntervalEnded` per interval it took,
and one `WindowEnded` with the report; then its channel closes. A `ReopenFiles` may come
between them, when the files a sink writes have been rotated. A sink that fell behind gets
fewer, longer intervals (their deltas merged), never a gap: the deltas it receives always add
up to the report. Each interval's delta is computed once, by the sampler, and shared by every
sink: no sink pairs snapshots or does report math itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from attrs import frozen

from kstat.core.delta import IntervalDelta
from kstat.core.model import Snapshot
from kstat.core.report import Report

if TYPE_CHECKING:
    # Only named in annotations: reading reports (`kstat compare`, `list`) never loads trio.
    import trio


@frozen
class WindowStarted:
    """The stats are on and the window's first snapshot is taken."""

    snapshot: Snapshot
    interval_ns: int
    # None: until stopped.
    requested_duration_ns: int | None
    online_cpus: int
    kernel_release: str
    # How the kernel's stats were switched on ("bpf_enable_stats" or "sysctl").
    stats_enabled_by: str
    # The selection the window covers (None: every program).
    program_filter: Mapping[str, Any] | None
    # The node (NODE_NAME, else the hostname).
    node: str | None = None
    # How each pass read the programs: "iterator" or "syscalls" (None: not from the kernel).
    snapshot_method: str | None = None
    # The first snapshot was read at launch, before the window was set up: the first interval
    # also spans kstat's own start-up.
    baseline_at_launch: bool = False


@frozen
class IntervalEnded:
    """An interval ended: the snapshots at its ends and what happened in between."""

    previous: Snapshot
    current: Snapshot
    delta: IntervalDelta
    # The sinks that had failed by the interval's end (for self-monitoring sinks).
    failed_sinks: tuple[str, ...] = ()

    @property
    def skipped_snapshots(self) -> int:
        """Snapshots this sink did not get on their own (their intervals are merged into this one)."""
        return self.delta.skipped_snapshots


@frozen
class WindowEnded:
    """The stats are off again and the window's report is complete."""

    report: Report


@frozen
class ReopenFiles:
    """Files written by name should be reopened: they were rotated (SIGHUP, as logrotate
    sends). Sinks that write no files ignore it."""


Event = WindowStarted | IntervalEnded | WindowEnded | ReopenFiles


@runtime_checkable
class Sink(Protocol):
    """Consumes a window's events as they come.

    Checks that can fail early (an unwritable path, a bad address) belong in the constructor:
    sinks are made before the window starts, so a bad one never costs a collection. Once the
    window has ended, every sink's remaining work shares one deadline (30 s by default).
    """

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        """Read events until the channel closes, after `WindowEnded`.

        During the window kstat never waits for a sink: one that is still busy gets the
        intervals it missed merged into the next one it takes.
        """
        ...


async def final_report(events: trio.abc.ReceiveChannel[Event]) -> Report | None:
    """`consume`'s body for sinks that only want the report: None if the window never ended
    (it failed to start, or kstat was stopped before a report could be made)."""
    report = None
    async for event in events:
        if isinstance(event, WindowEnded):
            report = event.report
    return report
