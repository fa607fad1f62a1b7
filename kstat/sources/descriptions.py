"""What a program is, besides its counters, through bpf(2): its full name (the main function's,
from its BTF) and its footprint (code sizes, verified instructions, memlock, its maps and
theirs), as plain values.

The syscall reader (`kstat.sources.syscalls`) turns them into kstat's program values; `kstat
list` writes them as they are, so this imports nothing but the bpf(2) layer (no attrs or typing
at run time).
"""

from __future__ import annotations

import ctypes
import os

from kstat.abi import bpf
from kstat.abi.enums import Command
from kstat.abi.structs import VERIFIED_INSNS_END, FuncInfo, GetIdAttr
from kstat.errors import BpfError
from kstat.sources.fdinfo import fdinfo_number

TYPE_CHECKING = False
if TYPE_CHECKING:
    # A map id and its memlock (None when it could not be read).
    MapMemlock = tuple[int, int | None]


class ProgramDescription:
    """One program's full name (None without BTF function info) and footprint, as
    `bpf_prog_info` and the fdinfo files give them."""

    __slots__ = (
        "jited_size_bytes",
        "maps",
        "memlock_bytes",
        "name",
        "verified_instructions",
        "xlated_size_bytes",
    )

    def __init__(
        self,
        *,
        name: str | None,
        jited_size_bytes: int,
        xlated_size_bytes: int,
        verified_instructions: int | None,
        memlock_bytes: int | None,
        maps: tuple[MapMemlock, ...],
    ) -> None:
        self.name = name
        self.jited_size_bytes = jited_size_bytes
        self.xlated_size_bytes = xlated_size_bytes
        # bpf_prog_info.verified_insns (Linux 5.16+); None on older kernels.
        self.verified_instructions = verified_instructions
        self.memlock_bytes = memlock_bytes
        # The maps it uses, in the kernel's order, and each one's memlock.
        self.maps = maps


class ProgramDescriber:
    """Describes programs by fd or by id, reusing its buffers. Names and memlocks are cached
    for one batch of programs (a program's BTF object and maps are often shared) until
    `forget_batch`. Not thread-safe: one describer per thread."""

    def __init__(self) -> None:
        self._id_attr = GetIdAttr()
        self._info_call = bpf.ProgInfoCall()
        self._info = self._info_call.info
        # Type names of the BTF objects met during one batch; programs of one object share it.
        self._btf_type_names: dict[int, list[str] | None] = {}
        # Memlock of the maps met during one batch; programs sharing a map look it up once.
        self._map_memlocks: dict[int, int | None] = {}

    def program_id(self, fd: int) -> int:
        """The id of the program behind an fd the caller owns."""
        self._get_info(fd)
        return int(self._info.id)

    def describe_id(self, program_id: int, load_time_ns: int) -> ProgramDescription | None:
        """The program with this id, or None when the id no longer names the program loaded at
        `load_time_ns` (it was unloaded, and the id perhaps given to another)."""
        fd = bpf.fd_by_id(Command.PROG_GET_FD_BY_ID, program_id, self._id_attr)
        if fd is None:
            return None
        try:
            self._get_info(fd)
            if self._info.load_time != load_time_ns:
                return None
            return self._described(fd)
        except BpfError:
            return None
        finally:
            os.close(fd)

    def describe_fd(self, fd: int) -> ProgramDescription:
        """The program behind an fd the caller owns."""
        self._get_info(fd)
        return self._described(fd)

    def forget_batch(self) -> None:
        """Let the batch's names and memlocks go: churn cannot grow them."""
        self._btf_type_names.clear()
        self._map_memlocks.clear()

    def _described(self, fd: int) -> ProgramDescription:
        """The description of the program whose bpf_prog_info is in the buffer."""
        info = self._info
        jited_size, xlated_size, map_count = info.jited_prog_len, info.xlated_prog_len, info.nr_map_ids
        verified = info.verified_insns if self._info_call.attr.info_len >= VERIFIED_INSNS_END else None
        # Last: looking up the BTF name and the map ids reuses the info buffer.
        full_name = self._btf_function_name(fd)
        return ProgramDescription(
            name=full_name,
            jited_size_bytes=jited_size,
            xlated_size_bytes=xlated_size,
            verified_instructions=verified,
            memlock_bytes=fdinfo_memlock(fd),
            maps=tuple((map_id, self._map_memlock(map_id)) for map_id in self._map_ids(fd, map_count)),
        )

    def _get_info(self, fd: int, func_info: FuncInfo | None = None) -> None:
        info = self._info_call.cleared()
        if func_info is not None:
            info.nr_func_info = 1
            info.func_info_rec_size = ctypes.sizeof(FuncInfo)
            info.func_info = ctypes.addressof(func_info)
        if not self._info_call.call(fd):
            raise bpf.error_for(Command.OBJ_GET_INFO_BY_FD, ctypes.get_errno())

    def _map_ids(self, fd: int, count: int) -> list[int]:
        if not count:
            return []
        ids = (ctypes.c_uint32 * count)()
        info = self._info_call.cleared()
        info.nr_map_ids = count
        info.map_ids = ctypes.addressof(ids)
        if not self._info_call.call(fd):
            return []
        # The kernel says how many it has; it wrote at most as many as there was room for.
        return list(ids[: min(count, info.nr_map_ids)])

    def _map_memlock(self, map_id: int) -> int | None:
        """A map's memlock, looked up once a batch however many programs share it."""
        if map_id not in self._map_memlocks:
            fd = bpf.fd_by_id(Command.MAP_GET_FD_BY_ID, map_id)
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
        main_function = FuncInfo()
        try:
            # The first func_info record is the program's entry point (insn_off 0).
            self._get_info(fd, main_function)
        except BpfError:
            return None
        if btf_id not in self._btf_type_names:
            self._btf_type_names[btf_id] = bpf.btf_type_names(btf_id)
        names = self._btf_type_names[btf_id]
        if names is None or not 0 < main_function.type_id < len(names):
            return None
        return names[main_function.type_id] or None


def fdinfo_memlock(fd: int) -> int | None:
    """The `memlock:` of an fd's /proc fdinfo: what the kernel charges for the program or map
    behind it (bpftool shows the same). None if it cannot be read."""
    # A plain string path: cheaper than pathlib, which parses and interns each part.
    return fdinfo_number(f"/proc/self/fdinfo/{fd}", b"memlock")
