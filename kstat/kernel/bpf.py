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
import struct
from collections.abc import Iterator, Sequence
from typing import Final

from attrs import evolve, frozen

from kstat.errors import BpfError, PermissionDenied, ProgramLoadError, UnsupportedKernel
from kstat.kernel.btf import BtfFormatError, single_function_btf, type_names
from kstat.kernel.fdinfo import fdinfo_number
from kstat.pipeline.model import MapFootprint, ProgramChanges, ProgramFootprint, ProgramStats

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
BPF_MAP_CREATE: Final = 0
BPF_MAP_LOOKUP_ELEM: Final = 1
BPF_PROG_TEST_RUN: Final = 10
BPF_PROG_LOAD: Final = 5
BPF_PROG_GET_NEXT_ID: Final = 11
BPF_PROG_GET_FD_BY_ID: Final = 13
BPF_MAP_GET_FD_BY_ID: Final = 14
BPF_OBJ_GET_INFO_BY_FD: Final = 15
BPF_PROG_QUERY: Final = 16
BPF_BTF_LOAD: Final = 18
BPF_BTF_GET_FD_BY_ID: Final = 19
BPF_LINK_CREATE: Final = 28
BPF_LINK_GET_FD_BY_ID: Final = 30
BPF_LINK_GET_NEXT_ID: Final = 31
BPF_ENABLE_STATS: Final = 32
BPF_ITER_CREATE: Final = 33

_COMMAND_NAMES: Final = {
    BPF_MAP_CREATE: "BPF_MAP_CREATE",
    BPF_MAP_GET_FD_BY_ID: "BPF_MAP_GET_FD_BY_ID",
    BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_PROG_GET_NEXT_ID: "BPF_PROG_GET_NEXT_ID",
    BPF_PROG_GET_FD_BY_ID: "BPF_PROG_GET_FD_BY_ID",
    BPF_OBJ_GET_INFO_BY_FD: "BPF_OBJ_GET_INFO_BY_FD",
    BPF_BTF_LOAD: "BPF_BTF_LOAD",
    BPF_BTF_GET_FD_BY_ID: "BPF_BTF_GET_FD_BY_ID",
    BPF_LINK_CREATE: "BPF_LINK_CREATE",
    BPF_LINK_GET_FD_BY_ID: "BPF_LINK_GET_FD_BY_ID",
    BPF_LINK_GET_NEXT_ID: "BPF_LINK_GET_NEXT_ID",
    BPF_PROG_QUERY: "BPF_PROG_QUERY",
    BPF_PROG_TEST_RUN: "BPF_PROG_TEST_RUN",
    BPF_ITER_CREATE: "BPF_ITER_CREATE",
    BPF_MAP_LOOKUP_ELEM: "BPF_MAP_LOOKUP_ELEM",
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
# enum bpf_map_type
BPF_MAP_TYPE_HASH: Final = 1
BPF_MAP_TYPE_ARRAY: Final = 2
BPF_MAP_TYPE_PERCPU_ARRAY: Final = 6
BPF_PROG_TYPE_RAW_TRACEPOINT: Final = 17
BPF_PROG_TYPE_TRACING: Final = 26
BPF_TRACE_ITER: Final = 28

BPF_PROG_TYPE_SOCKET_FILTER: Final = 1
BPF_PROG_TYPE_XDP: Final = 6

# enum bpf_attach_type (checked against this kernel's BTF), the ones kstat names in attachments.
BPF_XDP: Final = 37
BPF_FLOW_DISSECTOR: Final = 17
BPF_SK_LOOKUP: Final = 36
# The attach types of programs attached to a cgroup (`BPF_PROG_QUERY` on a cgroup asks for each).
CGROUP_ATTACH_TYPES: Final = {
    0: "ingress",  # BPF_CGROUP_INET_INGRESS
    1: "egress",  # BPF_CGROUP_INET_EGRESS
    2: "sock_create",
    3: "sock_ops",
    6: "device",
    8: "bind4",
    9: "bind6",
    10: "connect4",
    11: "connect6",
    12: "post_bind4",
    13: "post_bind6",
    14: "sendmsg4",
    15: "sendmsg6",
    18: "sysctl",
    19: "recvmsg4",
    20: "recvmsg6",
    21: "getsockopt",
    22: "setsockopt",
    29: "getpeername4",
    30: "getpeername6",
    31: "getsockname4",
    32: "getsockname6",
    34: "sock_release",
    43: "lsm_cgroup",
    49: "unix_connect",
    50: "unix_sendmsg",
    51: "unix_recvmsg",
    52: "unix_getpeername",
    53: "unix_getsockname",
}
_ATTACH_TYPE_NAMES: Final = {
    **CGROUP_ATTACH_TYPES,
    BPF_FLOW_DISSECTOR: "flow_dissector",
    BPF_SK_LOOKUP: "sk_lookup",
    BPF_XDP: "xdp",
    46: "ingress",  # BPF_TCX_INGRESS
    47: "egress",  # BPF_TCX_EGRESS
    54: "primary",  # BPF_NETKIT_PRIMARY
    55: "peer",  # BPF_NETKIT_PEER
}

# enum bpf_link_type
_LINK_TYPE_NAMES: Final = (
    "unspec",
    "raw_tracepoint",
    "tracing",
    "cgroup",
    "iter",
    "netns",
    "xdp",
    "perf_event",
    "kprobe_multi",
    "struct_ops",
    "netfilter",
    "tcx",
    "uprobe_multi",
    "netkit",
    "sockmap",
)


def attach_type_name(attach_type: int) -> str:
    return _ATTACH_TYPE_NAMES.get(attach_type, f"attach_type_{attach_type}")


def link_type_name(link_type: int) -> str:
    if 0 <= link_type < len(_LINK_TYPE_NAMES):
        return _LINK_TYPE_NAMES[link_type]
    return f"link_type_{link_type}"


def program_type_names() -> tuple[str, ...]:
    """Every program type kstat knows by name."""
    return _PROGRAM_TYPE_NAMES


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


class _ProgQueryAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("prog_attach_flags", ctypes.c_uint64),
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
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
        # A tracing program's target: the kernel function's BTF type id.
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
    ]


