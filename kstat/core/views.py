"""Where a figure is shown and how it is named there: the words both catalogues declare with.

The metric catalogue (`kstat.core.catalogue`) and the counter catalogue (`kstat.core.counters`)
both say, for each of their entries, which views show it, which way a change is better, how
Prometheus names it and (for a counter) whether `kstat top` gives it a column. They are
declared here, below both, so that a counter's entry can say all of it and its metric is made
from that entry alone.
"""

from __future__ import annotations

import enum

from attrs import frozen


class Better(enum.Enum):
    """Which way a change is an improvement (how compare and charts colour it)."""

    LOWER = "lower"
    HIGHER = "higher"
    NEITHER = "neither"


class View(enum.Flag):
    """Where a metric shows besides the report, NDJSON and `--fail-on` (which carry all)."""

    NONE = 0
    COMPARE = enum.auto()  # a column of `kstat compare`
    CHART = enum.auto()  # a panel of `kstat plot`
    SUMMARY = enum.auto()  # the pytest plugin's failure summary
    EXPORT = enum.auto()  # sent to metrics systems (StatsD, Prometheus)
    # The panels of `kstat plot`'s other charts.
    PROGRAM = enum.auto()  # program metadata: code size, verifier work, maps
    MEMORY = enum.auto()  # memory footprint


@frozen
class Exposition:
    """How a metric is named in Prometheus: base units (seconds, not nanoseconds), `_total` on
    counters added by the exposition itself."""

    name: str
    # Divides kstat's value into the base unit (1e9: nanoseconds to seconds).
    divisor: int = 1
    # The HELP line.
    help: str = ""


@frozen
class TopColumn:
    """A counter's column in `kstat top`'s table: its growth since `kstat top` started."""

    # The column's key (what the table sorts by) and heading.
    key: str
    heading: str
    # Narrow terminals drop columns, lowest priority first.
    priority: int = 1
    # Cells, heading included.
    width: int = 11
