"""`ndjson:PATH` and `ndjson:-`: one JSON object per line, as each interval ends.

Two layouts, chosen with `?layout=` after the path:

- `nested` (the default, as every kstat version wrote it): a line per interval holding its
  delta (`kstat.sink.interval_to_dict`: the report's field names, programs keyed by name in
  `program_stats`, each with the kernel's absolute counters); the last line is the report.
- `records`: flat lines with one fixed set of keys (`kstat.sink.RECORD_KEYS`), a line per
  program and one for the totals, for log stores that index every key they meet.

Every interval's lines are written whole with one write and flushed, so `tail -f`, `jq` and log
shippers see them at once. Files are opened for appending, as log files are.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import trio

from kstat import sink

log = sink.get_logger(__name__)


LAYOUTS: Final = ("nested", "records")


class NdjsonSink:
    def __init__(self, path: Path | None, layout: str = "nested") -> None:
        """`path` None means standard output; `layout` one of LAYOUTS."""
        if layout not in LAYOUTS:
            raise sink.UsageError(f"unknown layout {layout!r}: expected {' or '.join(LAYOUTS)}")
        self.path = path
        self.layout = layout
        # The node, for records (from the window's start).
        self._host_name: str | None = None
        self._stream: BinaryIO | None = None
        if path is None:
            sink.require_stdout()
        else:
            sink.check_writable(path)
            # Not through a link another user planted, nor into a disk or another file's
            # hard link; a FIFO that no one reads is refused, not waited for.
            self._stream = sink.open_for_append(path)
            try:
                _terminate_a_partial_line(self._stream, path)
            except OSError as error:
                self._stream.close()
                raise sink.OutputError(f"cannot write {sink.shown(path)}: {error.strerror}") from None

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
                elif isinstance(event, sink.ReopenFiles) and self.path is not None:
                    await trio.to_thread.run_sync(self._reopen)
        finally:
            if self._stream is not None:
                self._stream.close()

    def _reopen(self) -> None:
        """After a rotation: the old name now holds what was written; a new file takes the rest."""
        assert self.path is not None and self._stream is not None
        # What is at the name now is whatever the rotation (or someone else) put there: it is
        # opened as carefully as the first time.
        stream = sink.open_for_append(self.path, verb="reopen")
        self._stream.close()
        self._stream = stream
        log.info("reopened", path=str(self.path))

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
            self._write(sink.json_line(sink.interval_to_dict(event)))

    def _write_summary(self, report: sink.Report) -> None:
        if self.layout == "records":
            self._write_lines(sink.summary_records(report, report.node or self._host_name))
        else:
            self._write(sink.json_line(sink.summary_to_dict(report)))

    def _write_lines(self, lines: Sequence[Mapping[str, Any]]) -> None:
        if lines:
            self._write(b"".join(sink.json_line(line) for line in lines))

    def _write(self, data: bytes) -> None:
        if self._stream is None:
            sink.write_stdout(data, what=repr(self))
            return
        stream = self._stream
        # What the file holds before these lines: cut back to it if they cannot all be written
        # (a full disk), so that no reader, and no later run appending, meets half a line.
        whole_lines_end = os.fstat(stream.fileno()).st_size if stream.seekable() else None
        try:
            # One write for the whole line (O_APPEND keeps concurrent writers' lines whole); the
            # loop only matters for a pipe or FIFO that takes part of it.
            view = memoryview(data)
            while view:
                view = view[stream.write(view) or 0 :]
        except OSError as error:
            if whole_lines_end is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(stream.fileno(), whole_lines_end)
            if error.errno == errno.EPIPE:
                raise sink.OutputClosed("the reader closed the stream") from None
            # The failure is reported under the sink's name: no need to say it twice.
            raise sink.OutputError(f"cannot write: {error.strerror}") from None


def _terminate_a_partial_line(stream: BinaryIO, path: Path) -> None:
    """A file whose last line was cut short (by an older kstat, or a crash mid-write) is ended
    with a newline before anything is appended, so that two records are never glued."""
    if not stream.seekable():
        return
    size = os.fstat(stream.fileno()).st_size
    if size == 0:
        return
    # Through the fd kstat appends to: the path could lead elsewhere by now.
    if os.pread(stream.fileno(), 1, size - 1) == b"\n":
        return
    stream.write(b"\n")
    log.warning("the file ended in a partial line; terminated it before appending", path=str(path))


def from_spec(argument: str | None) -> NdjsonSink:
    """`PATH`, `-`, or either with `?layout=nested|records`."""
    where, options = sink.split_options(argument or "")
    if not where:
        raise sink.UsageError("ndjson needs a path, or - for standard output (ndjson:PATH, ndjson:-)")
    unknown = sorted(options.keys() - {"layout"})
    if unknown:
        raise sink.UsageError(f"unknown option {unknown[0]!r}: ndjson takes ?layout=nested|records")
    return NdjsonSink(None if where == "-" else Path(where), options.get("layout", "nested"))
