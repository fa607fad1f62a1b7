"""`stdout`: the report as indented JSON on standard output (the seed's default)."""

from __future__ import annotations

import os
import sys

import trio

from kstat._serialize import report_to_json
from kstat.errors import OutputClosed, OutputError, UsageError
from kstat.model import Snapshot
from kstat.report import Report
from kstat.sink import drain


class StdoutSink:
    def __init__(self) -> None:
        require_stdout()

    def __repr__(self) -> str:
        return "stdout"

    async def consume(self, snapshots: trio.MemoryReceiveChannel[Snapshot]) -> None:
        await drain(snapshots)

    async def finish(self, report: Report) -> None:
        data = report_to_json(report).encode()
        await trio.to_thread.run_sync(_write_stdout, data)


def _write_stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosed("stdout: the reader closed the stream before the report") from None
    except OSError as error:
        raise OutputError(f"cannot write the report to standard output: {error.strerror}") from None


def require_stdout() -> None:
    """Fail before the window when there is no standard output to write to (`>&-`)."""
    if sys.stdout is None:
        raise OutputError("standard output is closed; write to a file instead (-o FILE, ndjson:PATH)")


def silence_stdout() -> None:
    """Point fd 1 at /dev/null once its reader has gone.

    Python flushes stdout again at exit; without this, that flush raises a second
    BrokenPipeError after kstat has already ended cleanly.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def from_spec(argument: str | None) -> StdoutSink:
    if argument:
        raise UsageError("stdout takes no argument")
    return StdoutSink()
