"""What a process uses, from two /proc files: its CPU time (/proc/PID/stat `utime`, `stime`)
and its memory (/proc/PID/status `VmRSS`, `VmHWM`), as the owner-counter catalogue
(`kstat.core.owner_cost.ProcessCounters`) declares them.

Read by the details stage for the processes holding programs, never on the counter clock. Two
small reads per process, as raw bytes: the host wrote them (a comm with spaces, parentheses or
bytes that are not UTF-8), so nothing here raises on what they hold; a process that is gone, or
a file that does not parse, is simply not read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from kstat.core.catalogue import NS_PER_S
from kstat.core.owner_cost import ProcessCounters, ProcessUsage

PROC: Final = Path("/proc")
# Clock ticks per second (USER_HZ, 100 on every Linux ABI): /proc/PID/stat counts in them.
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Fields of /proc/PID/stat after the comm's closing parenthesis (0 is `state`, field 3).
_UTIME: Final = 11  # field 14
_STIME: Final = 12  # field 15
_STARTTIME: Final = 19  # field 22
_LARGEST_STAT: Final = 4096
_LARGEST_STATUS: Final = 16384
_KIB: Final = 1024


def _read(path: str, largest: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, largest)
    except OSError:
        return None
    finally:
        os.close(fd)


def _ticks_ns(ticks: int) -> int:
    return ticks * NS_PER_S // CLOCK_TICKS


def parse_stat(stat: bytes) -> tuple[int, int, int] | None:
    """(user time ns, system time ns, start boottime ns) from /proc/PID/stat's bytes; None when
    they do not parse. The comm may hold anything, `)` included: the fields start after the last."""
    fields = stat.rpartition(b")")[2].split()
    if len(fields) <= _STARTTIME:
        return None
    try:
        return (
            _ticks_ns(int(fields[_UTIME])),
            _ticks_ns(int(fields[_STIME])),
            _ticks_ns(int(fields[_STARTTIME])),
        )
    except ValueError:
        return None


def _status_kib(status: bytes, key: bytes) -> int | None:
    label = b"\n" + key + b":"
    text = b"\n" + status
    start = text.find(label)
    if start < 0:
        return None
    end = text.find(b"\n", start + 1)
    value = text[start + len(label) : end if end >= 0 else len(text)].split()
    if not value:
        return None
    try:
        return int(value[0]) * _KIB  # "1696 kB"
    except ValueError:
        return None


def parse_status(status: bytes) -> tuple[int | None, int | None]:
    """(resident bytes, peak resident bytes) from /proc/PID/status's bytes (None: not said)."""
    return _status_kib(status, b"VmRSS"), _status_kib(status, b"VmHWM")


def process_usage(pid: int, proc: Path = PROC) -> ProcessUsage | None:
    """One reading of process `pid`; None when it is gone or its stat does not parse."""
    stat = _read(f"{proc}/{pid}/stat", _LARGEST_STAT)
    if stat is None:
        return None
    times = parse_stat(stat)
    if times is None:
        return None
    user_ns, system_ns, start_ns = times
    status = _read(f"{proc}/{pid}/status", _LARGEST_STATUS)
    rss, peak = parse_status(status) if status is not None else (None, None)
    return ProcessUsage(pid, start_ns, ProcessCounters(user_ns, system_ns, rss, peak))


def processes_usage(pids: Iterable[int], proc: Path = PROC) -> tuple[ProcessUsage, ...]:
    """A reading of each of `pids` still there, in pid order."""
    found = []
    for pid in sorted(set(pids)):
        usage = process_usage(pid, proc)
        if usage is not None:
            found.append(usage)
    return tuple(found)
