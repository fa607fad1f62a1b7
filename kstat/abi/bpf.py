"""bpf(2) over ctypes: the syscall, what each errno means, and one function per command kstat
issues. The only module that calls the syscall; its structs are in `kstat.abi.structs`, its
numbers in `kstat.abi.enums`. No policy: what to read, how often and what to cache is for
`kstat.sources`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource

# Not threading: it imports more than its lock (the launch reads its baseline through here).
from _thread import allocate_lock

from kstat.abi import syscall
from kstat.abi.btf import BtfFormatError, single_function_btf, type_names
from kstat.abi.enums import (
    OBJ_NAME_LEN,
    STATS_RUN_TIME,
    AttachType,
    Command,
    MapType,
    spelled,
)
from kstat.abi.structs import (
    RECURSION_MISSES_END,
    RUN_COUNTERS_END,
    VERIFIED_INSNS_END,
    BtfInfo,
    BtfLoadAttr,
    EnableStatsAttr,
    FuncInfo,
    GetIdAttr,
    InfoByFdAttr,
    Instruction,
    IterCreateAttr,
    LinkCreateAttr,
    MapCreateAttr,
    MapLookupAttr,
    ProgInfo,
    ProgLoadAttr,
    ProgQueryAttr,
    TestRunAttr,
)
from kstat.errors import BpfError, FeatureMissing, PermissionDenied, ProgramLoadError, UnsupportedKernel

# Not imported at run time: kstat's launch reads its baseline through this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Final


# The syscall's number and the raw call (kstat.abi.syscall), also under these names: the
# syscall readers make the raw call themselves, and tests stand in for it here.
SYS_BPF: Final = syscall.SYS_BPF
raw_syscall = syscall.raw_syscall


def require_syscall() -> int:
    """The bpf(2) syscall number here, or UnsupportedKernel."""
    if SYS_BPF is None:
        raise UnsupportedKernel(f"kstat does not know the bpf(2) syscall number on {os.uname().machine}")
    return SYS_BPF


class ProgInfoCall:
    """BPF_OBJ_GET_INFO_BY_FD of programs into one bpf_prog_info, reused, its ctypes arguments
    built once (converting Python ints and addresses on every call costs as much as the call):
    for the readers that make it once per program (kstat.sources.syscalls, .descriptions)."""

    def __init__(self) -> None:
        self.info = ProgInfo()
        # `attr.info_len` says, after a call, how much of the info the kernel wrote.
        self.attr = InfoByFdAttr(info_len=ctypes.sizeof(ProgInfo), info=ctypes.addressof(self.info))
        self._info_bytes = memoryview(self.info).cast("B")
        self._info_zeros = bytes(ctypes.sizeof(ProgInfo))
        self._sys_bpf = ctypes.c_long(require_syscall())
        self._command = ctypes.c_int(Command.OBJ_GET_INFO_BY_FD)
        self._attr_pointer = ctypes.c_void_p(ctypes.addressof(self.attr))
        self._attr_size = ctypes.c_uint(ctypes.sizeof(InfoByFdAttr))

    def cleared(self) -> ProgInfo:
        """The info zeroed, for the caller to ask for arrays in it: pointer/count pairs must go
        in as zero, or the kernel copies arrays to them."""
        self._info_bytes[:] = self._info_zeros
        return self.info

    def call(self, fd: int) -> bool:
        """Whether the kernel filled the info for the program behind `fd` (ctypes.get_errno()
        says why not)."""
        attr = self.attr
        attr.bpf_fd = fd
        attr.info_len = ctypes.sizeof(ProgInfo)
        return bool(raw_syscall(self._sys_bpf, self._command, self._attr_pointer, self._attr_size) >= 0)


def bpf(command: int, attr: ctypes.Structure) -> int:
    """Issue one bpf(2) command; return its non-negative result or raise the matching error."""
    result = raw_syscall(require_syscall(), command, ctypes.addressof(attr), ctypes.sizeof(attr))
    if result >= 0:
        return int(result)
    raise error_for(command, ctypes.get_errno())


def error_for(command: int, errno_value: int) -> BpfError | UnsupportedKernel | PermissionDenied:
    """The typed error for a failed command's errno."""
    name = spelled(command)
    message = os.strerror(errno_value)
    # BPF_PROG_LOAD says EACCES when the verifier rejects a program: that is no privilege matter.
    denied = errno_value == errno.EPERM or (errno_value == errno.EACCES and command != Command.PROG_LOAD)
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
        return NoSuchObject(name, errno_value, message)
    return BpfError(name, errno_value, message)


