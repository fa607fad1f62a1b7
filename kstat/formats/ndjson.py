"""The NDJSON stream's nested lines (`ndjson:PATH`, the default layout): one JSON object a line.

`{"kind": "program"}` for each program at the window's start, `{"kind": "interval"}` per
interval (the programs that did something, with the report's field names), and the report last
as `{"kind": "summary"}`. The flat one-record-per-line layout is `kstat.formats.records`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import Any, Final

import orjson

from kstat.core.counters import COUNTERS
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.report import Report, report_keys
from kstat.core.timestamps import format_timestamp
from kstat.formats.program_json import footprint_to_dict, owner_to_dict
from kstat.formats.report_json import LineEncoder, report_line_chunks, report_to_dict, totals_to_dict


def interval_to_dict(event: IntervalEnded) -> dict[str, Any]:
    """An NDJSON interval line: the interval's delta with the report's field names.

    `program_stats` holds the programs that did something in the interval (runs, runtime,
    recursion misses, a load or an unload), each with `counters`, the kernel's absolute
    counters at the interval's end (none for a program gone by then); the others are counted
    in `idle_programs`. Their deltas are zero, so the intervals still add up to the report.
    """
    delta = event.delta
    program_stats: dict[str, Any] = {}
    # Each line from the delta's sighting and figures, by the report's own encoder: no
    # `ProgramReport` is made for NDJSON, and its lines and the report's never differ in shape.
    encode = LineEncoder().row
    for key in delta.figures:
        change = delta.active[key]
        data = encode(delta.line_row(key))
        if not change.unloaded:
            # Named as the kernel names them (`run_cnt`); a counter this kernel lacks is null.
            # Per-CPU splits are the line's `per_cpu` (their growth), not absolute vectors here.
            data["counters"] = dict(zip(_COUNTER_KEYS, _scalar_counters(change.last.counters), strict=True))
        program_stats[key] = data
    end_time = format_timestamp(delta.end_wall_time_ns)
    return {
        "kind": "interval",
        "sequence": delta.sequence,
        "timestamp": end_time,
        "start_time": format_timestamp(delta.start_wall_time_ns),
        "end_time": end_time,
        "elapsed_ns": delta.elapsed_ns,
        "skipped_snapshots": delta.skipped_snapshots,
        "idle_programs": delta.idle_programs,
        "program_stats": program_stats,
        **totals_to_dict(delta.totals),
        "num_programs": delta.program_count,
    }


# The scalar counters' kernel names (NDJSON's `counters` keys) and places in `Counters` (runs
# and run time at least: two or more, so that the getter gives a tuple).
_SCALAR_COUNTERS: Final = tuple(index for index, spec in enumerate(COUNTERS) if not spec.per_cpu)
_COUNTER_KEYS: Final = tuple(COUNTERS[index].kernel_name for index in _SCALAR_COUNTERS)
_scalar_counters: Final = itemgetter(*_SCALAR_COUNTERS)


def start_to_dicts(event: WindowStarted) -> Iterator[dict[str, Any]]:
    """NDJSON lines for the window's start: one `{"kind": "program"}` per program loaded then,
    with who it is and its footprint (code size, verifier work, memory, maps), said once; made
    as they are written (at 10,000 programs, made whole, they were a window's peak).

    A program first met later says the same in its first interval line.
    """
    snapshot = event.snapshot
    programs = snapshot.programs
    timestamp = format_timestamp(snapshot.wall_time_ns)
    for key, program in zip(report_keys(programs), programs, strict=True):
        details = program.details
        data: dict[str, Any] = {
            "kind": "program",
            "timestamp": timestamp,
            "key": key,
            "name": program.name,
            "type": program.type,
            "id": program.id,
            "tag": program.tag,
            "load_time_ns": program.load_time_ns,
            "kernel_name": program.kernel_name,
            **footprint_to_dict(program.footprint),
        }
        data["owners"] = [owner_to_dict(owner) for owner in details.owners]
        data["attachments"] = list(details.attachments)
        yield data


def summary_to_dict(report: Report) -> dict[str, Any]:
    """An NDJSON stream's last line: the window's report."""
    return {"kind": "summary", **report_to_dict(report)}


def summary_line(report: Report) -> Iterator[bytes]:
    """`summary_to_dict` as its NDJSON line, in pieces, encoded a batch of programs at a time: at
    10,000 programs the line is 10 MB, and the report's objects made whole for it were five
    times that (the peak of a window with NDJSON)."""
    yield from report_line_chunks(report, {"kind": "summary"})
    yield b"\n"


def json_line(data: Mapping[str, Any]) -> bytes:
    """Compact JSON and a newline: one NDJSON line, ready for a single write (by a C encoder:
    at thousands of busy programs an interval is thousands of lines)."""
    return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
