"""perf_event_open(2) for the kernel's side-band records, over ctypes: a dummy software event
per CPU whose ring buffer receives the records of every fork, exit and BPF program load on the
host (`task` and `bpf_event`), each stamped with the task that caused it and CLOCK_MONOTONIC.

No sampling, no counting: the dummy event never fires, only its side-band records arrive. The
structs are include/uapi/linux/perf_event.h's (tests/test_prog_info_parsing.py checks the
offsets against the installed header). No policy: what the records mean for a window is
`kstat.sources.process_tree`'s.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct
import threading
import time
from collections.abc import Iterator
from typing import Final

from attrs import frozen

from kstat.errors import FeatureMissing, PermissionDenied

# __NR_perf_event_open per architecture; the generic table covers arm64, riscv64, loongarch64.
_SYS_PERF_EVENT_OPEN_BY_MACHINE: Final = {
    "x86_64": 298,
    "i386": 336,
    "i686": 336,
    "aarch64": 241,
    "riscv64": 241,
    "loongarch64": 241,
    "armv7l": 364,
    "ppc64le": 319,
    "ppc64": 319,
    "s390x": 331,
}
SYS_PERF_EVENT_OPEN: Final = _SYS_PERF_EVENT_OPEN_BY_MACHINE.get(platform.machine())

PERF_TYPE_SOFTWARE: Final = 1
PERF_COUNT_SW_DUMMY: Final = 9
PERF_SAMPLE_TID: Final = 1 << 1
PERF_SAMPLE_TIME: Final = 1 << 2
PERF_FLAG_FD_CLOEXEC: Final = 1 << 3
CLOCK_MONOTONIC: Final = 1

# struct perf_event_attr's flag bits (the bitfield after read_format).
FLAG_TASK: Final = 1 << 13
FLAG_SAMPLE_ID_ALL: Final = 1 << 18
FLAG_USE_CLOCKID: Final = 1 << 25
FLAG_BPF_EVENT: Final = 1 << 30

RECORD_LOST: Final = 2
RECORD_EXIT: Final = 4
RECORD_FORK: Final = 7
RECORD_BPF_EVENT: Final = 18
# struct perf_record_bpf_event's type.
BPF_EVENT_PROG_LOAD: Final = 1
BPF_EVENT_PROG_UNLOAD: Final = 2

# The attr's size up to aux_watermark and sample_max_stack (Linux 4.8); fields beyond are zero.
PERF_ATTR_SIZE_VER5: Final = 112


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr, as far as PERF_ATTR_SIZE_VER5."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("_reserved_2", ctypes.c_uint16),
    ]


# struct perf_event_mmap_page: where the ring's head and tail are (the first page).
MMAP_DATA_HEAD: Final = 1024
MMAP_DATA_TAIL: Final = 1032
_U64: Final = struct.Struct("<Q")
# struct perf_event_header.
HEADER: Final = struct.Struct("<IHH")
# The sample_id every record ends with (sample_id_all), for PERF_SAMPLE_TID | PERF_SAMPLE_TIME.
SAMPLE_ID: Final = struct.Struct("<IIQ")
# PERF_RECORD_FORK and _EXIT: pid, ppid, tid, ptid, time.
TASK_RECORD: Final = struct.Struct("<IIIIQ")
# PERF_RECORD_BPF_EVENT: type, flags, id, tag.
BPF_EVENT_RECORD: Final = struct.Struct("<HHI8s")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
_syscall.restype = ctypes.c_long


def side_band_attr() -> PerfEventAttr:
    """A dummy software event that only carries the fork, exit and BPF load records."""
    return PerfEventAttr(
        type=PERF_TYPE_SOFTWARE,
        size=PERF_ATTR_SIZE_VER5,
        config=PERF_COUNT_SW_DUMMY,
        sample_type=PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
        flags=FLAG_TASK | FLAG_SAMPLE_ID_ALL | FLAG_USE_CLOCKID | FLAG_BPF_EVENT,
        clockid=CLOCK_MONOTONIC,
    )


def perf_event_open(attr: PerfEventAttr, pid: int, cpu: int) -> int:
    """The event's fd; PermissionDenied or FeatureMissing when the kernel will not give one."""
    if SYS_PERF_EVENT_OPEN is None:
        raise FeatureMissing(f"perf_event_open(2) as kstat knows it on {platform.machine()}", None)
    result = _syscall(SYS_PERF_EVENT_OPEN, ctypes.addressof(attr), pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    if result >= 0:
        return int(result)
    error = ctypes.get_errno()
    if error in (errno.EPERM, errno.EACCES):
        raise PermissionDenied(
            "perf_event_open(2) refused: a CPU-wide event needs CAP_PERFMON or CAP_SYS_ADMIN "
            "(and no seccomp profile that forbids it)"
        )
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOENT, errno.EOPNOTSUPP):
        # EINVAL: a kernel without bpf_event (before 5.1); the others: no perf events at all.
        raise FeatureMissing("perf side-band records (bpf_event)", "5.1", os.strerror(error))
    raise OSError(error, os.strerror(error))  # ENODEV: a CPU that is not online, and the like


