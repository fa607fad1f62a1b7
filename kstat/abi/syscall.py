"""The bpf(2) system call itself: its number on this machine and the raw call, over ctypes.

Apart from `kstat.abi.bpf` (which issues every command kstat makes) so that the counter
clock's process can make its one call, the iterator's BPF_ITER_CREATE, importing ctypes and
nothing more of kstat's ABI: that process's memory is kstat's too.
"""

from __future__ import annotations

import ctypes
import os

# Not `typing.TYPE_CHECKING`: neither kstat's launch nor the clock's process imports typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

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
# The raw syscall(2), for callers that build their arguments once:
# `raw_syscall(SYS_BPF, command, attr_address, attr_size)`, errno from ctypes.
raw_syscall = _libc.syscall
raw_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
raw_syscall.restype = ctypes.c_long

# None on an architecture kstat does not know.
SYS_BPF: Final = _SYS_BPF_BY_MACHINE.get(os.uname().machine)


class PreparedCall:
    """One bpf(2) command whose attribute bytes never change (BPF_ITER_CREATE of one link),
    its arguments converted to ctypes once: `call()` is the syscall and nothing else."""

    __slots__ = ("_attr", "_command", "_size", "_sys_bpf")

    def __init__(self, sys_bpf: int, command: int, attr: bytes) -> None:
        self._attr = ctypes.create_string_buffer(attr, len(attr))
        self._sys_bpf = ctypes.c_long(sys_bpf)
        self._command = ctypes.c_int(command)
        self._size = ctypes.c_uint(len(attr))

    def call(self) -> int:
        """The command's non-negative result, or OSError with the kernel's errno."""
        result = int(raw_syscall(self._sys_bpf, self._command, self._attr, self._size))
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return result
