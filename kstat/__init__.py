"""kstat: what loaded eBPF programs cost inside the kernel, measured with the kernel's own stats."""

from __future__ import annotations

from kstat.errors import (
    BpfError,
    KstatError,
    OutputClosed,
    OutputError,
    PermissionDenied,
    SinkError,
    UnsupportedKernel,
    UsageError,
)
from kstat.model import ProgramStats, Snapshot
from kstat.report import ProgramReport, Report
from kstat.sink import Sink
from kstat.summary import interval_report

__version__ = "0.1.0"

__all__ = [
    "BpfError",
    "KstatError",
    "OutputClosed",
    "OutputError",
    "PermissionDenied",
    "ProgramReport",
    "ProgramStats",
    "Report",
    "Sink",
    "SinkError",
    "Snapshot",
    "UnsupportedKernel",
    "UsageError",
    "__version__",
    "interval_report",
]