class _MapLookupAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
    ]


class _IterCreateAttr(ctypes.Structure):
    _fields_ = [("link_fd", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _BtfLoadAttr(ctypes.Structure):
    _fields_ = [
        ("btf", ctypes.c_uint64),
        ("btf_log_buf", ctypes.c_uint64),
        ("btf_size", ctypes.c_uint32),
        ("btf_log_size", ctypes.c_uint32),
        ("btf_log_level", ctypes.c_uint32),
    ]


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_ifindex", ctypes.c_uint32),  # a union with target_fd
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class _FuncInfo(ctypes.Structure):
    """struct bpf_func_info: where a function starts and its BTF FUNC type."""

    _fields_ = [("insn_off", ctypes.c_uint32), ("type_id", ctypes.c_uint32)]


class _BtfInfo(ctypes.Structure):
    """struct bpf_btf_info."""

    _fields_ = [
        ("btf", ctypes.c_uint64),
        ("btf_size", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("name", ctypes.c_uint64),
        ("name_len", ctypes.c_uint32),
        ("kernel_btf", ctypes.c_uint32),
    ]


class _LinkInfo(ctypes.Structure):
    """struct bpf_link_info: type, id and prog_id, then a per-type union read by offset.

    The union keeps growing with new link types; 64 bytes hold every member kstat reads.
    """

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("union", ctypes.c_uint8 * 64),
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


_PROG_INFO_SIZE: Final = ctypes.sizeof(_ProgInfo)
# run_time_ns and run_cnt arrived in Linux 5.1, recursion_misses in 5.12: an older kernel
# writes a shorter struct and says how much in info_len.
_RUN_COUNTERS_END: Final = _ProgInfo.run_cnt.offset + 8
_RECURSION_MISSES_END: Final = _ProgInfo.recursion_misses.offset + 8
# verified_insns arrived in Linux 5.16.
_VERIFIED_INSNS_END: Final = _ProgInfo.verified_insns.offset + 4


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

    This is the sampler's hot path (a few µs a program, most of it the four syscalls): the
    ctypes arguments are built once, the walk is inline, and a program met before is rebuilt
    from what the reader already knows (its names, tag and type), or reused whole when its
    counters have not moved. Its full name (from BTF) is looked up once, on first meeting.
    """

    def __init__(self) -> None:
        if _SYS_BPF is None:
            raise UnsupportedKernel(f"kstat does not know the bpf(2) syscall number on {platform.machine()}")
        self._id_attr = _GetIdAttr()
        self._info = _ProgInfo()
        self._info_attr = _InfoByFdAttr(info_len=ctypes.sizeof(_ProgInfo), info=ctypes.addressof(self._info))
        self._info_bytes = memoryview(self._info).cast("B")
        self._info_zeros = bytes(ctypes.sizeof(_ProgInfo))
        # Built once: converting Python ints and addresses on every call costs as much as the call.
        self._sys_bpf = ctypes.c_long(_SYS_BPF)
        self._next_id_command = ctypes.c_int(BPF_PROG_GET_NEXT_ID)
        self._fd_by_id_command = ctypes.c_int(BPF_PROG_GET_FD_BY_ID)
        self._info_command = ctypes.c_int(BPF_OBJ_GET_INFO_BY_FD)
        self._id_attr_pointer = ctypes.c_void_p(ctypes.addressof(self._id_attr))
        self._id_attr_size = ctypes.c_uint(ctypes.sizeof(_GetIdAttr))
        self._info_attr_pointer = ctypes.c_void_p(ctypes.addressof(self._info_attr))
        self._info_attr_size = ctypes.c_uint(ctypes.sizeof(_InfoByFdAttr))
        # The last reading of every program met in the previous pass, by (id, load time).
        self._known: dict[tuple[int, int], ProgramStats] = {}
        # Type names of the BTF objects met during one pass; programs of one object share it.
        self._btf_type_names: dict[int, list[str] | None] = {}
        # Memlock of the maps met during one pass; programs sharing a map look it up once.
        self._map_memlocks: dict[int, int | None] = {}

    def close(self) -> None:
        """Nothing to give back: every fd of a pass is closed within it."""

    @property
    def own_program_ids(self) -> frozenset[int]:
        return frozenset()

    def program_ids(self) -> Iterator[int]:
        """Every loaded program id, ascending, as the kernel walks its idr."""
        yield from _walk_ids(BPF_PROG_GET_NEXT_ID, self._id_attr)

    def read_all(self) -> list[ProgramStats]:
        """Every loaded program's stats; a program unloaded while being read is skipped."""
        return self.read_pass()[0]

    def read_pass(self) -> tuple[list[ProgramStats], ProgramChanges]:
        """Every loaded program's stats, and what changed since this reader's previous pass.

        The changes come from bookkeeping the pass does anyway (each program is looked up in
        the previous pass's table to reuse its value), so an idle program costs nothing more.
        """
        syscall, sys_bpf = _syscall, self._sys_bpf
        next_id, fd_by_id = self._next_id_command, self._fd_by_id_command
        attr, attr_pointer, attr_size = self._id_attr, self._id_attr_pointer, self._id_attr_size
        read_fd = self._read_fd
        previous = self._known
        known: dict[tuple[int, int], ProgramStats] = {}
        programs: list[ProgramStats] = []
        new: list[ProgramStats] = []
        moved: list[tuple[ProgramStats, ProgramStats]] = []
        current_id = 0
        attr.open_flags = 0  # never written by the kernel: set once a pass
        while True:
            attr.start_id = current_id
            if syscall(sys_bpf, next_id, attr_pointer, attr_size) < 0:
                error = ctypes.get_errno()
                if error == errno.ENOENT:
                    break  # past the last id
                raise _error_for(BPF_PROG_GET_NEXT_ID, error)
            current_id = attr.next_id
            attr.start_id = current_id  # prog_id, for BPF_PROG_GET_FD_BY_ID
            attr.next_id = 0  # must be zero there: the kernel checks unused attr bytes
            fd = syscall(sys_bpf, fd_by_id, attr_pointer, attr_size)
            if fd < 0:
                error = ctypes.get_errno()
                if error == errno.ENOENT:
                    continue  # unloaded since it was listed
                raise _error_for(BPF_PROG_GET_FD_BY_ID, error)
            try:
                key, stats, before = read_fd(fd)
            finally:
                os.close(fd)
            known[key] = stats
            programs.append(stats)
            if before is None:
                new.append(stats)
            elif before is not stats:
                moved.append((before, stats))
        # Every program of the previous pass met again: nothing vanished (no search needed).
        seen_again = len(programs) - len(new)
        vanished = (
            []
            if seen_again == len(previous)
            else [stats for key, stats in previous.items() if key not in known]
        )
        # Only what is loaded now is remembered, so churn cannot grow the caches.
        self._known = known
        self._btf_type_names.clear()
        self._map_memlocks.clear()
        return programs, ProgramChanges(new=new, moved=moved, vanished=vanished)

    def read_one(self, program_id: int) -> ProgramStats | None:
        """One program's stats, or None when that id no longer names a loaded program."""
        fd = _get_fd_by_id(BPF_PROG_GET_FD_BY_ID, self._id_attr, program_id)
        if fd is None:
            return None
        try:
            return self.read_fd(fd)
        finally:
            os.close(fd)

    def read_fd(self, fd: int) -> ProgramStats:
        """The stats of the program behind an fd the caller owns."""
        return self._read_fd(fd)[1]

    def _read_fd(self, fd: int) -> tuple[tuple[int, int], ProgramStats, ProgramStats | None]:
        """The program's stats, the key (id, load time) the reader remembers it by, and its
        reading in the previous pass (None for a program met for the first time)."""
        info = self._info
        # Inline _get_info: this runs once per program per pass.
        self._info_bytes[:] = self._info_zeros
        info_attr = self._info_attr
        info_attr.bpf_fd = fd
        info_attr.info_len = _PROG_INFO_SIZE
        if _syscall(self._sys_bpf, self._info_command, self._info_attr_pointer, self._info_attr_size) < 0:
            raise _error_for(BPF_OBJ_GET_INFO_BY_FD, ctypes.get_errno())
        written = info_attr.info_len
        if written < _RUN_COUNTERS_END:
            raise UnsupportedKernel(
                "this kernel's bpf_prog_info has no run_time_ns/run_cnt (they arrived in Linux 5.1)"
            )
        run_time_ns, run_count = info.run_time_ns, info.run_cnt
        recursion_misses = info.recursion_misses if written >= _RECURSION_MISSES_END else 0
        key = (info.id, info.load_time)
        before = self._known.get(key)
        if before is not None:
            if (
                before.run_time_ns == run_time_ns
                and before.run_count == run_count
                and before.recursion_misses == recursion_misses
            ):
                return key, before, before  # an idle program: the very same value as last time
            return (
                key,
                ProgramStats(
                    id=before.id,
                    type=before.type,
                    name=before.name,
                    tag=before.tag,
                    load_time_ns=before.load_time_ns,
                    run_time_ns=run_time_ns,
                    run_count=run_count,
                    recursion_misses=recursion_misses,
                    kernel_name=before.kernel_name,
                    footprint=before.footprint,
                ),
                before,
            )
        program_id, load_time_ns, tag = info.id, info.load_time, bytes(info.tag).hex()
        type_name, kernel_name = program_type_name(info.type), info.name.decode("utf-8", "replace")
        jited_size, xlated_size, map_count = info.jited_prog_len, info.xlated_prog_len, info.nr_map_ids
        verified = info.verified_insns if written >= _VERIFIED_INSNS_END else None
        # Last: looking up the BTF name and the map ids reuses the info buffer.
        full_name = self._btf_function_name(fd) or kernel_name
        footprint = ProgramFootprint(
            jited_size_bytes=jited_size,
            xlated_size_bytes=xlated_size,
            verified_instructions=verified,
            memlock_bytes=fdinfo_memlock(fd),
            maps=tuple(
                MapFootprint(map_id, self._map_memlock(map_id)) for map_id in self._map_ids(fd, map_count)
            ),
        )
        return (
            key,
            ProgramStats(
                id=program_id,
                type=type_name,
                name=full_name,
                tag=tag,
                load_time_ns=load_time_ns,
                run_time_ns=run_time_ns,
                run_count=run_count,
                recursion_misses=recursion_misses,
                kernel_name=kernel_name,
                footprint=footprint,
            ),
            None,
        )

    def _get_info(self, fd: int, func_info: _FuncInfo | None = None) -> None:
        info = self._info
        # Pointer/count pairs must go in as zero, or the kernel copies arrays to them.
        self._info_bytes[:] = self._info_zeros
        if func_info is not None:
            info.nr_func_info = 1
            info.func_info_rec_size = ctypes.sizeof(_FuncInfo)
            info.func_info = ctypes.addressof(func_info)
        attr = self._info_attr
        attr.bpf_fd = fd
        attr.info_len = ctypes.sizeof(info)
        if _syscall(self._sys_bpf, self._info_command, self._info_attr_pointer, self._info_attr_size) < 0:
            raise _error_for(BPF_OBJ_GET_INFO_BY_FD, ctypes.get_errno())

    def _map_ids(self, fd: int, count: int) -> list[int]:
        if not count:
            return []
        ids = (ctypes.c_uint32 * count)()
        info = self._info
        self._info_bytes[:] = self._info_zeros
        info.nr_map_ids = count
        info.map_ids = ctypes.addressof(ids)
        attr = self._info_attr
        attr.bpf_fd = fd
        attr.info_len = ctypes.sizeof(info)
        if _syscall(self._sys_bpf, self._info_command, self._info_attr_pointer, self._info_attr_size) < 0:
            return []
        # The kernel says how many it has; it wrote at most as many as there was room for.
        return list(ids[: min(count, info.nr_map_ids)])

    def _map_memlock(self, map_id: int) -> int | None:
        """A map's memlock, looked up once a pass however many programs share it."""
        if map_id not in self._map_memlocks:
            fd = _get_fd_by_id(BPF_MAP_GET_FD_BY_ID, _GetIdAttr(), map_id)
            if fd is None:
                self._map_memlocks[map_id] = None
            else:
                try:
                    self._map_memlocks[map_id] = fdinfo_memlock(fd)
                finally:
                    os.close(fd)
        return self._map_memlocks[map_id]

    def _btf_function_name(self, fd: int) -> str | None:
        """The main function's name from the program's BTF (what bpftool shows), if it has BTF."""
        btf_id, function_count = self._info.btf_id, self._info.nr_func_info
        if not btf_id or not function_count:
            return None
        main_function = _FuncInfo()
        try:
            # The first func_info record is the program's entry point (insn_off 0).
            self._get_info(fd, main_function)
        except BpfError:
            return None
        if btf_id not in self._btf_type_names:
            self._btf_type_names[btf_id] = _btf_type_names(btf_id)
        names = self._btf_type_names[btf_id]
        if names is None or not 0 < main_function.type_id < len(names):
            return None
        return names[main_function.type_id] or None


def fdinfo_memlock(fd: int) -> int | None:
    """The `memlock:` of an fd's /proc fdinfo: what the kernel charges for the program or map
    behind it (bpftool shows the same). None if it cannot be read."""
    # A plain string path: cheaper than pathlib, which parses and interns each part.
    return fdinfo_number(f"/proc/self/fdinfo/{fd}", b"memlock")


def _walk_ids(command: int, attr: _GetIdAttr) -> Iterator[int]:
    current_id = 0
    while True:
        attr.start_id = current_id
        attr.next_id = 0
        attr.open_flags = 0
        try:
            _bpf(command, attr)
        except _NoSuchObject:
            return
        current_id = attr.next_id
        yield current_id


def _get_fd_by_id(command: int, attr: _GetIdAttr, object_id: int) -> int | None:
    attr.start_id = object_id
    attr.next_id = 0
    attr.open_flags = 0
    try:
        return _bpf(command, attr)
    except _NoSuchObject:
        return None


def _btf_type_names(btf_id: int) -> list[str] | None:
    """Every type name of a loaded BTF object, or None if it is gone or unreadable."""
    fd = _get_fd_by_id(BPF_BTF_GET_FD_BY_ID, _GetIdAttr(), btf_id)
    if fd is None:
        return None
    try:
        info = _BtfInfo()
        attr = _InfoByFdAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)  # with no buffer: learns the blob's size
        size = info.btf_size
        blob = ctypes.create_string_buffer(size)
        ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info))
        info.btf = ctypes.addressof(blob)
        info.btf_size = size
        attr.info_len = ctypes.sizeof(info)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        return type_names(blob.raw[: info.btf_size])
    except (BpfError, BtfFormatError):
        return None
    finally:
        os.close(fd)


