"""Report files: read whatever kstat (any version) or the Go tool wrote, write them whole.

Apart from the library's collecting API so that the commands which only read reports
(`compare`, `history`, `plot`) load neither trio nor the kernel side.
"""

from __future__ import annotations

import json
from pathlib import Path

from kstat._atomic import read_text, shown, write_atomically
from kstat.core.report import Report
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
    text = read_text(path, "a report", ReportFormatError)
    try:
        if path.suffix == ".ndjson":
            return _stream_report(text)
        return report_from_json(text)
    except ReportFormatError as error:
        raise ReportFormatError(f"{shown(path)} is not a report: {error}") from None


def _stream_report(text: str) -> Report:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ReportFormatError("the stream is empty")
    try:
        last = json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise ReportFormatError(f"its last line is not JSON: {error.msg}, column {error.colno}") from None
    if not isinstance(last, dict) or last.get("kind") != "summary":
        raise ReportFormatError("the stream has no summary line (it was cut short before its window ended)")
    return report_from_dict(last)


def save_report(report: Report, path: str | Path) -> None:
    """Write a report as JSON, atomically (temp file and rename)."""
    write_atomically(Path(path), report_to_json_bytes(report))
