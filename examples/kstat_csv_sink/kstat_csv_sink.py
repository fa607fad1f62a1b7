"""A third-party kstat sink: `--sink csv:PATH` writes one CSV row per program and interval."""

from __future__ import annotations

import csv
from pathlib import Path

import trio

from kstat import sink


class CsvSink:
    def __init__(self, path: Path) -> None:
        # Fail before the window starts, not after it.
        self.stream = path.open("w", newline="")
        self.writer = csv.writer(self.stream)
        self.writer.writerow(["end_time", "id", "name", "run_count", "runtime_ns", "avg_runtime_ns"])

    def __repr__(self) -> str:
        return f"csv:{self.stream.name}"

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        try:
            async for event in events:
                if isinstance(event, sink.IntervalEnded):
                    # Files can block: write off the event loop, never stalling the sampler.
                    await trio.to_thread.run_sync(self._write_interval, event)
        finally:
            self.stream.close()

    def _write_interval(self, event: sink.IntervalEnded) -> None:
        # The interval's delta is computed once by kstat; its lines are the programs that ran.
        end_time = sink.interval_to_dict(event)["end_time"]
        for line in event.delta.lines.values():
            self.writer.writerow(
                [end_time, line.id, line.name, line.run_count, line.runtime_ns, line.avg_runtime_ns]
            )
        self.stream.flush()


def from_spec(argument: str | None) -> CsvSink:
    if not argument:
        raise sink.UsageError("csv needs a path (csv:PATH)")
    return CsvSink(Path(argument))
