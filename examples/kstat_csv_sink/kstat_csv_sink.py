"""A third-party kstat sink: `--sink csv:PATH` writes one CSV row per program and interval."""

from __future__ import annotations

import csv
from pathlib import Path

import trio

import kstat


class CsvSink:
    def __init__(self, path: Path) -> None:
        # Fail before the window starts, not after it.
        self.stream = path.open("w", newline="")
        self.writer = csv.writer(self.stream)
        self.writer.writerow(["end_time", "id", "name", "run_count", "runtime_ns", "avg_runtime_ns"])

    def __repr__(self) -> str:
        return f"csv:{self.stream.name}"

    async def consume(self, snapshots: trio.MemoryReceiveChannel[kstat.Snapshot]) -> None:
        previous = None
        async for snapshot in snapshots:
            if previous is not None:
                # Files can block: write off the event loop, never stalling the sampler.
                await trio.to_thread.run_sync(self._write_interval, previous, snapshot)
            previous = snapshot

    async def finish(self, report: kstat.Report) -> None:
        self.stream.close()

    def _write_interval(self, previous: kstat.Snapshot, current: kstat.Snapshot) -> None:
        interval = kstat.interval_report(previous, current)
        for line in interval.program_stats.values():
            self.writer.writerow(
                [interval.end_time, line.id, line.name, line.run_count, line.runtime_ns, line.avg_runtime_ns]
            )
        self.stream.flush()


def from_spec(argument: str | None) -> CsvSink:
    if not argument:
        raise kstat.UsageError("csv needs a path (csv:PATH)")
    return CsvSink(Path(argument))
