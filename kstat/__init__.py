"""kstat: what loaded eBPF programs cost inside the kernel, measured with the kernel's own stats.

The library's public names are the imports in the `TYPE_CHECKING` block below, each listed
once. At run time each is imported on first use (PEP 562): `import kstat` stays cheap, because
the command line must take over Ctrl-C before anything slow is imported.

Writing a sink: `kstat.sink`. Testing helpers (loader, budgets, the pytest plugin): `kstat.testing`.
"""

from __future__ import annotations

from kstat import _legacy_sinks
from kstat._lazy import LazyNames

# Not `typing.TYPE_CHECKING`: importing typing (and re with it) costs the launch milliseconds.
TYPE_CHECKING = False

_legacy_sinks.install()

if TYPE_CHECKING:
    from kstat._version import __version__ as __version__
    from kstat.api import IntervalStream as IntervalStream
    from kstat.api import Session as Session
    from kstat.api import SyncSession as SyncSession
    from kstat.api import collect as collect
    from kstat.api import collect_sync as collect_sync
    from kstat.api import read_programs as read_programs
    from kstat.api import stream as stream
    from kstat.core.catalogue import METRICS as METRICS
    from kstat.core.catalogue import Metric as Metric
    from kstat.core.events import Event as Event
    from kstat.core.events import IntervalEnded as IntervalEnded
    from kstat.core.events import Sink as Sink
    from kstat.core.events import WindowEnded as WindowEnded
    from kstat.core.events import WindowStarted as WindowStarted
    from kstat.core.filters import ProgramFilter as ProgramFilter
    from kstat.core.model import ProgramStats as ProgramStats
    from kstat.core.model import Snapshot as Snapshot
    from kstat.core.report import ProgramReport as ProgramReport
    from kstat.core.report import Report as Report
    from kstat.errors import BpfError as BpfError
    from kstat.errors import KstatError as KstatError
    from kstat.errors import OutputClosed as OutputClosed
    from kstat.errors import OutputError as OutputError
    from kstat.errors import PermissionDenied as PermissionDenied
    from kstat.errors import SinkError as SinkError
    from kstat.errors import UnsupportedKernel as UnsupportedKernel
    from kstat.errors import UsageError as UsageError
    from kstat.formats.report_json import ReportFormatError as ReportFormatError
    from kstat.formats.report_json import report_from_dict as report_from_dict
    from kstat.formats.report_json import report_to_dict as report_to_dict
    from kstat.report_files import load_report as load_report
    from kstat.report_files import save_report as save_report
    from kstat.testing.budget import BudgetExceeded as BudgetExceeded
    from kstat.testing.budget import ProgramBudget as ProgramBudget
    from kstat.testing.budget import expect_program as expect_program


if TYPE_CHECKING:  # apart from the block above, which lists only public names
    from typing import Any


_public = LazyNames(__name__)


def __getattr__(name: str) -> Any:
    return _public.get(name)


def __dir__() -> list[str]:
    return _public.listed()
