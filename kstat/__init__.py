"""kstat: what loaded eBPF programs cost inside the kernel, measured with the kernel's own stats.

The library's public names are the imports in the `TYPE_CHECKING` block below, each listed
once. At run time each is imported on first use (PEP 562): `import kstat` stays cheap, because
the command line must take over Ctrl-C before anything slow is imported.

Writing a sink: `kstat.sink`. Testing helpers (loader, budgets, the pytest plugin): `kstat.testing`.
"""

from __future__ import annotations

from kstat import _legacy_sinks

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


_names: dict[str, tuple[str, str]] = {}


def _public_names() -> dict[str, tuple[str, str]]:
    """Public name -> (module, name there), read from the TYPE_CHECKING block above (on first
    use: `import kstat` itself must not parse anything)."""
    if _names:
        return _names
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If))
    _names.update(
        {
            alias.asname or alias.name: (node.module or "", alias.name)
            for node in block.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
    )
    return _names


def __getattr__(name: str) -> Any:
    if name.startswith("_") and not name.endswith("__"):
        # A private submodule (`from kstat import _baseline` asks here first): nothing public.
        raise AttributeError(f"module 'kstat' has no attribute {name!r}")
    try:
        module, original = _public_names()[name]
    except KeyError:
        raise AttributeError(f"module 'kstat' has no attribute {name!r}") from None
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), original)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(_public_names())
