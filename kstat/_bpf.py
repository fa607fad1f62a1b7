"""The kernel ABI: bpf(2) over ctypes. The only module that knows `union bpf_attr`,
`struct bpf_prog_info`, command numbers and what each errno means.

Layouts follow include/uapi/linux/bpf.h. Each command gets its own small attr structure holding
just the fields it uses, passed with its own size: the kernel zero-extends a shorter attr, which
is how libbpf talks to kernels older and newer than its headers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterator, Sequence
from typing import Final

from kstat.errors import BpfError, PermissionDenied, ProgramLoadError, UnsupportedKernel
from kstat.model import ProgramStats

# --- syscall plumbing -------------------------------------------------------------------------

# __NR_bpf per architecture (arch/*/include/uapi/asm/unistd*.h); the generic table covers
# arm64, riscv64 and loongarch64.
_SYS_BPF_BY_MACHINE: Final = {
    "x86_64": 321,
    "i386": 357,
    "i686": 357,
    "aarch64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "armv7l": 386,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
}

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
_syscall.restype = ctypes.c_long

# enum bpf_cmd
BPF_PROG_LOAD: Final = 5
BPF_PROG_GET_NEXT_ID: Final = 11
BPF_PROG_GET_FD_BY_ID: Final = 13
BPF_OBJ_GET_INFO_BY_FD: Final = 15
BPF_ENABLE_STATS: Final = 32

_COMMAND_NAMES: Final = {
    BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_PROG_GET_NEXT_ID: "BPF_PROG_GET_NEXT_ID",
    BPF_PROG_GET_FD_BY_ID: "BPF_PROG_GET_FD_BY_ID",
    BPF_OBJ_GET_INFO_BY_FD: "BPF_OBJ_GET_INFO_BY_FD",
    BPF_ENABLE_STATS: "BPF_ENABLE_STATS",
}

# enum bpf_stats_type
BPF_STATS_RUN_TIME: Final = 0

BPF_OBJ_NAME_LEN: Final = 16
BPF_TAG_SIZE: Final = 8

# setsockopt(SOL_SOCKET, SO_ATTACH_BPF, prog_fd) attaches an eBPF socket filter
# (include/uapi/asm-generic/socket.h).
SO_ATTACH_BPF: Final = 50

# enum bpf_prog_type, named as cilium/ebpf's ProgramType.String() names them, so reports keep
# the shape that the Go collect-kernel-stats tool gave.
_PROGRAM_TYPE_NAMES: Final = (
    "UnspecifiedProgram",
    "SocketFilter",
    "Kprobe",
    "SchedCLS",
    "SchedACT",
    "TracePoint",
    "XDP",
    "PerfEvent",
    "CGroupSKB",
    "CGroupSock",
    "LWTIn",
    "LWTOut",
    "LWTXmit",
    "SockOps",
    "SkSKB",
    "CGroupDevice",
    "SkMsg",
    "RawTracepoint",
    "CGroupSockAddr",
    "LWTSeg6Local",
    "LircMode2",
    "SkReuseport",
    "FlowDissector",
    "CGroupSysctl",
    "RawTracepointWritable",
    "CGroupSockopt",
    "Tracing",
    "StructOps",
    "Extension",
    "LSM",
    "SkLookup",
    "Syscall",
    "Netfilter",
)
BPF_PROG_TYPE_SOCKET_FILTER: Final = 1


def program_type_name(type_id: int) -> str:
    """The cilium/ebpf name of a program type; unknown (newer) types as `ProgramType(N)`."""
    if 0 <= type_id < len(_PROGRAM_TYPE_NAMES):
        return _PROGRAM_TYPE_NAMES[type_id]
    return f"ProgramType({type_id})"


_SYS_BPF: Final = _SYS_BPF_BY_MACHINE.get(platform.machine())


def _bpf(command: int, attr: ctypes.Structure) -> int:
    """Issue one bpf(2) command; return its non-negative result or raise the matching error."""
    if _SYS_BPF is None:
        raise UnsupportedKernel(f"kstat does not know the bpf(2) syscall number on {platform.machine()}")
    result = _syscall(_SYS_BPF, command, ctypes.addressof(attr), ctypes.sizeof(attr))
    if result >= 0:
        return int(result)
    raise _error_for(command, ctypes.get_errno())


def _error_for(command: int, errno_value: int) -> Exception:
    name = _COMMAND_NAMES.get(command, str(command))
    message = os.strerror(errno_value)
    # BPF_PROG_LOAD says EACCES when the verifier rejects a program: that is no privilege matter.
    denied = errno_value == errno.EPERM or (errno_value == errno.EACCES and command != BPF_PROG_LOAD)
    if denied:
        # The kernel checks CAP_SYS_ADMIN itself (not CAP_BPF/CAP_PERFMON) for
        # BPF_ENABLE_STATS and for walking and opening other programs by id.
        return PermissionDenied(
            f"permission denied for bpf({name}): kstat needs root, or CAP_SYS_ADMIN, "
            "to switch on the kernel's eBPF stats and read every program (CAP_BPF with CAP_PERFMON "
            "is not enough for these commands); run it with sudo"
        )
    if errno_value == errno.ENOSYS:
        return UnsupportedKernel("this kernel has no bpf(2) syscall (CONFIG_BPF_SYSCALL is off)")
    if errno_value == errno.ENOENT:
        # Walking ids or opening one that vanished: callers decide whether that is an end.
        return _NoSuchObject(name, errno_value, message)
    return BpfError(name, errno_value, message)


class _NoSuchObject(BpfError):
    """ENOENT: no next id, or the id was freed (the program was unloaded) since it was listed."""


# --- attr layouts (one per command) -------------------------------------------------------------


class _GetIdAttr(ctypes.Structure):
    # BPF_PROG_GET_NEXT_ID / BPF_PROG_GET_FD_BY_ID: start_id and prog_id share the first word.
    _fields_ = [
        ("start_id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


class _InfoByFdAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info, complete as of Linux 6.x (it is __attribute__((aligned(8))))."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * BPF_TAG_SIZE),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


# run_time_ns and run_cnt arrived in Linux 5.1, recursion_misses in 5.12: an older kernel
# writes a shorter struct and says how much in info_len.
_RUN_COUNTERS_END: Final = _ProgInfo.run_cnt.offset + 8
_RECURSION_MISSES_END: Final = _ProgInfo.recursion_misses.offset + 8


# --- commands -----------------------------------------------------------------------------------


def enable_run_time_stats() -> int:
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): stats stay on while the returned fd is open.

    The kernel counts these fds, so several holders (two kstat processes) never switch each
    other's stats off. Raises UnsupportedKernel before Linux 5.8, where the command is unknown.
    """
    attr = _EnableStatsAttr(type=BPF_STATS_RUN_TIME)
    try:
        return _bpf(BPF_ENABLE_STATS, attr)
    except BpfError as error:
        if error.errno == errno.EINVAL:
            raise UnsupportedKernel(
                "this kernel does not know BPF_ENABLE_STATS (it arrived in Linux 5.8)"
            ) from error
        raise


