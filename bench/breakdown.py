"""Where kstat's time per program goes: the same pass built up layer by layer, each measured
over every loaded program, down to the C floor.

The plumbing layers issue kstat's syscalls through ctypes exactly as kstat's syscall reader
(kstat/sources/syscalls.py) does today (its attr structures, `syscall` with argtypes, a ctypes
memset of bpf_prog_info), then the same with the per-call conversions taken out; they use their
own libc handle so that a change to kstat's plumbing never changes what these reference layers
measure.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

from attrs import frozen

from bench.measure import Timing, time_calls
from bench.snapshot import COMPILE_FLAGS, FLOOR_SOURCE
from kstat.abi import bpf as _bpf
from kstat.abi import structs as _structs
from kstat.abi.enums import Command, program_type_name
from kstat.core.counters import Counters
from kstat.core.model import ProgramChanges, ProgramStats
from kstat.errors import UnsupportedKernel
from kstat.sources.attribution import Attributor
from kstat.sources.syscalls import ProgramReader

# struct floor_record in snapshot_floor.c: id, type, tag, name, load_time, run_time_ns,
# run_cnt, recursion_misses.
_FLOOR_RECORD: Final = struct.Struct("<II8s16sQQQQ")
_MICRO_CALLS: Final = 100_000

_libc = ctypes.CDLL(None, use_errno=True)
# As kstat/abi/bpf.py declares it: every call converts its four Python ints through argtypes.
_syscall_converting = _libc.syscall
_syscall_converting.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
_syscall_converting.restype = ctypes.c_long
# A second function object (ctypes caches attributes of a CDLL): no argtypes, so arguments
# that are already ctypes objects go through unconverted.
_syscall_unconverted = ctypes.CDLL(None, use_errno=True).syscall
_syscall_unconverted.restype = ctypes.c_long


def _sys_bpf_number() -> int:
    if _bpf.SYS_BPF is None:
        raise UnsupportedKernel("no bpf(2) syscall number for this machine")
    return _bpf.SYS_BPF


def kstat_plumbing_pass() -> int:
    """GET_NEXT_ID, GET_FD_BY_ID, a memset, OBJ_GET_INFO_BY_FD and close per program, with
    kstat's ctypes plumbing and nothing else: no Python objects, no caches."""
    syscall, sys_bpf = _syscall_converting, _sys_bpf_number()
    id_attr, info = _structs.GetIdAttr(), _structs.ProgInfo()
    info_size = ctypes.sizeof(info)
    info_attr = _structs.InfoByFdAttr(info_len=info_size, info=ctypes.addressof(info))
    programs = current_id = 0
    while True:
        id_attr.start_id, id_attr.next_id = current_id, 0
        if syscall(sys_bpf, Command.PROG_GET_NEXT_ID, ctypes.addressof(id_attr), ctypes.sizeof(id_attr)) < 0:
            return programs
        current_id = id_attr.next_id
        id_attr.start_id, id_attr.next_id = current_id, 0
        fd = syscall(sys_bpf, Command.PROG_GET_FD_BY_ID, ctypes.addressof(id_attr), ctypes.sizeof(id_attr))
        if fd < 0:
            continue
        ctypes.memset(ctypes.addressof(info), 0, info_size)
        info_attr.bpf_fd, info_attr.info_len = fd, info_size
        syscall(sys_bpf, Command.OBJ_GET_INFO_BY_FD, ctypes.addressof(info_attr), ctypes.sizeof(info_attr))
        os.close(fd)
        programs += 1


