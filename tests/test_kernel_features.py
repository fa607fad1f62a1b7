"""What differs between kernels, on the running one: each feature kstat uses where the kernel
has it, and where it does not, the test skips saying which feature and since when (the kernel
matrix of tests/kernels runs these on every kernel it boots)."""

from __future__ import annotations

import os
import platform
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kstat._logging import configure_logging
from kstat.abi import assembler as asm
from kstat.abi import bpf
from kstat.abi.btf import BtfFormatError, KernelLayout
from kstat.abi.enums import MapType, ProgramType
from kstat.abi.structs import Instruction
from kstat.engine import sampler
from kstat.errors import FeatureMissing, KstatError, ProgramLoadError
from kstat.sources import program_iterator
from kstat.sources.iterator import (
    PER_CPU_METHODS,
    VMLINUX_BTF,
    IteratorReader,
    KernelOffsets,
    per_cpu_offsets,
    possible_cpus,
)
from kstat.testing.loader import OPTMEM_MAX, LoopbackTarget, SocketFilter
from tests.kstat_process import run_kstat
from tests.names import KT

pytestmark = pytest.mark.kernel


def _skip_without(feature: str, since: str) -> None:
    pytest.skip(f"this kernel lacks {feature} (since Linux {since})")


def test_loads_succeed_under_a_small_memlock_limit() -> None:
    """A process started with RLIMIT_MEMLOCK at 64 KiB (older distributions' default) still
    loads a program and a 1 MiB map: kstat lifts the limit where the kernel charges it."""
    script = (
        "import resource\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)\n"
        "resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, hard))\n"
        "from kstat.testing.loader import BpfMap, SocketFilter\n"
        f"with BpfMap.array('{KT}mlock', 1024, 1024) as big:\n"
        f"    with SocketFilter('{KT}mlock', 64, maps=[big]):\n"
        "        print(resource.getrlimit(resource.RLIMIT_MEMLOCK)[0])\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    limit = int(completed.stdout)
    if bpf.memlock_charged():
        assert limit in (resource.RLIM_INFINITY, resource.getrlimit(resource.RLIMIT_MEMLOCK)[1])
    else:
        assert limit == 65536  # nothing to raise: BPF memory goes to the memory cgroup (5.11+)


def test_the_prog_info_counters_this_kernel_fills() -> None:
    with SocketFilter(f"{KT}fields") as program:
        filled = bpf.filled_prog_info_fields(program.fd)
        footprint = program.stats().footprint
    assert {"run_time_ns", "run_cnt"} <= filled
    assert footprint is not None
    assert (footprint.verified_instructions is not None) == ("verified_insns" in filled)
    if "recursion_misses" not in filled:
        _skip_without("bpf_prog_info.recursion_misses", "5.12")


def test_the_iterator_reads_recursion_misses_where_the_kernel_counts_them() -> None:
    offsets = KernelOffsets.of_running_kernel()
    with SocketFilter(f"{KT}misses") as program:
        counted = "recursion_misses" in bpf.filled_prog_info_fields(program.fd)
    assert (offsets.stats_misses is not None) == counted
    with SocketFilter(f"{KT}misses") as program:
        iterator = IteratorReader()
        try:
            assert iterator.counts_recursion_misses == counted
            (read,) = [stats for stats in iterator.read_pass()[0] if stats.id == program.id]
        finally:
            iterator.close()
        by_syscalls = program.stats()
    # Not on this kernel is None, never a zero, by either reader.
    assert (read.counters.recursion_misses is None) == (not counted)
    assert read.counters == by_syscalls.counters
    # Where they live says which layout this is: bpf_prog.stats from 5.12, bpf_prog_aux before.
    assert offsets.stats_in_aux == (not counted)


def _this_cpu_off_on_each_cpu(variable: int, cpus: list[int]) -> list[int] | None:
    """x86's per-CPU `this_cpu_off` read on each CPU: the kernel's own per-CPU offsets. None
    where the kernel cannot give its address (kallsyms without data symbols)."""
    results = bpf.create_map(MapType.ARRAY, 4, 8, max(cpus) + 1, f"{KT}pcpu")
    try:
        code: list[Instruction] = []
        for cpu in cpus:
            store = [
                *asm.load(8, asm.R7, asm.R0, 0),
                asm.store(8, asm.FP, -16, asm.R7),
                asm.store_imm(4, asm.FP, -4, cpu),
                *asm.load_map(asm.R1, results),
                *asm.stack_address(asm.R2, -4),
                *asm.stack_address(asm.R3, -16),
                asm.mov_imm(asm.R4, 0),
                asm.call(asm.MAP_UPDATE_ELEM),
            ]
            code += [
                *asm.load_kernel_variable(asm.R1, variable),
                asm.mov_imm(asm.R2, cpu),
                asm.call(asm.PER_CPU_PTR),
                asm.jump_if("==", asm.R0, 0, len(store)),
                *store,
            ]
        try:
            program = bpf.load_program(
                ProgramType.RAW_TRACEPOINT, [*code, asm.mov_imm(asm.R0, 0), asm.exit_()], f"{KT}pcpu"
            )
        except ProgramLoadError as error:
            if "failed to find the address" in error.verifier_log:
                return None
            raise
        try:
            bpf.test_run(program)
        finally:
            os.close(program)
        return [struct.unpack("<q", bpf.map_lookup_value(results, cpu, 8))[0] for cpu in cpus]
    finally:
        os.close(results)


def _per_cpu_offset_array(cpus: list[int]) -> list[int] | None:
    """The kernel's `__per_cpu_offset[]`, at the address /proc/kallsyms gives root, read by a
    program; None where kallsyms hides it (kptr_restrict, or no data symbols)."""
    address = 0
    with open("/proc/kallsyms", "rb") as symbols:
        for line in symbols:
            if line.endswith(b" __per_cpu_offset\n"):
                address = int(line.split(None, 1)[0], 16)
                break
    if not address:
        return None
    results = bpf.create_map(MapType.ARRAY, 4, 8, max(cpus) + 1, f"{KT}pcpu")
    try:
        code: list[Instruction] = []
        for cpu in cpus:
            code += [
                *asm.load_imm64(asm.R6, address + 8 * cpu),
                *asm.probe_read(-16, 8, asm.R6),
                asm.store_imm(4, asm.FP, -4, cpu),
                *asm.load_map(asm.R1, results),
                *asm.stack_address(asm.R2, -4),
                *asm.stack_address(asm.R3, -16),
                asm.mov_imm(asm.R4, 0),
                asm.call(asm.MAP_UPDATE_ELEM),
            ]
        program = bpf.load_program(
            ProgramType.RAW_TRACEPOINT, [*code, asm.mov_imm(asm.R0, 0), asm.exit_()], f"{KT}pcpu"
        )
        try:
            bpf.test_run(program)
        finally:
            os.close(program)
        return [struct.unpack("<q", bpf.map_lookup_value(results, cpu, 8))[0] for cpu in cpus]
    finally:
        os.close(results)


def test_per_cpu_offsets_are_the_kernels_own() -> None:
    """Each way the iterator finds the per-CPU offsets, against the others and against the
    kernel's own numbers: on x86 each CPU's copy of `this_cpu_off` holds that CPU's offset, and
    everywhere `__per_cpu_offset[]` holds them all (where kallsyms shows root its address)."""
    offsets, cpus = KernelOffsets.of_running_kernel(), possible_cpus()
    found: dict[str, list[int]] = {}
    missing: list[str] = []
    for method in PER_CPU_METHODS:
        try:
            found[method] = per_cpu_offsets(offsets, cpus, method)[0]
        except FeatureMissing as error:
            missing.append(str(error))
    assert found, f"no way to find the per-CPU offsets on this kernel: {missing}"
    first = next(iter(found.values()))
    assert all(values == first for values in found.values())
    assert len(set(first)) == len(cpus)
    layout = KernelLayout(VMLINUX_BTF.read_bytes())
    variable = layout.variable_id("this_cpu_off") if platform.machine() == "x86_64" else None
    own = None if variable is None else _this_cpu_off_on_each_cpu(variable, cpus)
    if own is None:
        own = _per_cpu_offset_array(cpus)
    if own is not None:
        assert first == own
    unchecked = [
        *missing,
        *([] if own is not None else ["the kernel's own offsets (this_cpu_off, __per_cpu_offset)"]),
    ]
    if unchecked:
        pytest.skip(f"checked {', '.join(found)}; not here: {'; '.join(unchecked)}")


@pytest.fixture
def offsets_from_btf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The kernel's offsets worked out afresh from BTF: neither the process's nor the disk's
    cache holds them (so a test can change what the parse finds)."""
    monkeypatch.setattr(program_iterator, "_running_kernel", [])
    monkeypatch.setenv("KSTAT_CACHE_DIR", str(tmp_path / "empty-cache"))


@pytest.mark.usefixtures("offsets_from_btf")
def test_a_missing_struct_field_falls_back_to_syscalls_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As on a kernel laid out otherwise: the typed error, the syscalls, and why in one line."""
    real = KernelLayout.offset_if_any

    def without_stats(
        self: KernelLayout, struct_name: str, member: str, since: str | None = None
    ) -> int | None:
        return None if member == "stats" else real(self, struct_name, member, since)

    monkeypatch.setattr(KernelLayout, "offset_if_any", without_stats)
    configure_logging(verbose=False)  # to the stream capsys reads
    with pytest.raises(FeatureMissing) as missing:
        IteratorReader()
    assert missing.value.feature == "struct bpf_prog_aux.stats"
    reader, method = sampler.open_reader("auto")
    assert method == "syscalls"
    logged = [line for line in capsys.readouterr().err.splitlines() if "snapshots by syscalls" in line]
    assert len(logged) == 1 and "struct bpf_prog_aux.stats" in logged[0]
    reader.close()


# A BTF header (magic, version 1, flags, header length, types at 0, 12 bytes of them, strings
# at 12, one byte of them), then one type of kind 31, which no kernel has defined yet.
_NEWER_KIND = (
    struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + struct.pack("<III", 0, 31 << 24, 0) + b"\0"
)


@pytest.mark.usefixtures("offsets_from_btf")
@pytest.mark.parametrize("blob", [b"not btf at all", _NEWER_KIND], ids=["not BTF", "a kind newer than kstat"])
def test_btf_kstat_cannot_read_falls_back_to_syscalls(
    blob: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    btf = tmp_path / "vmlinux"
    btf.write_bytes(blob)
    with pytest.raises(BtfFormatError):
        KernelOffsets.of_running_kernel(btf)
    original = KernelOffsets.of_running_kernel
    monkeypatch.setattr(KernelOffsets, "of_running_kernel", staticmethod(lambda *_: original(btf)))
    reader, method = sampler.open_reader("auto")
    assert method == "syscalls"
    reader.close()
    with pytest.raises(KstatError, match=r"cannot snapshot by BPF iterator on this kernel: .*BTF"):
        sampler.open_reader("iterator")


def test_a_filter_too_large_for_a_socket_says_so() -> None:
    """A socket filter is charged to the socket's option memory (net.core.optmem_max, 20480
    bytes on 6.1 and before): one too large is refused in one line that says so."""
    optmem_max = int(OPTMEM_MAX.read_text())
    refused = r"does not fit a socket's option memory, net\.core\.optmem_max"
    with (
        SocketFilter(f"{KT}optmem", optmem_max // 8 + 64) as program,
        pytest.raises(KstatError, match=refused),
    ):
        LoopbackTarget(program)


def test_the_demo_at_a_heavier_scale_runs_or_says_why() -> None:
    """`kstat demo --work-scale 3`: its heaviest filter (3077 instructions) fits a socket where
    optmem_max is 131072, not where it is 20480; there kstat says so in one line."""
    completed = run_kstat(
        ["demo", "-duration", "200ms", "--interval", "100ms", "--work-scale", "3"], timeout_s=120
    )
    if int(OPTMEM_MAX.read_text()) >= 3077 * 8 + 1024:
        assert completed.returncode == 0, completed.stderr
        return
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert "net.core.optmem_max" in completed.stderr
    pytest.skip(f"net.core.optmem_max is {int(OPTMEM_MAX.read_text())} here: the demo said so in one line")
