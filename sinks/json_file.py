"""`json:PATH` (and the seed's `-output PATH`): the report as one JSON file, written atomically.

A report that cannot be written where asked (a full disk, a FIFO nobody reads before the
deadline) is not lost: it goes to a file in the temporary directory, and the error says where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import trio

from kstat import sink

log = sink.get_logger(__name__)

# How often to look for a reader of a FIFO (it cannot be waited for by a blocking open).
_FIFO_POLL_S: Final = 0.1


class JsonFileSink:
    def __init__(self, path: Path) -> None:
        # Before the window: an unwritable path must not cost the user a whole collection.
        sink.check_writable(path)
        self.path = path

    def __repr__(self) -> str:
        return f"json:{sink.shown(self.path)}"

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        report = await sink.final_report(events)
        if report is None:
            return
        try:
            await self._deliver(report)
        except sink.OutputError as error:
            raise sink.SinkError(f"{error}; {await self._fall_back(report)}") from None
        except trio.Cancelled:
            # Out of time (the sinks' deadline, or a second Ctrl-C): the report still goes
            # somewhere safe, and the failure says where.
            raise sink.SinkError(f"not written in time; {await self._fall_back(report)}") from None
        log.info("report written", path=str(self.path), programs=report.num_programs)

    async def _deliver(self, report: sink.Report) -> None:
        if not sink.is_fifo(self.path):
            # Encoded as it is written, on a worker thread: at 10,000 programs the report is
            # 12 MB of JSON, never held whole (a second of Python before the C encoder).
            await trio.to_thread.run_sync(sink.write_atomically, self.path, sink.report_json_chunks(report))
            return
        fd = sink.open_fifo_without_waiting(self.path)
        if fd is None:
            log.warning("waiting for a reader of the FIFO", path=str(self.path))
        while fd is None:
            await trio.sleep(_FIFO_POLL_S)
            fd = sink.open_fifo_without_waiting(self.path)
        # A reader that stops reading must not hold kstat: the thread is left behind on cancel
        # (with what it was given: its own pieces, which the fallback does not share).
        await trio.to_thread.run_sync(
            sink.write_fd, fd, sink.report_json_chunks(report), self.path, abandon_on_cancel=True
        )

    async def _fall_back(self, report: sink.Report) -> str:
        with trio.CancelScope(shield=True):
            try:
                fallback = await trio.to_thread.run_sync(
                    sink.write_fallback, sink.report_json_chunks(report), "report"
                )
            except sink.OutputError as error:
                return f"nor could it be kept elsewhere ({error})"
        log.warning("report written to a fallback file", path=str(fallback))
        return f"the report was written to {fallback} instead"


def from_spec(argument: str | None) -> JsonFileSink:
    if not argument:
        raise sink.UsageError("json needs a path (json:PATH)")
    return JsonFileSink(Path(argument))
