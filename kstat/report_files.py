"""Report files: read whatever kstat (any version) or the Go tool wrote, write them whole.

Apart from the library's collecting API so that the commands which only read reports
(`compare`, `history`, `plot`) load neither trio nor the kernel side.
"""

from __future__ import annotations

from pathlib import Path

from kstat._atomic import shown, write_atomically
from kstat._bounded import read_bounded, read_last_line
from kstat.core.report import Report
from kstat.formats.bounded_json import parse_json
from kstat.formats.report_json import (
    ReportFormatError,
    report_from_dict,
    report_from_json,
    report_to_json_bytes,
)


def load_report(path: str | Path) -> Report:
    """A report that kstat (any version) or the Go collect-kernel-stats tool saved.

    An NDJSON stream (`ndjson:` sink) is read through its last line, the window's report.
    Raises ReportFormatError with one line naming the file and what is wrong with it.
    """
    path = Path(path)
    # Bounded (kstat._bounded): a regular file, of at most MAX_INPUT_BYTES; a stream is read
    # from its end, for its last line only.
    if path.suffix == ".ndjson":
        last_line = read_last_line(path, "a report", ReportFormatError)
    else:
        text = read_bounded(path, "a report", ReportFormatError)
    try:
        if path.suffix == ".ndjson":
            return _stream_report(last_line)
        return report_from_json(text)
    except ReportFormatError as error:
        raise ReportFormatError(f"{shown(path)} is not a report: {error}") from None


def _stream_report(last_line: str | None) -> Report:
    if last_line is None:
        raise ReportFormatError("the stream is empty")
    try:
        last = parse_json(last_line, ReportFormatError)
    except ReportFormatError as error:
        raise ReportFormatError(f"its last line: {error}") from None
    if not isinstance(last, dict) or last.get("kind") != "summary":
        raise ReportFormatError("the stream has no summary line (it was cut short before its window ended)")
    return report_from_dict(last)


def save_report(report: Report, path: str | Path) -> None:
    """Write a report as JSON, atomically (temp file and rename)."""
    write_atomically(Path(path), report_to_json_bytes(report))
