"""`stdout`: the report as indented JSON on standard output (the seed's default)."""

from __future__ import annotations

import sys

import trio

from kstat._serialize import report_to_json
from kstat.errors import OutputError
from kstat.model import Snapshot
from kstat.report import Report
from kstat.sink import drain


class StdoutSink:
    def __repr__(self) -> str:
        return "stdout"

    async def consume(self, snapshots: trio.MemoryReceiveChannel[Snapshot]) -> None:
        await drain(snapshots)

    async def finish(self, report: Report) -> None:
        data = report_to_json(report).encode()
        try:
            await trio.to_thread.run_sync(_write_stdout, data)
        except BrokenPipeError:
            raise OutputError("standard output was closed before the report was written") from None


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