@frozen
class SideBandRecord:
    """One record: its type, the task that caused it (pid is the process, tid the thread), when
    (CLOCK_MONOTONIC, ns), and its body without the header and sample_id."""

    type: int
    pid: int
    tid: int
    time_ns: int
    body: bytes


# Reading the ring between the kernel's head and our tail must not be reordered with reading
# the head itself, nor the tail's update with the reads before it (smp_rmb / smp_mb in C). A
# lock's acquire and release are full barriers on every CPU Python runs on.
_BARRIER: Final = threading.Lock()


def _barrier() -> None:
    with _BARRIER:
        pass


class SideBandRing:
    """One CPU's event and its ring buffer, mapped read-write (so that the tail we write tells
    the kernel what it may overwrite)."""

    def __init__(self, cpu: int, pages: int = 64) -> None:
        if pages & (pages - 1):
            raise ValueError("the ring's pages must be a power of two")
        self.cpu = cpu
        self._fd = perf_event_open(side_band_attr(), -1, cpu)
        page = mmap.PAGESIZE
        try:
            self._map = mmap.mmap(
                self._fd, (pages + 1) * page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as error:
            os.close(self._fd)
            if error.errno == errno.EPERM:
                raise PermissionDenied(
                    "perf's ring buffer could not be mapped (perf_event_mlock_kb)"
                ) from None
            raise
        self._data_offset = page
        self._data_size = pages * page
        # The time at which this ring started listening: records before it were never ours.
        self.opened_ns = time.monotonic_ns()

    def read(self) -> Iterator[SideBandRecord]:
        """The records the kernel wrote since the last read, in its order, then consumed."""
        mapped = self._map
        (head,) = _U64.unpack_from(mapped, MMAP_DATA_HEAD)
        _barrier()
        (tail,) = _U64.unpack_from(mapped, MMAP_DATA_TAIL)
        size, base = self._data_size, self._data_offset
        records = []
        while tail < head:
            start = tail % size
            header = self._bytes(base, start, HEADER.size)
            record_type, _, record_size = HEADER.unpack(header)
            if record_size < HEADER.size:
                break  # a torn header cannot happen below head; stop rather than loop
            raw = self._bytes(base, start, record_size)
            tail += record_size
            body = raw[HEADER.size : record_size - SAMPLE_ID.size]
            pid, tid, time_ns = SAMPLE_ID.unpack_from(raw, record_size - SAMPLE_ID.size)
            records.append(SideBandRecord(record_type, pid, tid, time_ns, body))
        _barrier()
        _U64.pack_into(mapped, MMAP_DATA_TAIL, head)
        return iter(records)

    def _bytes(self, base: int, start: int, count: int) -> bytes:
        """`count` bytes of the ring from `start`, across its end."""
        end = start + count
        if end <= self._data_size:
            return self._map[base + start : base + end]
        first = self._map[base + start : base + self._data_size]
        return first + self._map[base : base + end - self._data_size]

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
