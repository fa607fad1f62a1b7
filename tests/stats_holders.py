"""Who else has the kernel's run-time stats on: a test that proves kstat switched them off can
only see it while no other process holds them (another kstat, another test run on the host).

`BPF_ENABLE_STATS` hands out an fd whose /proc link reads `anon_inode:bpf-stats`; the stats are
on while any such fd is open anywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_STATS_FD = "anon_inode:bpf-stats"


def stats_holders() -> list[str]:
    """`pid/comm` of every other process holding a BPF_ENABLE_STATS fd."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == _STATS_FD:
                    comm = (entry / "comm").read_bytes().decode(errors="replace").strip()
                    found.append(f"{entry.name}/{comm}")
                    break
            except OSError:
                continue
    return found


@contextmanager
def nobody_else_counts(wait_s: float = 20) -> Iterator[None]:
    """Run the body while no other process has the stats on; skip, saying who, when that never
    happens within `wait_s` or when one switched them on while the body ran."""
    deadline = time.monotonic() + wait_s
    while holders := stats_holders():
        if time.monotonic() > deadline:
            pytest.skip(f"other processes keep the kernel's stats on ({', '.join(holders)})")
        time.sleep(0.05)  # polling for a quiet moment; no result depends on how long it takes
    yield
    if holders := stats_holders():
        pytest.skip(f"another process switched the stats on meanwhile ({', '.join(holders)})")
