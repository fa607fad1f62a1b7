"""`json:PATH` (and the seed's `-output PATH`): the report as one JSON file, written atomically."""

from __future__ import annotations

from pathlib import Path

import trio

from kstat import sink

log = sink.get_logger(__name__)


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
        data = sink.report_to_json(report).encode()
        await trio.to_thread.run_sync(sink.write_atomically, self.path, data)
        log.info("report written", path=str(self.path), programs=report.num_programs)


def from_spec(argument: str | None) -> JsonFileSink:
    if not argument:
        raise sink.UsageError("json needs a path (json:PATH)")
    return JsonFileSink(Path(argument))