class ProgramReader:
    """Reads every loaded program's counters, reusing its buffers between passes.

    Not thread-safe: one reader per thread. Every fd it opens is closed before it moves on.
    """

    def __init__(self) -> None:
        self._id_attr = _GetIdAttr()
        self._info = _ProgInfo()
        self._info_attr = _InfoByFdAttr(info_len=ctypes.sizeof(_ProgInfo), info=ctypes.addressof(self._info))

    def program_ids(self) -> Iterator[int]:
        """Every loaded program id, ascending, as the kernel walks its idr."""
        attr = self._id_attr
        current_id = 0
        while True:
            attr.start_id = current_id
            attr.next_id = 0
            attr.open_flags = 0
            try:
                _bpf(BPF_PROG_GET_NEXT_ID, attr)
            except _NoSuchObject:
                return
            current_id = attr.next_id
            yield current_id

    def read_all(self) -> list[ProgramStats]:
        """Every loaded program's stats; a program unloaded while being read is skipped."""
        programs: list[ProgramStats] = []
        for program_id in self.program_ids():
            stats = self.read_one(program_id)
            if stats is not None:
                programs.append(stats)
        return programs

    def read_one(self, program_id: int) -> ProgramStats | None:
        """One program's stats, or None when that id no longer names a loaded program."""
        attr = self._id_attr
        attr.start_id = program_id
        attr.next_id = 0
        attr.open_flags = 0
        try:
            fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
        except _NoSuchObject:
            return None
        try:
            return self.read_fd(fd)
        finally:
            os.close(fd)

    def read_fd(self, fd: int) -> ProgramStats:
        """The stats of the program behind an fd the caller owns."""
        info = self._info
        # Pointer/count pairs must go in as zero, or the kernel copies arrays to them.
        ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info))
        attr = self._info_attr
        attr.bpf_fd = fd
        attr.info_len = ctypes.sizeof(info)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        written = attr.info_len
        if written < _RUN_COUNTERS_END:
            raise UnsupportedKernel(
                "this kernel's bpf_prog_info has no run_time_ns/run_cnt (they arrived in Linux 5.1)"
            )
        return ProgramStats(
            id=info.id,
            type=program_type_name(info.type),
            name=info.name.decode("utf-8", "replace"),
            tag=bytes(info.tag).hex(),
            load_time_ns=info.load_time,
            run_time_ns=info.run_time_ns,
            run_count=info.run_cnt,
            recursion_misses=info.recursion_misses if written >= _RECURSION_MISSES_END else 0,
        )