class NoSuchObject(BpfError):
    """ENOENT: no next id, or the id was freed (the program was unloaded) since it was listed."""


# --- commands -----------------------------------------------------------------------------------


def enable_run_time_stats() -> int:
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): stats stay on while the returned fd is open.

    The kernel counts these fds, so several holders (two kstat processes) never switch each
    other's stats off. Raises FeatureMissing before Linux 5.8, where the command is unknown
    (the caller falls back to the sysctl).
    """
    attr = EnableStatsAttr(type=STATS_RUN_TIME)
    try:
        return bpf(Command.ENABLE_STATS, attr)
    except BpfError as error:
        if error.errno == errno.EINVAL:
            raise FeatureMissing("BPF_ENABLE_STATS", "5.8") from error
        raise


def walk_ids(command: int, attr: GetIdAttr | None = None) -> Iterator[int]:
    """Every id of one kind (BPF_PROG_GET_NEXT_ID, BPF_LINK_GET_NEXT_ID), ascending."""
    attr = GetIdAttr() if attr is None else attr
    current_id = 0
    while True:
        attr.start_id = current_id
        attr.next_id = 0
        attr.open_flags = 0
        try:
            bpf(command, attr)
        except NoSuchObject:
            return
        current_id = attr.next_id
        yield current_id


def fd_by_id(command: int, object_id: int, attr: GetIdAttr | None = None) -> int | None:
    """A new fd to the object with this id (BPF_*_GET_FD_BY_ID), or None when it is gone."""
    attr = GetIdAttr() if attr is None else attr
    attr.start_id = object_id
    attr.next_id = 0
    attr.open_flags = 0
    try:
        return bpf(command, attr)
    except NoSuchObject:
        return None


def program_fd(program_id: int) -> int | None:
    """A new fd to a loaded program, or None when that id names none any more."""
    return fd_by_id(Command.PROG_GET_FD_BY_ID, program_id)


def object_info(fd: int, info: ctypes.Structure, size: int | None = None) -> int:
    """BPF_OBJ_GET_INFO_BY_FD into `info`: how many bytes the kernel wrote (an older kernel
    writes a shorter struct)."""
    attr = InfoByFdAttr(
        bpf_fd=fd, info_len=ctypes.sizeof(info) if size is None else size, info=ctypes.addressof(info)
    )
    bpf(Command.OBJ_GET_INFO_BY_FD, attr)
    return int(attr.info_len)


def btf_type_names(btf_id: int) -> list[str] | None:
    """Every type name of a loaded BTF object, or None if it is gone or unreadable."""
    fd = fd_by_id(Command.BTF_GET_FD_BY_ID, btf_id)
    if fd is None:
        return None
    try:
        info = BtfInfo()
        object_info(fd, info)  # with no buffer: learns the blob's size
        size = info.btf_size
        blob = ctypes.create_string_buffer(size)
        ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info))
        info.btf = ctypes.addressof(blob)
        info.btf_size = size
        object_info(fd, info)
        return type_names(blob.raw[: info.btf_size])
    except (BpfError, BtfFormatError):
        return None
    finally:
        os.close(fd)


def query_programs(target_fd: int, attach_type: int) -> list[int]:
    """The ids of the programs attached directly to a target (a cgroup's directory fd, a
    network namespace's fd) for one attach type, as `bpftool cgroup tree` lists them: not the
    ones inherited from a parent cgroup. Empty where the kernel does not know the attach type."""
    capacity = 64
    while True:
        ids = (ctypes.c_uint32 * capacity)()
        attr = ProgQueryAttr(
            target_fd=target_fd, attach_type=attach_type, prog_ids=ctypes.addressof(ids), prog_cnt=capacity
        )
        try:
            bpf(Command.PROG_QUERY, attr)
        except BpfError as error:
            if error.errno == errno.ENOSPC:
                capacity *= 4
                continue
            if error.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ENOTDIR):
                return []
            raise
        return list(ids[: attr.prog_cnt])


# --- kstat's own programs and maps (the iterator, the demo workload, the tests) ---------------


def map_lookup_value(map_fd: int, key: int, value_size: int) -> bytes:
    """BPF_MAP_LOOKUP_ELEM of a u32 key: the value's bytes."""
    key_buffer = ctypes.c_uint32(key)
    value = ctypes.create_string_buffer(value_size)
    attr = MapLookupAttr(map_fd=map_fd, key=ctypes.addressof(key_buffer), value=ctypes.addressof(value))
    bpf(Command.MAP_LOOKUP_ELEM, attr)
    return value.raw


def map_update_value(map_fd: int, key: int, value: bytes) -> None:
    """BPF_MAP_UPDATE_ELEM of a u32 key (BPF_ANY: created or replaced)."""
    key_buffer = ctypes.c_uint32(key)
    value_buffer = ctypes.create_string_buffer(value, len(value))
    attr = MapLookupAttr(
        map_fd=map_fd, key=ctypes.addressof(key_buffer), value=ctypes.addressof(value_buffer)
    )
    bpf(Command.MAP_UPDATE_ELEM, attr)


# BPF_PROG_TEST_RUN's flag to run a raw tracepoint program on the CPU the attr names (5.10).
TEST_RUN_ON_CPU: Final = 1


def test_run(program_fd: int, cpu: int | None = None) -> int:
    """BPF_PROG_TEST_RUN once, without input (a raw tracepoint program), on `cpu` if given (an
    online one): its return value."""
    attr = TestRunAttr(prog_fd=program_fd)
    if cpu is not None:
        attr.flags, attr.cpu = TEST_RUN_ON_CPU, cpu
    bpf(Command.PROG_TEST_RUN, attr)
    return int(attr.retval)


def create_iterator_link(program_fd: int) -> int:
    """BPF_LINK_CREATE for an iterator program (BPF_TRACE_ITER): the link's fd."""
    return bpf(Command.LINK_CREATE, LinkCreateAttr(prog_fd=program_fd, attach_type=AttachType.TRACE_ITER))


def create_iterator(link_fd: int) -> int:
    """BPF_ITER_CREATE: a new fd to read one walk of the iterator from."""
    return bpf(Command.ITER_CREATE, IterCreateAttr(link_fd=link_fd))


def iterator_create_call(link_fd: int) -> tuple[int, int, bytes]:
    """BPF_ITER_CREATE of `link_fd` as the syscall's number, the command and its attribute
    bytes, for a process that makes the call itself (`kstat.abi.syscall.PreparedCall`)."""
    return require_syscall(), Command.ITER_CREATE, bytes(IterCreateAttr(link_fd=link_fd))


# --- RLIMIT_MEMLOCK: what kernels before 5.11 charge BPF memory to ------------------------------

_memlock_lock = allocate_lock()
_memlock_charged: bool | None = None
_memlock_allowed = False


def memlock_charged() -> bool:
    """Whether this kernel charges maps and programs to RLIMIT_MEMLOCK (before 5.11, which
    moved BPF memory to the memory cgroup). Found as it is, once: a one-element map created
    with the soft limit at zero, which such a kernel refuses with EPERM."""
    global _memlock_charged  # noqa: PLW0603 (a fact of the running kernel, probed once)
    with _memlock_lock:
        if _memlock_charged is None:
            _memlock_charged = _probe_memlock()
        return _memlock_charged


def _create_probe_map() -> int:
    attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1)
    return int(
        raw_syscall(require_syscall(), Command.MAP_CREATE, ctypes.addressof(attr), ctypes.sizeof(attr))
    )


