"""Reports to and from JSON: one cattrs converter, the only place that knows the wire shape."""

from __future__ import annotations

import json
from typing import Any

import cattrs

from kstat.report import Report

_converter = cattrs.Converter(forbid_extra_keys=False)


def report_to_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data, fields in the seed's order, programs by key."""
    data: dict[str, Any] = _converter.unstructure(report)
    return data


def report_from_dict(data: dict[str, Any]) -> Report:
    """A report loaded back from `report_to_dict`'s output (unknown extra keys are ignored)."""
    return _converter.structure(data, Report)


def report_to_json(report: Report) -> str:
    """Indented JSON with a final newline, as the seed's MarshalIndent printed it."""
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"
