"""Who has the kernel's run-time stats on, for the tests that prove kstat switched them off.

`BPF_ENABLE_STATS` hands out an fd whose /proc link reads `anon_inode:bpf-stats`; the stats are
on while any such fd is open anywhere. So "packets sent now are not counted" proves kstat let go
of its fd only while no other process (another kstat, another suite on the host) holds one. What
proves it on any host is the fd itself: after kstat is done, neither this process nor any process
of this suite (one that carries the suite's token in its environment, as kstat's CLI started by a
test does, and whatever it started) holds a bpf-stats fd. `stats_released()` asserts that always,
and says whether the behaviour (counts stand still) can be checked too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attrs import define, frozen

from kstat.sources.stats_switch import BPF_STATS_SYSCTL
from tests.names import TOKEN, TOKEN_VARIABLE

_STATS_FD = "anon_inode:bpf-stats"
_OUR_ENVIRONMENT = f"{TOKEN_VARIABLE}={TOKEN}".encode()


@frozen
class StatsHolder:
    pid: int
    command: str
    # Started by this suite: its environment carries the suite's token.
    ours: bool

    def __str__(self) -> str:
        return f"{self.pid}/{self.command}"


def _holds_stats(fd_directory: Path) -> bool:
    try:
        fds = list(fd_directory.iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == _STATS_FD:
                return True
        except OSError:
            continue
    return False


def _is_ours(process: Path) -> bool:
    try:
        return _OUR_ENVIRONMENT in (process / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def stats_holders() -> list[StatsHolder]:
    """Every other process holding a BPF_ENABLE_STATS fd."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or not _holds_stats(entry / "fd"):
            continue
        try:
            command = (entry / "comm").read_bytes().decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        found.append(StatsHolder(int(entry.name), command, _is_ours(entry)))
    return found


def this_process_stats_fds() -> int:
    """How many BPF_ENABLE_STATS fds this process holds."""
    return sum(1 for fd in Path("/proc/self/fd").iterdir() if _readlink(fd) == _STATS_FD)


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


@define
class Released:
    """What `stats_released()` saw: the other processes that had the stats on, before the body
    or after it. Only with none (`quiet`) do the body's counts show whether the stats are on."""

    others: list[StatsHolder]
    # kernel.bpf_stats_enabled was 1 (set by another tenant, or by another suite's test of
    # kstat's sysctl fallback), before the body or after it.
    sysctl_on: bool

    @property
    def quiet(self) -> bool:
        return not self.others and not self.sysctl_on


@contextmanager
def stats_released(wait_s: float = 2) -> Iterator[Released]:
    """Around a body that measures whether packets still count once kstat is done.

    First asserts, whoever else is on the host, that nothing of this suite's holds the stats on:
    neither this process nor any process carrying the suite's token. Then waits up to `wait_s`
    for a moment when no other process holds them either and runs the body; the `Released` it
    yields says whether that moment lasted from before the body to after it, which is when the
    test may also hold the body's counts to "stood still"."""
    assert this_process_stats_fds() == 0, "this process still holds a BPF_ENABLE_STATS fd"
    ours = [str(holder) for holder in stats_holders() if holder.ours]
    assert not ours, f"processes of this suite still hold the stats on: {', '.join(ours)}"
    deadline = time.monotonic() + wait_s
    while (before := stats_holders()) or _sysctl_on():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling for a quiet moment; no result depends on how long it takes
    released = Released(before, _sysctl_on())
    yield released
    released.others = before + stats_holders()
    released.sysctl_on = released.sysctl_on or _sysctl_on()


def _sysctl_on() -> bool:
    try:
        return BPF_STATS_SYSCTL.read_text().strip() != "0"
    except OSError:
        return False
