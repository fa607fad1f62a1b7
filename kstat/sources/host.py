"""Facts about the machine that a report states."""

from __future__ import annotations

import os


def online_cpu_count() -> int:
    """CPUs online now (not merely present): the denominator of the all-CPUs share."""
    return max(1, os.sysconf("SC_NPROCESSORS_ONLN"))


def kernel_release() -> str:
    return os.uname().release
