"""`ndjson:PATH` and `ndjson:-`: one JSON object per line, as each interval ends.

Each interval line holds the per-program deltas of that interval (the report's field names)
and each program's absolute kernel counters; the last line is the window's report. Every line
is written whole with one write and flushed, so `tail -f`, `jq` and log shippers see it at once.
Files are opened for appending, as log files are.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

import structlog
import trio
from attrs import evolve

from kstat._atomic import check_writable
from kstat._serialize import report_to_dict
from kstat.errors import OutputClosed, OutputError, UsageError
from kstat.host import online_cpu_count
from kstat.model import Snapshot
from kstat.report import ProgramReport, Report
from kstat.summary import interval_report
from sinks.stdout import require_stdout, silence_stdout

log = structlog.get_logger(__name__)

_INTERVAL_FIELDS = (
    "total_runtime_ns",
    "total_run_count",
    "total_events_per_sec",
    "total_estimated_cpu_percent",
    "total_recursion_misses",
    "total_estimated_cpu_percent_of_all_cpus",
    "num_programs",
)


def interval_line(
    previous: Snapshot, current: Snapshot, skipped_snapshots: int, online_cpus: int
) -> dict[str, Any]:
    """The NDJSON object for the interval from `previous` to `current`.

    Programs that did nothing in the interval (no runs, no runtime, no recursion misses, not
    loaded or unloaded in it) are left out of `program_stats` and counted in `idle_programs`:
    on a host with hundreds of mostly idle programs, each line stays small and cheap to
    ship. Their deltas are zero, so the intervals still add up to the report.
    """
    report = interval_report(previous, current, online_cpus)
    active = {key: line for key, line in report.program_stats.items() if not _idle(line)}
    data = report_to_dict(evolve(report, program_stats=active))
    # Keyed like the report's lines (id and load time); a program gone by `current` has none.
    counters = {(program.id, program.load_time_ns): program for program in current.programs}
    for line in data["program_stats"].values():
        absolute = counters.get((line["id"], line["load_time_ns"]))
        if absolute is not None:
            line["counters"] = {
                "run_time_ns": absolute.run_time_ns,
                "run_cnt": absolute.run_count,
                "recursion_misses": absolute.recursion_misses,
            }
    return {
        "kind": "interval",
        "sequence": current.sequence,
        "timestamp": data["timestamp"],
        "start_time": data["start_time"],
        "end_time": data["end_time"],
        "elapsed_ns": data["collection_duration_ns"],
        "skipped_snapshots": skipped_snapshots,
        "idle_programs": report.num_programs - len(active),
        "program_stats": data["program_stats"],
        **{field: data[field] for field in _INTERVAL_FIELDS},
    }


def _idle(line: ProgramReport) -> bool:
    return (
        line.run_count == 0
        and line.runtime_ns == 0
        and line.recursion_misses == 0
        and not line.loaded_during_window
        and not line.unloaded_during_window
    )


def encode_line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class NdjsonSink:
    def __init__(self, path: Path | None) -> None:
        """`path` None means standard output."""
        self.path = path
        self._stream: BinaryIO
        if path is None:
            require_stdout()
            self._stream = sys.stdout.buffer
        else:
            check_writable(path)
            try:
                self._stream = path.open("ab", buffering=0)
            except OSError as error:
                raise OutputError(f"cannot write {path}: {error.strerror}") from None
        self._online_cpus = online_cpu_count()

    def __repr__(self) -> str:
        return f"ndjson:{self.path if self.path is not None else '-'}"

    async def consume(self, snapshots: trio.MemoryReceiveChannel[Snapshot]) -> None:
        previous: Snapshot | None = None
        async for snapshot in snapshots:
            if previous is not None:
                skipped = snapshot.sequence - previous.sequence - 1
                # Building the line is O(programs) and the write may block on a slow reader:
                # both off the event loop.
                await trio.to_thread.run_sync(self._write_interval, previous, snapshot, skipped)
            previous = snapshot

    async def finish(self, report: Report) -> None:
        try:
            await trio.to_thread.run_sync(
                self._write, encode_line({"kind": "summary", **report_to_dict(report)})
            )
        finally:
            if self.path is not None:
                self._stream.close()

    def _write_interval(self, previous: Snapshot, current: Snapshot, skipped: int) -> None:
        self._write(encode_line(interval_line(previous, current, skipped, self._online_cpus)))

    def _write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
            self._stream.flush()
        except BrokenPipeError:
            if self.path is None:
                silence_stdout()
            raise OutputClosed(f"{self!r}: the reader closed the stream") from None
        except OSError as error:
            if error.errno == errno.EPIPE:
                raise OutputClosed(f"{self!r}: the reader closed the stream") from None
            raise OutputError(f"cannot write {self!r}: {error.strerror}") from None


def from_spec(argument: str | None) -> NdjsonSink:
    if not argument:
        raise UsageError("ndjson needs a path, or - for standard output (ndjson:PATH, ndjson:-)")
    return NdjsonSink(None if argument == "-" else Path(argument))
