"""`ndjson:PATH` and `ndjson:-`: one JSON object per line, as each interval ends.

Two layouts, chosen with `?layout=` after the path:

- `nested` (the default, as every kstat version wrote it): a line per interval holding its
  delta (`kstat.sink.interval_to_dict`: the report's field names, programs keyed by name in
  `program_stats`, each with the kernel's absolute counters); the last line is the report.
- `records`: flat lines with one fixed set of keys (`kstat.sink.RECORD_KEYS`), a line per
  program and one for the totals, for log stores that index every key they meet.

Every interval's lines are written whole with one write and flushed, so `tail -f`, `jq` and log
shippers see them at once. Files are opened for appending, as log files are (`kstat.sink.LineStream`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

from kstat import sink

LAYOUTS: Final = ("nested", "records")


class NdjsonSink:
    """The NDJSON format (`kstat.formats.ndjson`, `kstat.formats.records`) over whole lines
    appended to a file or written to standard output (`kstat.sink.LineStream`)."""

    def __init__(self, path: Path | None, layout: str = "nested") -> None:
        """`path` None means standard output; `layout` one of LAYOUTS."""
        if layout not in LAYOUTS:
            raise sink.UsageError(f"unknown layout {layout!r}: expected {' or '.join(LAYOUTS)}")
        self.path = path
        self.layout = layout
        # The node, for records (from the window's start).
        self._host_name: str | None = None
        # Not through a link another user planted, nor into a disk or another file's hard
        # link; a FIFO that no one reads is refused, not waited for.
        self._stream = sink.LineStream(path, what=repr(self))

    def __repr__(self) -> str:
        where = sink.shown(self.path) if self.path is not None else "-"
        return f"ndjson:{where}" + ("" if self.layout == "nested" else f"?layout={self.layout}")

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        try:
            async for event in events:
                if isinstance(event, sink.WindowStarted):
                    # The programs there from the start, once each, with their footprint.
                    await trio.to_thread.run_sync(self._write_start, event)
                elif isinstance(event, sink.IntervalEnded):
                    # The line's size follows the programs that did something; encoding it and
                    # the write (which may block on a slow reader) go off the event loop.
                    await trio.to_thread.run_sync(self._write_interval, event)
                elif isinstance(event, sink.WindowEnded):
                    await trio.to_thread.run_sync(self._write_summary, event.report)
                elif isinstance(event, sink.ReopenFiles):
                    await trio.to_thread.run_sync(self._stream.reopen)
        finally:
            self._stream.close()

    def _write_start(self, event: sink.WindowStarted) -> None:
        self._host_name = event.node
        if self.layout == "records":
            self._write_lines(sink.start_records(event))
        else:
            self._write_lines(sink.start_to_dicts(event))

    def _write_interval(self, event: sink.IntervalEnded) -> None:
        if self.layout == "records":
            self._write_lines(sink.interval_records(event, self._host_name))
        else:
            self._stream.write(sink.json_line(sink.interval_to_dict(event)))

    def _write_summary(self, report: sink.Report) -> None:
        if self.layout == "records":
            self._write_lines(sink.summary_records(report, report.node or self._host_name))
        else:
            self._stream.write_pieces(sink.summary_line(report))

    def _write_lines(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """Whole lines, a batch to a write: 10,000 programs' lines are never held at once."""
        made = iter(lines)
        while batch := b"".join(sink.json_line(line) for line in itertools.islice(made, _LINES_A_WRITE)):
            self._stream.write(batch)


# Lines made and written at a time.
_LINES_A_WRITE: Final = 256


def from_spec(argument: str | None) -> NdjsonSink:
    """`PATH`, `-`, or either with `?layout=nested|records`."""
    where, options = sink.split_options(argument or "")
    if not where:
        raise sink.UsageError("ndjson needs a path, or - for standard output (ndjson:PATH, ndjson:-)")
    unknown = sorted(options.keys() - {"layout"})
    if unknown:
        raise sink.UsageError(f"unknown option {unknown[0]!r}: ndjson takes ?layout=nested|records")
    return NdjsonSink(None if where == "-" else Path(where), options.get("layout", "nested"))