@frozen
class LinkInfo:
    """What a bpf_link says about where its program is attached."""

    id: int
    type: str
    program_id: int
    attach_type: int | None = None
    ifindex: int | None = None
    cgroup_id: int | None = None
    netns_inode: int | None = None


def read_links() -> list[LinkInfo]:
    """Every bpf_link on the system (Linux 5.8+; none on older kernels)."""
    id_attr = _GetIdAttr()
    try:
        link_ids = list(_walk_ids(BPF_LINK_GET_NEXT_ID, id_attr))
    except BpfError as error:
        if error.errno == errno.EINVAL:  # no links before 5.8
            return []
        raise
    links: list[LinkInfo] = []
    info = _LinkInfo()
    attr = _InfoByFdAttr(info=ctypes.addressof(info))
    for link_id in link_ids:
        fd = _get_fd_by_id(BPF_LINK_GET_FD_BY_ID, id_attr, link_id)
        if fd is None:
            continue
        try:
            ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info))
            attr.bpf_fd = fd
            attr.info_len = ctypes.sizeof(info)
            _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        finally:
            os.close(fd)
        links.append(_link_from_info(info))
    return links


def query_programs(target_fd: int, attach_type: int) -> list[int]:
    """The ids of the programs attached directly to a target (a cgroup's directory fd, a
    network namespace's fd) for one attach type, as `bpftool cgroup tree` lists them: not the
    ones inherited from a parent cgroup. Empty where the kernel does not know the attach type."""
    capacity = 64
    while True:
        ids = (ctypes.c_uint32 * capacity)()
        attr = _ProgQueryAttr(
            target_fd=target_fd, attach_type=attach_type, prog_ids=ctypes.addressof(ids), prog_cnt=capacity
        )
        try:
            _bpf(BPF_PROG_QUERY, attr)
        except BpfError as error:
            if error.errno == errno.ENOSPC:
                capacity *= 4
                continue
            if error.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ENOTDIR):
                return []
            raise
        return list(ids[: attr.prog_cnt])