def lean_plumbing_pass() -> int:
    """The same syscalls with every argument a ctypes object built once (no conversion per
    call) and bpf_prog_info zeroed by a memoryview slice (no foreign call)."""
    syscall = _syscall_unconverted
    sys_bpf = ctypes.c_long(_sys_bpf_number())
    next_id_command = ctypes.c_int(Command.PROG_GET_NEXT_ID)
    fd_by_id_command = ctypes.c_int(Command.PROG_GET_FD_BY_ID)
    info_by_fd_command = ctypes.c_int(Command.OBJ_GET_INFO_BY_FD)
    id_attr, info = _structs.GetIdAttr(), _structs.ProgInfo()
    info_size = ctypes.sizeof(info)
    info_attr = _structs.InfoByFdAttr(info_len=info_size, info=ctypes.addressof(info))
    id_pointer, id_size = ctypes.byref(id_attr), ctypes.c_uint(ctypes.sizeof(id_attr))
    info_attr_pointer, info_attr_size = ctypes.byref(info_attr), ctypes.c_uint(ctypes.sizeof(info_attr))
    info_bytes, zeros = memoryview(info).cast("B"), bytes(info_size)
    programs = current_id = 0
    while True:
        id_attr.start_id, id_attr.next_id = current_id, 0
        if syscall(sys_bpf, next_id_command, id_pointer, id_size) < 0:
            return programs
        current_id = id_attr.next_id
        id_attr.start_id, id_attr.next_id = current_id, 0
        fd = syscall(sys_bpf, fd_by_id_command, id_pointer, id_size)
        if fd < 0:
            continue
        info_bytes[:] = zeros
        info_attr.bpf_fd, info_attr.info_len = fd, info_size
        syscall(sys_bpf, info_by_fd_command, info_attr_pointer, info_attr_size)
        os.close(fd)
        programs += 1


class CompiledPass:
    """snapshot_floor.c as a shared library: the pass in C, then one ProgramStats per program,
    as kstat would build them above a compiled extension."""

    def __init__(self, directory: Path, compiler: str = "cc") -> None:
        library = directory / "libsnapshot_floor.so"
        subprocess.run(
            [compiler, *COMPILE_FLAGS, "-shared", "-fPIC", "-o", str(library), str(FLOOR_SOURCE)],
            check=True,
        )
        self._snapshot_records = ctypes.CDLL(str(library)).floor_snapshot_records
        self._snapshot_records.argtypes = [ctypes.c_void_p, ctypes.c_long]
        self._snapshot_records.restype = ctypes.c_long
        self._buffer = ctypes.create_string_buffer(0)

    def read_all(self) -> list[ProgramStats]:
        capacity = len(self._buffer) // _FLOOR_RECORD.size
        while True:
            count = self._snapshot_records(self._buffer, capacity)
            if count < 0:
                raise OSError(ctypes.get_errno(), "floor_snapshot_records failed")
            if count < capacity:
                break
            # Full: more programs than room; grow with headroom and take the pass again.
            capacity = max(1024, 2 * capacity)
            self._buffer = ctypes.create_string_buffer(capacity * _FLOOR_RECORD.size)
        programs: list[ProgramStats] = []
        view = memoryview(self._buffer)[: count * _FLOOR_RECORD.size]
        for record in _FLOOR_RECORD.iter_unpack(view):
            program_id, type_id, tag, raw_name, load_time, run_time_ns, run_count, misses = record
            name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
            programs.append(
                ProgramStats(
                    id=program_id,
                    type=program_type_name(type_id),
                    tag=tag.hex(),
                    load_time_ns=load_time,
                    counters=Counters(run_time_ns, run_count, misses),
                    kernel_name=name,
                )
            )
        return programs


@frozen
class Breakdown:
    programs_seen: int
    # Each a full pass over every program, median per pass.
    kstat_plumbing_pass: Timing
    lean_plumbing_pass: Timing
    kstat_id_walk: Timing
    kstat_read_all: Timing
    attributor_details_for: Timing
    compiled_pass_with_objects: Timing
    # Single operations, median nanoseconds each.
    # A ctypes foreign call (libc getpid) less the same call made by os.getpid.
    foreign_call_overhead_ns: float
    # One bpf(2) the kernel answers at once (ENOENT), as kstat calls it and without conversions.
    bpf_call_as_kstat_ns: float
    bpf_call_unconverted_ns: float
    # Zeroing bpf_prog_info before each OBJ_GET_INFO_BY_FD: ctypes.memset, or a memoryview slice.
    memset_ns: float
    memoryview_zero_ns: float
    program_stats_new_ns: float
    program_identity_ns: float


