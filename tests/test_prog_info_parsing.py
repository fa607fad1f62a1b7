"""Parsing struct bpf_prog_info as older kernels write it (a faked syscall: parsing only)."""

from __future__ import annotations

import ctypes
import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from kstat.abi import bpf as _syscalls
from kstat.abi import structs as _bpf
from kstat.abi.enums import Command, program_type_name
from kstat.errors import UnsupportedKernel
from kstat.sources.fdinfo import fdinfo_number
from kstat.sources.syscalls import ProgramReader


def fake_kernel(info_len: int) -> object:
    """A stand-in for bpf(2) that fills every field but reports writing only `info_len` bytes."""

    def syscall(
        number: ctypes.c_long, command: ctypes.c_int, pointer: ctypes.c_void_p, size: ctypes.c_uint
    ) -> int:
        assert command.value == Command.OBJ_GET_INFO_BY_FD
        assert pointer.value is not None
        attr = _bpf.InfoByFdAttr.from_address(pointer.value)
        info = _bpf.ProgInfo.from_address(attr.info)
        info.type = 3
        info.id = 42
        info.tag[:] = list(range(1, 9))
        info.name = b"tc_ingress_flow"
        info.load_time = 123
        info.run_time_ns = 5_000
        info.run_cnt = 50
        info.recursion_misses = 7
        attr.info_len = info_len
        return 0

    return syscall


def test_a_current_kernel_struct_gives_every_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_syscalls, "raw_syscall", fake_kernel(ctypes.sizeof(_bpf.ProgInfo)))
    stats = ProgramReader().read_fd(3)
    assert stats.id == 42
    assert stats.type == "SchedCLS"
    assert stats.name == "tc_ingress_flow"
    assert stats.tag == "0102030405060708"
    assert (stats.load_time_ns, stats.run_time_ns, stats.run_count) == (123, 5_000, 50)
    assert stats.recursion_misses == 7


def test_before_5_12_recursion_misses_are_unknown_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_syscalls, "raw_syscall", fake_kernel(_bpf.ProgInfo.recursion_misses.offset))
    stats = ProgramReader().read_fd(3)
    assert (stats.run_count, stats.recursion_misses) == (50, None)


def test_before_5_1_there_are_no_run_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_syscalls, "raw_syscall", fake_kernel(_bpf.ProgInfo.run_time_ns.offset))
    with pytest.raises(UnsupportedKernel, match=r"Linux 5\.1"):
        ProgramReader().read_fd(3)


def test_struct_layout_matches_linux_bpf_h() -> None:
    # Offsets from include/uapi/linux/bpf.h (x86_64 and every 64-bit ABI): a drifted field
    # would silently read the wrong counter.
    assert _bpf.ProgInfo.load_time.offset == 40
    assert _bpf.ProgInfo.name.offset == 64
    assert _bpf.ProgInfo.run_time_ns.offset == 192
    assert _bpf.ProgInfo.run_cnt.offset == 200
    assert _bpf.ProgInfo.recursion_misses.offset == 208
    assert ctypes.sizeof(_bpf.ProgInfo) == 232


@pytest.mark.parametrize(
    ("type_id", "name"),
    [(0, "UnspecifiedProgram"), (1, "SocketFilter"), (6, "XDP"), (29, "LSM"), (99, "ProgramType(99)")],
)
def test_program_types_are_named_as_the_seed_names_them(type_id: int, name: str) -> None:
    assert program_type_name(type_id) == name


def test_a_failed_command_is_named_as_the_kernels_headers_spell_it() -> None:
    assert "bpf(BPF_ITER_CREATE) failed" in str(_syscalls.error_for(Command.ITER_CREATE, errno.EINVAL))
    assert "bpf(BPF_MAP_CREATE) failed" in str(_syscalls.error_for(Command.MAP_CREATE, errno.EINVAL))
    assert "bpf(99) failed" in str(_syscalls.error_for(99, errno.EINVAL))  # one kstat does not name


_FIELDS_TO_CHECK = ("load_time", "name", "run_time_ns", "run_cnt", "recursion_misses", "verified_insns")
_OFFSETS_PROGRAM = """
#include <stdio.h>
#include <stddef.h>
#include <linux/bpf.h>
int main(void) {
%s
    printf("sizeof %%zu\\n", sizeof(struct bpf_prog_info));
    return 0;
}
"""


@pytest.mark.skipif(
    shutil.which("cc") is None or not Path("/usr/include/linux/bpf.h").exists(),
    reason="needs a C compiler and linux-libc-dev's linux/bpf.h",
)
def test_struct_layout_matches_the_installed_header(tmp_path: Path) -> None:
    """Compile the header's own offsets and compare: linux/bpf.h is the authority."""
    lines = "\n".join(
        f'    printf("{field} %zu\\n", offsetof(struct bpf_prog_info, {field}));'
        for field in _FIELDS_TO_CHECK
    )
    source = tmp_path / "offsets.c"
    source.write_text(_OFFSETS_PROGRAM % lines)
    binary = tmp_path / "offsets"
    subprocess.run(["cc", "-o", str(binary), str(source)], check=True)
    printed = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    from_header = dict(line.split() for line in printed.splitlines())
    for field in _FIELDS_TO_CHECK:
        assert int(from_header[field]) == getattr(_bpf.ProgInfo, field).offset, field
    # The installed header may be older (shorter) than kstat's struct, never longer.
    assert int(from_header["sizeof"]) <= ctypes.sizeof(_bpf.ProgInfo)


def test_fdinfo_numbers_are_found_on_any_line(tmp_path: Path) -> None:
    fdinfo = tmp_path / "fdinfo"
    fdinfo.write_bytes(
        b"pos:\t0\nflags:\t02000002\nprog_type:\t1\nprog_tag:\tb37c1b5a2f4e8a1f\nmemlock:\t4096\nprog_id:\t77"
    )
    assert fdinfo_number(str(fdinfo), b"pos") == 0  # the first line
    assert fdinfo_number(str(fdinfo), b"memlock") == 4096
    assert fdinfo_number(str(fdinfo), b"prog_id") == 77  # the last, without a newline
    assert fdinfo_number(str(fdinfo), b"prog") is None  # a prefix of a key is not the key
    assert fdinfo_number(str(fdinfo), b"prog_tag") is None  # not a number
    assert fdinfo_number(str(tmp_path / "closed"), b"memlock") is None
