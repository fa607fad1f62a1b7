"""The numbers of include/uapi/linux/bpf.h that kstat uses, and the names it gives them.

Pure data (no ctypes, no syscalls): the core's filters read the program type names from here
too, so that a type is spelled one way in reports, filters and the ABI.

The kernel's enums are classes of plain ints, not enum.IntEnum: kstat's launch reads its
baseline through this module, and enum (with functools and collections) and its classes cost
that launch milliseconds. A command's name, where an error message wants it, is `spelled`.
"""

from __future__ import annotations

# Not imported at run time: kstat's launch reads its baseline through this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class Command:
    """enum bpf_cmd."""

    MAP_CREATE: Final = 0
    MAP_LOOKUP_ELEM: Final = 1
    MAP_UPDATE_ELEM: Final = 2
    PROG_LOAD: Final = 5
    PROG_TEST_RUN: Final = 10
    PROG_GET_NEXT_ID: Final = 11
    PROG_GET_FD_BY_ID: Final = 13
    MAP_GET_FD_BY_ID: Final = 14
    OBJ_GET_INFO_BY_FD: Final = 15
    PROG_QUERY: Final = 16
    BTF_LOAD: Final = 18
    BTF_GET_FD_BY_ID: Final = 19
    LINK_CREATE: Final = 28
    LINK_GET_FD_BY_ID: Final = 30
    LINK_GET_NEXT_ID: Final = 31
    ENABLE_STATS: Final = 32
    ITER_CREATE: Final = 33


def spelled(command: int) -> str:
    """A command as the kernel's headers and error messages spell it (`BPF_PROG_LOAD`); one
    kstat does not name, by its number."""
    for name, value in vars(Command).items():
        if value == command and name.isupper():
            return f"BPF_{name}"
    return str(command)


class ProgramType:
    """enum bpf_prog_type: the types kstat loads itself (every type has a name below)."""

    SOCKET_FILTER: Final = 1
    SCHED_CLS: Final = 3
    XDP: Final = 6
    CGROUP_SKB: Final = 8
    RAW_TRACEPOINT: Final = 17
    TRACING: Final = 26


class MapType:
    """enum bpf_map_type: the types kstat creates."""

    HASH: Final = 1
    ARRAY: Final = 2
    PERCPU_ARRAY: Final = 6


class AttachType:
    """enum bpf_attach_type: the ones kstat names or attaches by (checked against this kernel's
    BTF); the cgroup ones are in CGROUP_ATTACH_TYPES."""

    CGROUP_INET_EGRESS: Final = 1
    FLOW_DISSECTOR: Final = 17
    TRACE_ITER: Final = 28
    SK_LOOKUP: Final = 36
    XDP: Final = 37
    TCX_INGRESS: Final = 46
    TCX_EGRESS: Final = 47
    NETKIT_PRIMARY: Final = 54
    NETKIT_PEER: Final = 55


# enum bpf_stats_type
STATS_RUN_TIME: Final = 0

OBJ_NAME_LEN: Final = 16
TAG_SIZE: Final = 8

# setsockopt(SOL_SOCKET, SO_ATTACH_BPF, prog_fd) attaches an eBPF socket filter
# (include/uapi/asm-generic/socket.h).
SO_ATTACH_BPF: Final = 50

# enum bpf_prog_type, named as cilium/ebpf's ProgramType.String() names them, so reports keep
# the shape that the Go collect-kernel-stats tool gave.
PROGRAM_TYPE_NAMES: Final = (
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
    AttachType.FLOW_DISSECTOR: "flow_dissector",
    AttachType.SK_LOOKUP: "sk_lookup",
    AttachType.XDP: "xdp",
    AttachType.TCX_INGRESS: "ingress",
    AttachType.TCX_EGRESS: "egress",
    AttachType.NETKIT_PRIMARY: "primary",
    AttachType.NETKIT_PEER: "peer",
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
    return PROGRAM_TYPE_NAMES


def program_type_name(type_id: int) -> str:
    """The cilium/ebpf name of a program type; unknown (newer) types as `ProgramType(N)`."""
    if 0 <= type_id < len(PROGRAM_TYPE_NAMES):
        return PROGRAM_TYPE_NAMES[type_id]
    return f"ProgramType({type_id})"