def _link_from_info(info: _LinkInfo) -> LinkInfo:
    union = bytes(info.union)
    kind = link_type_name(info.type)
    first_u32, second_u32 = struct.unpack_from("<II", union)
    link = LinkInfo(id=info.id, type=kind, program_id=info.prog_id)
    if kind == "xdp":
        return evolve(link, ifindex=first_u32)
    if kind in ("tcx", "netkit"):
        return evolve(link, ifindex=first_u32, attach_type=second_u32)
    if kind == "cgroup":
        cgroup_id, attach_type = struct.unpack_from("<QI", union)
        return evolve(link, cgroup_id=cgroup_id, attach_type=attach_type)
    if kind == "netns":
        return evolve(link, netns_inode=first_u32, attach_type=second_u32)
    return link


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
_BPF_ALU64_MOV_X: Final = 0x07 | 0xB0 | 0x08  # BPF_ALU64 | BPF_MOV | BPF_X
_BPF_ST_MEM_W: Final = 0x02 | 0x60 | 0x00  # BPF_ST | BPF_MEM | BPF_W
_BPF_LD_IMM64: Final = 0x00 | 0x00 | 0x18  # BPF_LD | BPF_IMM | BPF_DW
_BPF_CALL: Final = 0x05 | 0x80  # BPF_JMP | BPF_CALL
_BPF_PSEUDO_MAP_FD: Final = 1
_BPF_FUNC_MAP_LOOKUP_ELEM: Final = 1
_FRAME_POINTER: Final = 10
_BPF_EXIT: Final = 0x05 | 0x90  # BPF_JMP | BPF_EXIT


