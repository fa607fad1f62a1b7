"""One program's owners and footprint as JSON values: what the report and `kstat list` write of
them alike, kept apart from the report's encoder so that a listing imports no report code."""

from __future__ import annotations

from typing import Any, Final

import attrs

from kstat.core.catalogue import METRICS, Kind, Span
from kstat.core.counters import ZERO
from kstat.core.model import ProgramFootprint, ProgramOwner, Workload

# Where an owner runs, flattened into its object (each field only when known).
WORKLOAD_FIELDS: Final = tuple(attribute.name for attribute in attrs.fields(Workload))
# The catalogue's property metrics: what is known of a program's footprint, in its order.
_PROPERTIES: Final = tuple(metric for metric in METRICS if metric.kind is Kind.PROPERTY)


def owner_to_dict(owner: ProgramOwner) -> dict[str, Any]:
    """`{"pid", "command"}` and, where known, the owner's container, pod and unit."""
    data: dict[str, Any] = {"pid": owner.pid, "command": owner.command}
    for name in WORKLOAD_FIELDS:
        value = getattr(owner.workload, name)
        if value is not None:
            data[name] = value
    return data


def footprint_to_dict(footprint: ProgramFootprint | None) -> dict[str, Any]:
    """A program's footprint as the catalogue's property metrics, and its map ids: what is known
    (nothing without a footprint; no verifier count on a kernel older than 5.16)."""
    if footprint is None:
        return {}
    span = Span(ZERO, 0, None, footprint)
    data: dict[str, Any] = {}
    for metric in _PROPERTIES:
        value = metric.compute(span)
        if value is not None:
            data[metric.name] = value
    data["map_ids"] = list(footprint.map_ids)
    return data
