"""`json:PATH` (and the seed's `-output PATH`): the report as one JSON file, written atomically."""

from __future__ import annotations

from pathlib import Path

import structlog
import trio

from kstat._atomic import check_writable, write_atomically
from kstat._serialize import report_to_json
from kstat.errors import UsageError
from kstat.model import Snapshot
from kstat.report import Report
from kstat.sink import drain

log = structlog.get_logger(__name__)


class JsonFileSink:
    def __init__(self, path: Path) -> None:
        # Before the window: an unwritable path must not cost the user a whole collection.
        check_writable(path)
        self.path = path

    def __repr__(self) -> str:
        return f"json:{self.path}"

    async def consume(self, snapshots: trio.MemoryReceiveChannel[Snapshot]) -> None:
        await drain(snapshots)

    async def finish(self, report: Report) -> None:
        data = report_to_json(report).encode()
        await trio.to_thread.run_sync(write_atomically, self.path, data)
        log.info("report written", path=str(self.path), programs=report.num_programs)


def from_spec(argument: str | None) -> JsonFileSink:
    if not argument:
        raise UsageError("json needs a path (json:PATH)")
    return JsonFileSink(Path(argument))