def mov64_imm(register: int, value: int) -> Instruction:
    return Instruction(code=_BPF_ALU64_MOV_K, regs=register & 0xF, off=0, imm=value)


def add64_imm(register: int, value: int) -> Instruction:
    return Instruction(code=_BPF_ALU64_ADD_K, regs=register & 0xF, off=0, imm=value)


def xor64_imm(register: int, value: int) -> Instruction:
    return Instruction(code=_BPF_ALU64_XOR_K, regs=register & 0xF, off=0, imm=value)


def exit_insn() -> Instruction:
    return Instruction(code=_BPF_EXIT, regs=0, off=0, imm=0)


def map_lookup(map_fd: int) -> list[Instruction]:
    """`bpf_map_lookup_elem(map, &(u32){0})`, result ignored: the program uses the map, so the
    kernel lists it among the program's maps."""
    return [
        # *(u32 *)(r10 - 4) = 0: the key, on the stack
        Instruction(code=_BPF_ST_MEM_W, regs=_FRAME_POINTER, off=-4, imm=0),
        # r1 = the map (ld_imm64 with src_reg BPF_PSEUDO_MAP_FD: the loader passes an fd)
        Instruction(code=_BPF_LD_IMM64, regs=1 | (_BPF_PSEUDO_MAP_FD << 4), off=0, imm=map_fd),
        Instruction(code=0, regs=0, off=0, imm=0),
        # r2 = r10 - 4
        Instruction(code=_BPF_ALU64_MOV_X, regs=2 | (_FRAME_POINTER << 4), off=0, imm=0),
        add64_imm(2, -4),
        Instruction(code=_BPF_CALL, regs=0, off=0, imm=_BPF_FUNC_MAP_LOOKUP_ELEM),
    ]


