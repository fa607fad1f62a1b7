"""Switching the kernel's run-time statistics on for a window, and off again afterwards."""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from kstat._logging import get_logger
from kstat.abi import bpf
from kstat.errors import PermissionDenied, UnsupportedKernel

log = get_logger(__name__)

BPF_STATS_SYSCTL: Final = Path("/proc/sys/kernel/bpf_stats_enabled")


class StatsMethod(enum.Enum):
    """How the stats were switched on for the window."""

    # A BPF_ENABLE_STATS fd: the kernel reference-counts these, so the stats go off by
    # themselves when the last holder closes its fd or dies, even on SIGKILL.
    BPF_ENABLE_STATS = "bpf_enable_stats"
    # Before Linux 5.8: the global sysctl, which kstat sets and restores.
    SYSCTL = "sysctl"


@contextmanager
def runtime_stats_enabled(sysctl_path: Path = BPF_STATS_SYSCTL) -> Iterator[StatsMethod]:
    """Keep the kernel's run_time_ns/run_cnt accounting on for the body of the `with`."""
    try:
        stats_fd = bpf.enable_run_time_stats()
    except UnsupportedKernel as missing_command:
        with _sysctl_enabled(sysctl_path, missing_command):
            yield StatsMethod.SYSCTL
        return
    try:
        yield StatsMethod.BPF_ENABLE_STATS
    finally:
        os.close(stats_fd)


@contextmanager
def _sysctl_enabled(sysctl_path: Path, missing_command: UnsupportedKernel) -> Iterator[None]:
    try:
        previous_value = sysctl_path.read_text().strip()
    except FileNotFoundError:
        raise UnsupportedKernel(
            f"{missing_command}; and {sysctl_path} is missing, so this kernel cannot count "
            "eBPF run time (Linux 5.1 or newer is needed)"
        ) from None
    log.warning(
        "BPF_ENABLE_STATS unavailable; enabling stats through the sysctl and restoring it at exit",
        sysctl=str(sysctl_path),
        previous_value=previous_value,
    )
    if previous_value != "1":
        _write_sysctl(sysctl_path, "1")
    try:
        yield
    finally:
        if previous_value != "1":
            _write_sysctl(sysctl_path, previous_value)
            log.info("restored sysctl", sysctl=str(sysctl_path), value=previous_value)


def _write_sysctl(sysctl_path: Path, value: str) -> None:
    try:
        sysctl_path.write_text(value)
    except PermissionError as error:
        raise PermissionDenied(f"cannot write {sysctl_path}: {error.strerror}; run as root") from None
