"""kstat: what loaded eBPF programs cost inside the kernel, measured with the kernel's own stats."""

from __future__ import annotations

from kstat.api import (
    Session,
    SyncSession,
    collect,
    collect_sync,
    load_report,
    read_programs,
    save_report,
)
from kstat.budget import BudgetExceeded, ProgramBudget, expect_program
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
    "BudgetExceeded",
    "KstatError",
    "OutputClosed",
    "OutputError",
    "PermissionDenied",
    "ProgramBudget",
    "ProgramReport",
    "ProgramStats",
    "Report",
    "Session",
    "Sink",
    "SinkError",
    "Snapshot",
    "SyncSession",
    "UnsupportedKernel",
    "UsageError",
    "__version__",
    "collect",
    "collect_sync",
    "expect_program",
    "interval_report",
    "load_report",
    "read_programs",
    "save_report",
]