def map_lookup_value(map_fd: int, key: int, value_size: int) -> bytes:
    """BPF_MAP_LOOKUP_ELEM of a u32 key: the value's bytes."""
    key_buffer = ctypes.c_uint32(key)
    value = ctypes.create_string_buffer(value_size)
    attr = _MapLookupAttr(map_fd=map_fd, key=ctypes.addressof(key_buffer), value=ctypes.addressof(value))
    _bpf(BPF_MAP_LOOKUP_ELEM, attr)
    return value.raw


def test_run(program_fd: int) -> int:
    """BPF_PROG_TEST_RUN once, without input (a raw tracepoint program): its return value."""
    attr = _TestRunAttr(prog_fd=program_fd)
    _bpf(BPF_PROG_TEST_RUN, attr)
    return int(attr.retval)


def create_iterator_link(program_fd: int) -> int:
    """BPF_LINK_CREATE for an iterator program (BPF_TRACE_ITER): the link's fd."""
    return _bpf(BPF_LINK_CREATE, _LinkCreateAttr(prog_fd=program_fd, attach_type=BPF_TRACE_ITER))


def create_iterator(link_fd: int) -> int:
    """BPF_ITER_CREATE: a new fd to read one walk of the iterator from."""
    return _bpf(BPF_ITER_CREATE, _IterCreateAttr(link_fd=link_fd))


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> int:
    """BPF_MAP_CREATE: the new map's fd; the map lives while an fd or a program holds it."""
    encoded_name = name.encode("ascii")
    if len(encoded_name) >= BPF_OBJ_NAME_LEN:
        raise ValueError(f"map name {name!r} is longer than {BPF_OBJ_NAME_LEN - 1} bytes")
    attr = _MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_name=encoded_name,
    )
    return _bpf(BPF_MAP_CREATE, attr)


