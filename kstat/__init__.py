"""kstat: what loaded eBPF programs cost inside the kernel, measured with the kernel's own stats.

The public API is imported lazily (PEP 562): `import kstat` stays cheap for the command line,
whose first job is to take over Ctrl-C before anything slow happens.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    # Explicit re-exports (`X as X`) for type checkers; at run time __getattr__ imports them.
    from kstat.api import Session as Session
    from kstat.api import SyncSession as SyncSession
    from kstat.api import collect as collect
    from kstat.api import collect_sync as collect_sync
    from kstat.api import load_report as load_report
    from kstat.api import read_programs as read_programs
    from kstat.api import save_report as save_report
    from kstat.budget import BudgetExceeded as BudgetExceeded
    from kstat.budget import ProgramBudget as ProgramBudget
    from kstat.budget import expect_program as expect_program
    from kstat.errors import BpfError as BpfError
    from kstat.errors import KstatError as KstatError
    from kstat.errors import OutputClosed as OutputClosed
    from kstat.errors import OutputError as OutputError
    from kstat.errors import PermissionDenied as PermissionDenied
    from kstat.errors import SinkError as SinkError
    from kstat.errors import UnsupportedKernel as UnsupportedKernel
    from kstat.errors import UsageError as UsageError
    from kstat.filters import ProgramFilter as ProgramFilter
    from kstat.model import ProgramStats as ProgramStats
    from kstat.model import Snapshot as Snapshot
    from kstat.report import ProgramReport as ProgramReport
    from kstat.report import Report as Report
    from kstat.sink import Sink as Sink
    from kstat.summary import interval_report as interval_report

_PUBLIC = {
    "kstat.api": (
        "Session",
        "SyncSession",
        "collect",
        "collect_sync",
        "load_report",
        "read_programs",
        "save_report",
    ),
    "kstat.budget": ("BudgetExceeded", "ProgramBudget", "expect_program"),
    "kstat.errors": (
        "BpfError",
        "KstatError",
        "OutputClosed",
        "OutputError",
        "PermissionDenied",
        "SinkError",
        "UnsupportedKernel",
        "UsageError",
    ),
    "kstat.filters": ("ProgramFilter",),
    "kstat.model": ("ProgramStats", "Snapshot"),
    "kstat.report": ("ProgramReport", "Report"),
    "kstat.sink": ("Sink",),
    "kstat.summary": ("interval_report",),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = [
    "BpfError",
    "BudgetExceeded",
    "KstatError",
    "OutputClosed",
    "OutputError",
    "PermissionDenied",
    "ProgramBudget",
    "ProgramFilter",
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


def __getattr__(name: str) -> Any:
    try:
        module = _MODULE_OF[name]
    except KeyError:
        raise AttributeError(f"module 'kstat' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