def _probe_memlock() -> bool:
    if SYS_BPF is None:
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, hard))
    try:
        result = _create_probe_map()
        refused = result < 0 and ctypes.get_errno() == errno.EPERM
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))
    if result >= 0:
        os.close(result)
        return False
    if not refused:
        return False
    # EPERM may also mean no privilege at all: charged only if the same map fits without a limit.
    result = _create_probe_map()
    if result < 0:
        return False
    os.close(result)
    return True


def allow_locked_memory() -> None:
    """Lift RLIMIT_MEMLOCK where the kernel still charges BPF memory to it, as libbpf does, so
    that loads do not fail for a limit of 8 MiB (64 KiB on older distributions). Once a process,
    before kstat's first map, program or BTF object; nothing where BPF memory is accounted by
    memory cgroup (5.11+) or the limit is already none."""
    global _memlock_allowed  # noqa: PLW0603 (done once a process)
    if _memlock_allowed or SYS_BPF is None:
        return
    _memlock_allowed = True
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY or not memlock_charged():
        return
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):  # no CAP_SYS_RESOURCE: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))


def filled_prog_info_fields(fd: int) -> frozenset[str]:
    """Which of bpf_prog_info's counters this kernel fills, for the program behind `fd`: an older
    kernel writes a shorter struct."""
    written = object_info(fd, ProgInfo())
    ends = {
        "run_time_ns": RUN_COUNTERS_END,
        "run_cnt": RUN_COUNTERS_END,
        "recursion_misses": RECURSION_MISSES_END,
        "verified_insns": VERIFIED_INSNS_END,
    }
    return frozenset(name for name, end in ends.items() if written >= end)


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> int:
    """BPF_MAP_CREATE: the new map's fd; the map lives while an fd or a program holds it."""
    allow_locked_memory()
    encoded_name = name.encode("ascii")
    if len(encoded_name) >= OBJ_NAME_LEN:
        raise ValueError(f"map name {name!r} is longer than {OBJ_NAME_LEN - 1} bytes")
    attr = MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_name=encoded_name,
    )
    return bpf(Command.MAP_CREATE, attr)


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
    allow_locked_memory()
    encoded_name = name.encode("ascii")
    if len(encoded_name) >= OBJ_NAME_LEN:
        raise ValueError(f"program name {name!r} is longer than {OBJ_NAME_LEN - 1} bytes")
    insns = (Instruction * len(instructions))(*instructions)
    license_buffer = ctypes.create_string_buffer(license_text.encode("ascii"))
    attr = ProgLoadAttr(
        prog_type=program_type,
        insn_cnt=len(instructions),
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_buffer),
        prog_name=encoded_name,
        expected_attach_type=expected_attach_type,
        attach_btf_id=attach_btf_id,
    )
    btf_fd = None
    main_function = FuncInfo()
    if function_name is not None:
        blob, function_type_id = single_function_btf(function_name)
        btf_fd = load_btf(blob)
        main_function.insn_off = 0
        main_function.type_id = function_type_id
        attr.prog_btf_fd = btf_fd
        attr.func_info_rec_size = ctypes.sizeof(FuncInfo)
        attr.func_info = ctypes.addressof(main_function)
        attr.func_info_cnt = 1
    try:
        return _load_with_log_on_failure(attr)
    finally:
        if btf_fd is not None:
            os.close(btf_fd)  # the program holds its own reference to the BTF