def _per_call_ns(call: Callable[[], object], calls: int, repetitions: int) -> float:
    def many() -> None:
        for _ in range(calls):
            call()

    many()
    return time_calls(many, repetitions).median_ns / calls


def measure_breakdown(directory: Path, repetitions: int) -> Breakdown:
    reader = ProgramReader()
    programs, changes = reader.read_pass()
    attributor = Attributor()
    attributor.details_for(programs, changes)  # learn them all: what follows is the steady state
    unchanged = ProgramChanges()
    compiled = CompiledPass(directory)
    compiled.read_all()
    for warm_up in (kstat_plumbing_pass, lean_plumbing_pass, reader.read_all):
        warm_up()
    # A bpf(2) call the kernel answers at once: no program id follows the largest one.
    last_id_attr = _structs.GetIdAttr(start_id=0xFFFF_FFFF)
    last_id_pointer, last_id_size = ctypes.byref(last_id_attr), ctypes.c_uint(ctypes.sizeof(last_id_attr))
    sys_bpf = ctypes.c_long(_sys_bpf_number())
    next_id_command = ctypes.c_int(Command.PROG_GET_NEXT_ID)

    def converting_call() -> None:
        _syscall_converting(
            _sys_bpf_number(),
            Command.PROG_GET_NEXT_ID,
            ctypes.addressof(last_id_attr),
            ctypes.sizeof(last_id_attr),
        )

    def unconverted_call() -> None:
        _syscall_unconverted(sys_bpf, next_id_command, last_id_pointer, last_id_size)

    info = _structs.ProgInfo()
    info_bytes, zeros = memoryview(info).cast("B"), bytes(ctypes.sizeof(info))

    def zero_info() -> None:
        info_bytes[:] = zeros

    example = programs[0]

    def new_stats() -> None:
        ProgramStats(
            id=example.id,
            type=example.type,
            tag=example.tag,
            load_time_ns=example.load_time_ns,
            counters=Counters(example.run_time_ns, example.run_count, example.recursion_misses),
            kernel_name=example.kernel_name,
        )

    return Breakdown(
        programs_seen=len(programs),
        kstat_plumbing_pass=time_calls(kstat_plumbing_pass, repetitions),
        lean_plumbing_pass=time_calls(lean_plumbing_pass, repetitions),
        kstat_id_walk=time_calls(lambda: list(reader.program_ids()), repetitions),
        kstat_read_all=time_calls(reader.read_all, repetitions),
        attributor_details_for=time_calls(lambda: attributor.details_for(programs, unchanged), repetitions),
        compiled_pass_with_objects=time_calls(compiled.read_all, repetitions),
        foreign_call_overhead_ns=_per_call_ns(_libc.getpid, _MICRO_CALLS, 5)
        - _per_call_ns(os.getpid, _MICRO_CALLS, 5),
        bpf_call_as_kstat_ns=_per_call_ns(converting_call, _MICRO_CALLS, 5),
        bpf_call_unconverted_ns=_per_call_ns(unconverted_call, _MICRO_CALLS, 5),
        memset_ns=_per_call_ns(
            lambda: ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info)), _MICRO_CALLS, 5
        ),
        memoryview_zero_ns=_per_call_ns(zero_info, _MICRO_CALLS, 5),
        program_stats_new_ns=_per_call_ns(new_stats, _MICRO_CALLS, 5),
        program_identity_ns=_per_call_ns(lambda: example.identity, _MICRO_CALLS, 5),
    )
