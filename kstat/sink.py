"""The sink protocol: how snapshots and the final report leave kstat.

A sink is any object with these two async methods. Built-in sinks live in the top-level `sinks`
package and, like third-party ones, are found through the `kstat.sinks` entry-point group.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import trio

from kstat.model import Snapshot
from kstat.report import Report


@runtime_checkable
class Sink(Protocol):
    """Consumes a window's snapshots as they come, then its report.

    Checks that can fail early (an unwritable path, a bad address) belong in the constructor:
    sinks are made before the window starts, so a bad one never costs a collection.
    """

    async def consume(self, snapshots: trio.MemoryReceiveChannel[Snapshot]) -> None:
        """Read snapshots until the channel closes at the end of the window.

        A slow sink may miss intermediate snapshots (kstat never waits for it during the
        window), but it always gets the window's first and last ones.
        """
        ...

    async def finish(self, report: Report) -> None:
        """Deliver the window's report; called once, after `consume` has returned."""
        ...


async def drain(snapshots: trio.MemoryReceiveChannel[Snapshot]) -> None:
    """`consume` for sinks that only want the report."""
    async for _ in snapshots:
        pass