def _load_with_log_on_failure(attr: ProgLoadAttr) -> int:
    try:
        return bpf(Command.PROG_LOAD, attr)
    except BpfError as error:
        first_error = error
    # Load again with the verifier's log on, only to explain the failure.
    log_buffer = ctypes.create_string_buffer(_VERIFIER_LOG_SIZE)
    attr.log_level = 1
    attr.log_size = _VERIFIER_LOG_SIZE
    attr.log_buf = ctypes.addressof(log_buffer)
    try:
        return bpf(Command.PROG_LOAD, attr)
    except BpfError as logged_error:
        log = log_buffer.value.decode("utf-8", "replace")
        raise ProgramLoadError(
            logged_error.command, logged_error.errno, os.strerror(logged_error.errno), log
        ) from first_error


def load_btf(blob: bytes) -> int:
    """BPF_BTF_LOAD: the fd of a new BTF object holding `blob`."""
    allow_locked_memory()
    buffer = ctypes.create_string_buffer(blob, len(blob))
    log_buffer = ctypes.create_string_buffer(_VERIFIER_LOG_SIZE)
    attr = BtfLoadAttr(
        btf=ctypes.addressof(buffer),
        btf_size=len(blob),
        btf_log_buf=ctypes.addressof(log_buffer),
        btf_log_size=_VERIFIER_LOG_SIZE,
        btf_log_level=1,
    )
    try:
        return bpf(Command.BTF_LOAD, attr)
    except BpfError as error:
        log = log_buffer.value.decode("utf-8", "replace")
        raise ProgramLoadError(error.command, error.errno, os.strerror(error.errno), log) from None


def create_xdp_link(program_fd: int, ifindex: int) -> int:
    """BPF_LINK_CREATE for an XDP program on an interface; the fd holds the attachment."""
    return create_link(program_fd, ifindex, AttachType.XDP)


def create_link(program_fd: int, target: int, attach_type: int) -> int:
    """BPF_LINK_CREATE: `target` is an interface's index (XDP) or an fd (a cgroup's, ...)."""
    attr = LinkCreateAttr(prog_fd=program_fd, target_ifindex=target, attach_type=attach_type)
    return bpf(Command.LINK_CREATE, attr)