_VERIFIER_LOG_SIZE: Final = 64 * 1024


def load_program(
    program_type: int,
    instructions: Sequence[Instruction],
    name: str,
    *,
    function_name: str | None = None,
    expected_attach_type: int = 0,
    license_text: str = "GPL",
    attach_btf_id: int = 0,
) -> int:
    """BPF_PROG_LOAD: returns the new program's fd; the program lives while an fd or attachment holds it.

    `name` is the kernel's 15-character name; `function_name`, if given, goes into the
    program's BTF (func_info) as its full name, as a C compiler would put it there.
    """
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
        expected_attach_type=expected_attach_type,
        attach_btf_id=attach_btf_id,
    )
    btf_fd = None
    main_function = _FuncInfo()
    if function_name is not None:
        blob, function_type_id = single_function_btf(function_name)
        btf_fd = load_btf(blob)
        main_function.insn_off = 0
        main_function.type_id = function_type_id
        attr.prog_btf_fd = btf_fd
        attr.func_info_rec_size = ctypes.sizeof(_FuncInfo)
        attr.func_info = ctypes.addressof(main_function)
        attr.func_info_cnt = 1
    try:
        return _load_with_log_on_failure(attr)
    finally:
        if btf_fd is not None:
            os.close(btf_fd)  # the program holds its own reference to the BTF


def _load_with_log_on_failure(attr: _ProgLoadAttr) -> int:
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


def load_btf(blob: bytes) -> int:
    """BPF_BTF_LOAD: the fd of a new BTF object holding `blob`."""
    buffer = ctypes.create_string_buffer(blob, len(blob))
    log_buffer = ctypes.create_string_buffer(_VERIFIER_LOG_SIZE)
    attr = _BtfLoadAttr(
        btf=ctypes.addressof(buffer),
        btf_size=len(blob),
        btf_log_buf=ctypes.addressof(log_buffer),
        btf_log_size=_VERIFIER_LOG_SIZE,
        btf_log_level=1,
    )
    try:
        return _bpf(BPF_BTF_LOAD, attr)
    except BpfError as error:
        log = log_buffer.value.decode("utf-8", "replace")
        raise ProgramLoadError(error.command, error.errno, os.strerror(error.errno), log) from None


def create_xdp_link(program_fd: int, ifindex: int) -> int:
    """BPF_LINK_CREATE for an XDP program on an interface; the fd holds the attachment."""
    attr = _LinkCreateAttr(prog_fd=program_fd, target_ifindex=ifindex, attach_type=BPF_XDP)
    return _bpf(BPF_LINK_CREATE, attr)
