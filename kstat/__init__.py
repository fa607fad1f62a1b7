"""kstat: what loaded eBPF programs cost inside the kernel, measured with the kernel's own stats."""

from __future__ import annotations

from kstat.errors import (
    BpfError,
    KstatError,
    OutputError,
    PermissionDenied,
    SinkError,
    UnsupportedKernel,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "BpfError",
    "KstatError",
    "OutputError",
    "PermissionDenied",
    "SinkError",
    "UnsupportedKernel",
    "UsageError",
    "__version__",
]