# --- loading programs (the demo workload and the tests) ---------------------------------------


class Instruction(ctypes.Structure):
    """struct bpf_insn."""

    _fields_ = [
        ("code", ctypes.c_uint8),
        ("regs", ctypes.c_uint8),  # dst_reg in the low nibble, src_reg in the high one (LE)
        ("off", ctypes.c_int16),
        ("imm", ctypes.c_int32),
    ]


# Opcodes used by the built-in programs (include/uapi/linux/bpf_common.h, bpf.h).
_BPF_ALU64_MOV_K: Final = 0x07 | 0xB0 | 0x00  # BPF_ALU64 | BPF_MOV | BPF_K
_BPF_ALU64_ADD_K: Final = 0x07 | 0x00 | 0x00  # BPF_ALU64 | BPF_ADD | BPF_K
_BPF_ALU64_XOR_K: Final = 0x07 | 0xA0 | 0x00  # BPF_ALU64 | BPF_XOR | BPF_K
_BPF_EXIT: Final = 0x05 | 0x90  # BPF_JMP | BPF_EXIT


def mov64_imm(register: int, value: int) -> Instruction:
    return Instruction(code=_BPF_ALU64_MOV_K, regs=register & 0xF, off=0, imm=value)


def add64_imm(register: int, value: int) -> Instruction:
    return Instruction(code=_BPF_ALU64_ADD_K, regs=register & 0xF, off=0, imm=value)


def xor64_imm(register: int, value: int) -> Instruction:
    return Instruction(code=_BPF_ALU64_XOR_K, regs=register & 0xF, off=0, imm=value)


def exit_insn() -> Instruction:
    return Instruction(code=_BPF_EXIT, regs=0, off=0, imm=0)


_VERIFIER_LOG_SIZE: Final = 64 * 1024


def load_program(
    program_type: int, instructions: Sequence[Instruction], name: str, license_text: str = "GPL"
) -> int:
    """BPF_PROG_LOAD: returns the new program's fd; the program lives while an fd or attachment holds it."""
    encoded_name = name.encode("ascii")
    if len(encoded_name) >= BPF_OBJ_NAME_LEN:
        raise ValueError(f"program name {name!r} is longer than {BPF_OBJ_NAME_LEN - 1} bytes")
    insns = (Instruction * len(instructions))(*instructions)
    license_buffer = ctypes.create_string_buffer(license_text.encode("ascii"))
    attr = _ProgLoadAttr(
        prog_type=program_type,
        insn_cnt=len(instructions),
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_buffer),
        prog_name=encoded_name,
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as error:
        first_error = error
    # Load again with the verifier's log on, only to explain the failure.
    log_buffer = ctypes.create_string_buffer(_VERIFIER_LOG_SIZE)
    attr.log_level = 1
    attr.log_size = _VERIFIER_LOG_SIZE
    attr.log_buf = ctypes.addressof(log_buffer)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as logged_error:
        log = log_buffer.value.decode("utf-8", "replace")
        raise ProgramLoadError(
            logged_error.command, logged_error.errno, os.strerror(logged_error.errno), log
        ) from first_error
