"""Every program's counters in one read: a BPF iterator over programs (`iter/bpf_prog`,
Linux 5.8+), built by kstat itself, with no compiler at run time.

The syscall path costs three or four syscalls a program (next id, fd by id, info, close). Here a
program of kstat's own, attached to the kernel's program iterator, runs once per loaded program
inside one `read()` and writes a fixed 64-byte record: id, type, tag, load time, the kernel's
name, and the run-time counters summed over every possible CPU, the values `bpf_prog_info`
would give.

How it is built on the running kernel:

- Every field's offset (in `bpf_prog`, `bpf_prog_aux`, `bpf_prog_stats`, the iterator's context,
  `bpf_array`) and the attach target's type id come from its BTF (`/sys/kernel/btf/vmlinux`).
- The per-CPU stats hang off `bpf_prog` (5.12+, with `misses`) or, before, off `bpf_prog_aux`
  (without): wherever this kernel's BTF says. The pointer is per-CPU, but a kernel whose BTF does
  not tag it as one lets no helper turn it into a CPU's address. The CPUs' per-CPU offsets are
  found without symbols by a small program run once (BPF_PROG_TEST_RUN): from 5.19, it reads a
  one-element per-CPU array map's per-CPU pointer and, by `bpf_map_lookup_percpu_elem`, its
  element's address on each CPU; before, a per-CPU variable of the kernel's own (a VAR of its
  BTF) and, by `bpf_per_cpu_ptr` (5.10), its address on each CPU; where the BTF lists no such
  variable (Debian's 5.10), the map's element as `bpf_map_lookup_elem` finds it on the CPU the
  program is run on, run once on each CPU (BPF_F_TEST_RUN_ON_CPU, 5.10): possible CPUs that are
  offline then cannot be reached, and the iterator is refused. The difference is that CPU's
  offset. The iterator then reads `stats + offset` for every possible CPU and sums.
- The offsets are constants of the running kernel, so they go into the iterator's code as
  immediates, one unrolled read per possible CPU.

Asked to keep them per CPU (`per_cpu=True`), the iterator writes, before each program's 64-byte
record, each possible CPU's run count and run time (16 bytes a CPU, in the order of the
possible CPUs) from the same reads it sums: the record's sums are those CPUs' totals exactly.

The iterator program is itself a loaded program: its own record is left out.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
from pathlib import Path
from typing import Final

from attrs import evolve, frozen

from kstat.abi import assembler as asm
from kstat.abi.bpf import (
    create_iterator,
    create_iterator_link,
    create_map,
    load_program,
    map_lookup_value,
    test_run,
)
from kstat.abi.btf import KernelLayout
from kstat.abi.enums import AttachType, MapType, ProgramType, program_type_name
from kstat.abi.structs import Instruction
from kstat.core.counters import Counters
from kstat.core.model import ProgramChanges, ProgramStats, Reading
from kstat.errors import BpfError, FeatureMissing
from kstat.sources import offsets_cache
from kstat.sources.clocks import ClockStart
from kstat.sources.syscalls import ProgramReader
from kstat.text import from_host

VMLINUX_BTF: Final = Path("/sys/kernel/btf/vmlinux")
POSSIBLE_CPUS: Final = Path("/sys/devices/system/cpu/possible")
ONLINE_CPUS: Final = Path("/sys/devices/system/cpu/online")
# id, type, tag, load_time, name, run_cnt, run_time_ns, recursion_misses
RECORD: Final = struct.Struct("<II8sQ16sQQQ")
# readv(2)'s buffers: page-sized, as many as the last walk filled (and more as it grows).
_PAGE: Final = 4096
_FIRST_BUFFERS: Final = 64
_MOST_BUFFERS: Final = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024
# One CPU's run_cnt and run_time_ns, before the record when the iterator keeps them per CPU.
CPU_ENTRY: Final = struct.Struct("<QQ")
ITERATOR_NAME: Final = "kstat_prog_iter"
# The program that finds the CPUs' per-CPU offsets, loaded for an instant before the iterator.
PROBE_NAME: Final = "kstat_pcpu_off"

# The record on the iterator's stack: r10 - 64 .. r10 - 1, fields at these offsets from r10.
_ID, _TYPE, _TAG, _LOAD_TIME, _NAME, _RUN_COUNT, _RUN_TIME, _MISSES = -64, -60, -56, -48, -40, -24, -16, -8
_SCRATCH = -72  # a pointer read from the kernel, then reloaded as a plain number
_STATS = -96  # one CPU's struct bpf_prog_stats (cnt, nsecs, misses)
_CPU_ENTRY = -112  # one CPU's run count and run time, as written before the record


_layouts: dict[tuple[Path, int, int], KernelLayout] = {}


def btf_key(btf: Path) -> tuple[Path, int, int]:
    """Which BTF a file holds now (a kernel module's can be reloaded): its path, size, mtime."""
    status = btf.stat()
    return btf, status.st_size, status.st_mtime_ns


def kernel_layout(btf: Path = VMLINUX_BTF) -> KernelLayout:
    """The running kernel's BTF, parsed once however many of kstat's iterators read it (a
    tenth of a second of Python for a 5 MB vmlinux BTF), until `forget_kernel_layout`."""
    key = btf_key(btf)
    layout = _layouts.get(key)
    if layout is None:
        layout = _layouts[key] = KernelLayout(btf.read_bytes())
    return layout


def forget_kernel_layout() -> None:
    """Let the parsed BTF go (8 MB for a 5 MB vmlinux BTF: the blob, its strings, where each
    type starts) once the window's programs are built: the offsets they took are kept apart
    (`kstat.sources.offsets_cache`), and what needs the BTF again parses it again."""
    _layouts.clear()


@frozen
class KernelOffsets:
    """Where the iterator finds what it reads, on this kernel."""

    attach_btf_id: int
    context_meta: int
    context_prog: int
    meta_seq: int
    prog_type: int
    prog_tag: int
    prog_aux: int
    aux_id: int
    aux_name: int
    aux_load_time: int
    # The per-CPU stats pointer: a member of bpf_prog (5.12+) or, before, of bpf_prog_aux.
    stats_pointer: int
    stats_in_aux: bool
    stats_count: int
    stats_time: int
    stats_misses: int | None  # 5.12+
    array_pptrs: int
    # A per-CPU variable of the kernel's (its BTF id), for bpf_per_cpu_ptr; None without one.
    per_cpu_variable: int | None

    @staticmethod
    def of_running_kernel(btf: Path = VMLINUX_BTF) -> KernelOffsets:
        """FeatureMissing when this kernel lacks one of them (too old, or laid out otherwise);
        BtfFormatError when its BTF cannot be read; OSError when it has none."""
        layout = kernel_layout(btf)
        prog_stats = layout.offset_if_any("bpf_prog", "stats")
        stats_pointer = prog_stats if prog_stats is not None else layout.offset("bpf_prog_aux", "stats")
        try:
            per_cpu_variable: int | None = layout.per_cpu_variable()
        except FeatureMissing:
            per_cpu_variable = None
        return KernelOffsets(
            attach_btf_id=layout.function_id("bpf_iter_bpf_prog", since="5.8"),
            context_meta=layout.offset("bpf_iter__bpf_prog", "meta", since="5.8"),
            context_prog=layout.offset("bpf_iter__bpf_prog", "prog", since="5.8"),
            meta_seq=layout.offset("bpf_iter_meta", "seq", since="5.8"),
            prog_type=layout.offset("bpf_prog", "type"),
            prog_tag=layout.offset("bpf_prog", "tag"),
            prog_aux=layout.offset("bpf_prog", "aux"),
            aux_id=layout.offset("bpf_prog_aux", "id"),
            aux_name=layout.offset("bpf_prog_aux", "name"),
            aux_load_time=layout.offset("bpf_prog_aux", "load_time"),
            stats_pointer=stats_pointer,
            stats_in_aux=prog_stats is None,
            stats_count=layout.offset("bpf_prog_stats", "cnt", since="5.1"),
            stats_time=layout.offset("bpf_prog_stats", "nsecs", since="5.1"),
            stats_misses=layout.offset_if_any("bpf_prog_stats", "misses", since="5.12"),
            array_pptrs=layout.offset("bpf_array", "pptrs"),
            per_cpu_variable=per_cpu_variable,
        )

    @property
    def stats_fields(self) -> list[tuple[int, int]]:
        """(offset in one CPU's bpf_prog_stats, offset of its total in the record)."""
        fields = [(self.stats_count, _RUN_COUNT), (self.stats_time, _RUN_TIME)]
        if self.stats_misses is not None:
            fields.append((self.stats_misses, _MISSES))
        return fields


def possible_cpus(path: Path = POSSIBLE_CPUS) -> list[int]:
    """The CPUs that may ever be online (`0-3,8-11`): every one has per-CPU counters."""
    cpus: list[int] = []
    for part in path.read_text().strip().split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


# How the per-CPU offsets are found: by the helper each needs (and the version that brought it).
BY_MAP_LOOKUP: Final = "bpf_map_lookup_percpu_elem"  # 5.19
BY_PER_CPU_PTR: Final = "bpf_per_cpu_ptr"  # 5.10, with the kernel's per-CPU variables in its BTF
BY_RUN_ON_EACH_CPU: Final = "bpf_map_lookup_elem on each CPU"  # 5.10, every possible CPU online
PER_CPU_METHODS: Final = (BY_MAP_LOOKUP, BY_PER_CPU_PTR, BY_RUN_ON_EACH_CPU)


def per_cpu_offsets(
    offsets: KernelOffsets, cpus: list[int], method: str | None = None
) -> tuple[list[int], str]:
    """Each CPU's per-CPU offset (what the kernel adds to a per-CPU pointer on that CPU), and
    which helper found them: the first of PER_CPU_METHODS this kernel lets kstat use, or
    `method`. FeatureMissing when none."""
    refusals = []
    for candidate in PER_CPU_METHODS if method is None else (method,):
        try:
            return _per_cpu_offsets_by(candidate, offsets, cpus), candidate
        except BpfError as error:
            # The load or the run refused: this kernel lacks the helper, or lets kstat not use it.
            missing = FeatureMissing(candidate, _SINCE[candidate], str(error).strip().splitlines()[0])
            if method is not None:
                raise missing from error
            refusals.append(str(missing))
        except FeatureMissing as error:
            if method is not None:
                raise
            refusals.append(str(error))
    raise FeatureMissing("a way to find per-CPU offsets", None, "; ".join(refusals))


_SINCE: Final = {BY_MAP_LOOKUP: "5.19", BY_PER_CPU_PTR: "5.10", BY_RUN_ON_EACH_CPU: "5.10"}


def _per_cpu_offsets_by(method: str, offsets: KernelOffsets, cpus: list[int]) -> list[int]:
    if method == BY_RUN_ON_EACH_CPU:
        offline = sorted(set(cpus) - set(possible_cpus(ONLINE_CPUS)))
        if offline:
            raise FeatureMissing(
                "bpf_map_lookup_percpu_elem",
                "5.19",
                f"CPUs {', '.join(map(str, offline))} are possible but offline: no program runs there",
            )
    results = create_map(MapType.ARRAY, 4, 8, max(cpus) + 1, "kstat_pcpu_off")
    probe = None
    try:
        if method in (BY_RUN_ON_EACH_CPU, BY_MAP_LOOKUP):
            probe = create_map(MapType.PERCPU_ARRAY, 4, 8, 1, "kstat_pcpu")
        code = probe_program(method, offsets, probe or 0, results, cpus)
        program = load_program(ProgramType.RAW_TRACEPOINT, code, PROBE_NAME)
        if method == BY_RUN_ON_EACH_CPU:
            try:
                for cpu in cpus:
                    test_run(program, cpu)
            finally:
                os.close(program)
            return [struct.unpack("<q", map_lookup_value(results, cpu, 8))[0] for cpu in cpus]
        try:
            test_run(program)
        finally:
            os.close(program)
        found = []
        for cpu in cpus:
            (offset,) = struct.unpack("<q", map_lookup_value(results, cpu, 8))
            found.append(offset)
        return found
    finally:
        if probe is not None:
            os.close(probe)
        os.close(results)


def probe_program(
    method: str, offsets: KernelOffsets, probe: int, results: int, cpus: list[int]
) -> list[Instruction]:
    """The probe's code for `method` (with the probe and results maps' fds): what
    `per_cpu_offsets` loads, and what another kstat's probe is recognised by."""
    if method == BY_RUN_ON_EACH_CPU:
        return _this_cpu_program(offsets, probe, results)
    if method == BY_MAP_LOOKUP:
        return _offsets_program(_map_base(offsets, probe), _map_lookup(probe), results, cpus)
    variable = offsets.per_cpu_variable
    if variable is None:
        raise FeatureMissing("per-CPU variables in the kernel's BTF", "5.10")
    return _offsets_program(_variable_base(variable), _variable_on_cpu(variable), results, cpus)


_running_kernel_lock = threading.Lock()
_running_kernel: list[tuple[KernelOffsets, list[int], str]] = []


def running_kernel_offsets() -> tuple[KernelOffsets, list[int], str]:
    """This kernel's offsets, its CPUs' per-CPU offsets and how they were found, worked out once
    per process (the probe is run once): the iterator and the recognition of other kstats'
    iterators (kstat.sources.own_programs) share them."""
    with _running_kernel_lock:
        if not _running_kernel:
            # From the disk cache where an earlier kstat parsed this kernel's BTF.
            offsets = offsets_cache.offsets(KernelOffsets, KernelOffsets.of_running_kernel, VMLINUX_BTF)
            cpu_offsets, method = per_cpu_offsets(offsets, possible_cpus())
            _running_kernel.append((offsets, cpu_offsets, method))
        return _running_kernel[0]


def _as_number(register: int, slot: int, scratch: int) -> list[Instruction]:
    """A pointer in `register` spilled to the stack at `slot` and read back as a plain number
    into `register`: the verifier lets no pointer arithmetic mix two kinds of pointer."""
    return [
        asm.store(8, asm.FP, slot, register),
        *asm.stack_address(asm.R6, slot),
        *asm.probe_read(scratch, 8, asm.R6),
        *asm.load(8, register, asm.FP, scratch),
    ]


def _map_base(offsets: KernelOffsets, probe: int) -> list[Instruction]:
    """r9 = the probe map's per-CPU pointer (array->pptrs[0])."""
    return [
        *asm.load_map(asm.R1, probe),
        *_as_number(asm.R1, -16, -24),
        asm.mov(asm.R6, asm.R1),
        *asm.probe_read(-32, 8, asm.R6, offsets.array_pptrs),
        *asm.load(8, asm.R9, asm.FP, -32),
    ]


def _map_lookup(probe: int) -> list[Instruction]:
    """r0 = the probe map's element on the CPU in r3, or 0"""
    return [
        *asm.load_map(asm.R1, probe),
        *asm.stack_address(asm.R2, -4),
        asm.call(asm.MAP_LOOKUP_PERCPU_ELEM),
    ]


def _variable_base(variable: int) -> list[Instruction]:
    """r9 = the per-CPU variable's per-CPU address"""
    return [*asm.load_kernel_variable(asm.R9, variable), *_as_number(asm.R9, -16, -24)]


def _variable_on_cpu(variable: int) -> list[Instruction]:
    """r0 = the per-CPU variable's address on the CPU in r3, or 0"""
    return [*asm.load_kernel_variable(asm.R1, variable), asm.mov(asm.R2, asm.R3), asm.call(asm.PER_CPU_PTR)]


def _this_cpu_program(offsets: KernelOffsets, probe: int, results: int) -> list[Instruction]:
    """Stores the offset of the CPU it runs on, at that CPU's index in `results`: the probe
    map's element as bpf_map_lookup_elem finds it there, less the map's per-CPU pointer."""
    store = [
        asm.mov(asm.R7, asm.R0),
        *_as_number(asm.R7, -40, -48),
        asm.alu("-", asm.R7, asm.R9),
        asm.store(8, asm.FP, -56, asm.R7),
        asm.call(asm.GET_SMP_PROCESSOR_ID),
        asm.store(4, asm.FP, -60, asm.R0),
        *asm.load_map(asm.R1, results),
        *asm.stack_address(asm.R2, -60),
        *asm.stack_address(asm.R3, -56),
        asm.mov_imm(asm.R4, 0),
        asm.call(asm.MAP_UPDATE_ELEM),
    ]
    return [
        asm.store_imm(4, asm.FP, -4, 0),  # the key, 0
        *_map_base(offsets, probe),
        *asm.load_map(asm.R1, probe),
        *asm.stack_address(asm.R2, -4),
        asm.call(asm.MAP_LOOKUP_ELEM),
        asm.jump_if("==", asm.R0, 0, len(store)),
        *store,
        asm.mov_imm(asm.R0, 0),
        asm.exit_(),
    ]


def _offsets_program(
    base: list[Instruction], on_cpu: list[Instruction], results: int, cpus: list[int]
) -> list[Instruction]:
    """`base` puts a per-CPU pointer in r9, `on_cpu` its address on the CPU in r3 in r0; the
    program stores their difference in `results` at that CPU's index."""
    code: list[Instruction] = [asm.store_imm(4, asm.FP, -4, 0), *base]  # the key, 0
    for cpu in cpus:
        found = [asm.mov_imm(asm.R3, cpu), *on_cpu]
        store = [
            asm.mov(asm.R7, asm.R0),
            *_as_number(asm.R7, -40, -48),
            asm.alu("-", asm.R7, asm.R9),
            asm.store(8, asm.FP, -56, asm.R7),
            asm.store_imm(4, asm.FP, -60, cpu),
            *asm.load_map(asm.R1, results),
            *asm.stack_address(asm.R2, -60),
            *asm.stack_address(asm.R3, -56),
            asm.mov_imm(asm.R4, 0),
            asm.call(asm.MAP_UPDATE_ELEM),
        ]
        code += [*found, asm.jump_if("==", asm.R0, 0, len(store)), *store]
    return [*code, asm.mov_imm(asm.R0, 0), asm.exit_()]


def iterator_program(
    offsets: KernelOffsets, cpu_offsets: list[int], *, per_cpu: bool = False
) -> list[Instruction]:
    """The iterator: one 64-byte record per program, counters summed over every CPU; with
    `per_cpu`, each CPU's run count and run time (CPU_ENTRY) written before it."""
    body: list[Instruction] = [
        *asm.load(8, asm.R8, asm.R6, offsets.context_meta),
        *asm.load(8, asm.R8, asm.R8, offsets.meta_seq),
        *[asm.store_imm(8, asm.FP, offset, 0) for offset in range(-64, 0, 8)],
        # Fields the verifier can type (BTF members of a fitting size) are loaded directly, the
        # kernel guarding each load; arrays and the per-CPU pointer go through probe_read.
        *asm.load(4, asm.R1, asm.R7, offsets.prog_type),
        asm.store(4, asm.FP, _TYPE, asm.R1),
        *asm.probe_read(_TAG, 8, asm.R7, offsets.prog_tag),
        *asm.load(8, asm.R9, asm.R7, offsets.prog_aux),
        *asm.load(4, asm.R1, asm.R9, offsets.aux_id),
        asm.store(4, asm.FP, _ID, asm.R1),
        *asm.load(8, asm.R1, asm.R9, offsets.aux_load_time),
        asm.store(8, asm.FP, _LOAD_TIME, asm.R1),
        *asm.probe_read(_NAME, 16, asm.R9, offsets.aux_name),
        *asm.probe_read(_SCRATCH, 8, asm.R9 if offsets.stats_in_aux else asm.R7, offsets.stats_pointer),
        *asm.load(8, asm.R9, asm.FP, _SCRATCH),
    ]
    fields = offsets.stats_fields
    # One CPU's stats up to the last field read (cnt and nsecs: 16 bytes; with misses: 24).
    read_size = max(field for field, _ in fields) + 8
    for cpu_offset in cpu_offsets:
        body += [
            *asm.load_imm64(asm.R7, cpu_offset),
            asm.alu("+", asm.R7, asm.R9),
            *asm.probe_read(_STATS, read_size, asm.R7),
        ]
        for field, total in fields:
            body += [
                *asm.load(8, asm.R1, asm.FP, _STATS + field),
                *asm.load(8, asm.R2, asm.FP, total),
                asm.alu("+", asm.R2, asm.R1),
                asm.store(8, asm.FP, total, asm.R2),
            ]
        if per_cpu:
            body += [
                *asm.load(8, asm.R1, asm.FP, _STATS + offsets.stats_count),
                asm.store(8, asm.FP, _CPU_ENTRY, asm.R1),
                *asm.load(8, asm.R1, asm.FP, _STATS + offsets.stats_time),
                asm.store(8, asm.FP, _CPU_ENTRY + 8, asm.R1),
                asm.mov(asm.R1, asm.R8),
                *asm.stack_address(asm.R2, _CPU_ENTRY),
                asm.mov_imm(asm.R3, CPU_ENTRY.size),
                asm.call(asm.SEQ_WRITE),
            ]
    body += [
        asm.mov(asm.R1, asm.R8),
        *asm.stack_address(asm.R2, _ID),
        asm.mov_imm(asm.R3, RECORD.size),
        asm.call(asm.SEQ_WRITE),
    ]
    return [
        asm.mov(asm.R6, asm.R1),
        *asm.load(8, asm.R7, asm.R6, offsets.context_prog),
        asm.jump_if("==", asm.R7, 0, len(body)),  # the walk's last call has no program
        *body,
        asm.mov_imm(asm.R0, 0),
        asm.exit_(),
    ]


class LinkedIterator:
    """An iterator program of kstat's own (BPF_PROG_TYPE_TRACING, attached to the kernel's
    iterator `attach_btf_id` names), loaded and linked for the window: each `read()` is one
    walk, whatever the program writes to its seq_file, in full. Shared by every iterator kstat
    builds (programs here, task files in `kstat.sources.task_files`)."""

    def __init__(self, instructions: list[Instruction], name: str, attach_btf_id: int) -> None:
        self._program = load_program(
            ProgramType.TRACING,
            instructions,
            name,
            expected_attach_type=AttachType.TRACE_ITER,
            attach_btf_id=attach_btf_id,
        )
        try:
            self._link = create_iterator_link(self._program)
        except BaseException:
            os.close(self._program)
            raise
        self._buffers = [bytearray(_PAGE) for _ in range(_FIRST_BUFFERS)]

    @property
    def program_fd(self) -> int:
        return self._program

    @property
    def link_fd(self) -> int:
        return self._link

    def read(self) -> bytes:
        """One walk: everything the program wrote, in the kernel's order.

        A read(2) of an iterator returns one seq_file buffer at most (32 KiB): at 10,000
        programs a walk would be twenty reads, and between any two of them the reading thread
        gives up the interpreter's lock and may wait up to a switch interval (5 ms) to get it
        back, stretching the walk that the read's time stamps. A readv(2) into page-sized
        buffers is read(2) once per buffer inside the kernel, so the whole walk is one system
        call (or a few, where a kernel returns a short one: the loop goes on until the end).
        """
        fd = create_iterator(self._link)
        try:
            walk = bytearray()
            while True:
                buffers = self._buffers
                count = os.readv(fd, buffers)
                if count == 0:
                    return bytes(walk)
                full, rest = divmod(count, _PAGE)
                for buffer in buffers[:full]:
                    walk += buffer
                if rest:
                    walk += memoryview(buffers[full])[:rest]
                if count == len(buffers) * _PAGE and len(buffers) < _MOST_BUFFERS:
                    # More than the buffers held: twice as many for the rest, and next time
                    # (up to the kernel's IOV_MAX: beyond 4 MiB a walk is a few readv calls).
                    self._buffers += [
                        bytearray(_PAGE) for _ in range(min(len(buffers), _MOST_BUFFERS - len(buffers)))
                    ]
        finally:
            os.close(fd)

    def close(self) -> None:
        self._buffers = []  # a walk's worth of pages, no longer needed
        with contextlib.suppress(OSError):
            os.close(self._link)
        with contextlib.suppress(OSError):
            os.close(self._program)


class ProgramIterator(LinkedIterator):
    """kstat's iterator, loaded and linked for the window; `read()` walks every program once,
    a 64-byte record per loaded program, kstat's iterator included."""

    def __init__(self, *, per_cpu: bool = False) -> None:
        offsets, cpu_offsets, self.per_cpu_offsets_by = running_kernel_offsets()
        if offsets.stats_in_aux:
            # Imported here: the command line opens the iterator at launch, before logging.
            from kstat._logging import get_logger  # noqa: PLC0415

            get_logger(__name__).info(
                "this kernel keeps its program stats in bpf_prog_aux (before Linux 5.12)"
            )
        self.counts_recursion_misses = offsets.stats_misses is not None
        # With per-CPU counters, the possible CPUs whose entries come before each record.
        self.cpus = possible_cpus() if per_cpu else []
        self.record_size = RECORD.size + CPU_ENTRY.size * len(self.cpus)
        super().__init__(
            iterator_program(offsets, cpu_offsets, per_cpu=per_cpu), ITERATOR_NAME, offsets.attach_btf_id
        )


@frozen
class _Pass:
    """A pass as read: its bytes, the id of each record, and each record's value (None for
    kstat's own iterator), in the order the kernel walked them."""

    data: bytes
    ids: list[int]
    stats: list[ProgramStats | None]


# Records compared as one block before one by one: most of a host's programs are idle.
_BLOCK_RECORDS: Final = 64


class IteratorReader:
    """`ProgramReader.read_pass` by iterator: the same programs, counters and changes.

    A pass is one read. While the kernel walks the same programs in the same order (no program
    came or went), the records are compared with the previous pass's by blocks of 64 and only a
    block that differs is looked into: an idle program's previous value is reused without being
    decoded, and a program whose counters moved is rebuilt from what is known of it. When
    programs came or went, each record is looked up by id instead. A program met for the first
    time gets its details (full name, footprint) through the syscall path, once; one gone
    before they could be read keeps what its record says (its kernel name, no footprint).
    """

    def __init__(self, syscalls: ProgramReader | None = None, *, per_cpu: bool = False) -> None:
        self._iterator = ProgramIterator(per_cpu=per_cpu)
        # Each record's size, and where its 64 bytes start (after the CPUs' entries).
        self._size = self._iterator.record_size
        self._header = self._size - RECORD.size
        cpus = self._iterator.cpus
        self.per_cpu = bool(cpus)
        # Where each entry's CPU goes in a per-CPU vector (indexed by CPU number, 0 for CPUs
        # that are not possible), unless the possible CPUs are 0..n-1, in order.
        self._vector_size = max(cpus) + 1 if cpus else 0
        self._cpu_slots = None if cpus == list(range(len(cpus))) else cpus
        self._entries = struct.Struct(f"<{2 * len(cpus)}Q")
        self._syscalls = syscalls or ProgramReader()
        own = self._syscalls.read_fd(self._iterator.program_fd)
        self.own_id = own.id
        # Which helper found the per-CPU offsets, and whether the kernel counts recursion
        # misses (5.12+; before, the records say 0, as bpf_prog_info says nothing).
        self.per_cpu_offsets_by = self._iterator.per_cpu_offsets_by
        self.counts_recursion_misses = self._iterator.counts_recursion_misses
        self._previous: _Pass | None = None

    def read_pass(self) -> tuple[list[ProgramStats], ProgramChanges]:
        reading = self.read()
        return list(reading.programs), reading.changes

    def read(self) -> Reading:
        """One walk: every program's counters, the changes, and the clocks around the walk
        alone (decoding its records comes after)."""
        clocks = ClockStart()
        data = self._iterator.read()
        read_clocks = clocks.end()
        data = data[: len(data) - len(data) % self._size]
        # Every record's id at C speed: the id is the first u32 of a record's 64 bytes.
        ids = list(memoryview(data).cast("I")[self._header // 4 :: self._size // 4])
        stats, changes = self._compare(data, ids, self._previous)
        self._previous = _Pass(data, ids, stats)
        return Reading([value for value in stats if value is not None], changes, read_clocks)

    def _compare(
        self, data: bytes, ids: list[int], previous: _Pass | None
    ) -> tuple[list[ProgramStats | None], ProgramChanges]:
        """This walk's records against the previous walk's: both are in id order (the kernel
        walks its program idr), so one merge walk pairs them. Where a run of 64 records has the
        same ids and the same bytes as before (idle programs, the usual case), it is taken
        whole without being looked into; only records that differ are decoded. Programs that
        came or went break a run only where they are: churn costs what changed."""
        size, own_id = self._size, self.own_id
        stats: list[ProgramStats | None] = []
        new: list[ProgramStats] = []
        moved: list[tuple[ProgramStats, ProgramStats]] = []
        vanished: list[ProgramStats] = []
        if previous is None:
            old_ids: list[int] = []
            old_data, old_stats = b"", []
        else:
            old_ids, old_data, old_stats = previous.ids, previous.data, previous.stats
        i = j = 0
        old_count, count = len(old_ids), len(ids)
        while j < count:
            if i < old_count and old_ids[i] == ids[j]:
                run = min(_BLOCK_RECORDS, old_count - i, count - j)
                if (
                    old_ids[i : i + run] == ids[j : j + run]
                    and old_data[i * size : (i + run) * size] == data[j * size : (j + run) * size]
                ):
                    stats += old_stats[i : i + run]
                    i += run
                    j += run
                    continue
                before = old_stats[i]
                record = data[j * size : (j + 1) * size]
                if before is None or record == old_data[i * size : (i + 1) * size]:
                    stats.append(before)  # kstat's own iterator, or idle
                else:
                    after = self._decode(record, before)
                    if after.load_time_ns != before.load_time_ns:  # the id was given to another
                        vanished.append(before)
                        new.append(after)
                        stats.append(after)
                    elif after.counters != before.counters:
                        moved.append((before, after))
                        stats.append(after)
                    else:  # the record moved, the counters did not: idle
                        stats.append(before)
                i += 1
                j += 1
            elif i < old_count and old_ids[i] < ids[j]:
                gone = old_stats[i]
                if gone is not None:
                    vanished.append(gone)
                i += 1
            else:
                if ids[j] == own_id:
                    stats.append(None)
                else:
                    found = self._decode(data[j * size : (j + 1) * size], None)
                    new.append(found)
                    stats.append(found)
                j += 1
        vanished += [gone for gone in old_stats[i:] if gone is not None]
        return stats, ProgramChanges(new=new, moved=moved, vanished=vanished)

    def _decode(self, record: bytes, before: ProgramStats | None) -> ProgramStats:
        program_id, type_id, tag, load_time_ns, name, run_count, run_time_ns, misses = RECORD.unpack_from(
            record, self._header
        )
        # The counter catalogue's counters, by name (the rest None); recursion misses None
        # where the kernel does not count them (before 5.12: the record's zero is no count).
        counters = Counters(
            run_time_ns=run_time_ns,
            run_count=run_count,
            recursion_misses=misses if self.counts_recursion_misses else None,
        )
        if self.per_cpu:
            entries = self._entries.unpack_from(record)
            counts, times = entries[0::2], entries[1::2]
            slots = self._cpu_slots
            if slots is not None:
                counts, times = (
                    _placed(counts, slots, self._vector_size),
                    _placed(times, slots, self._vector_size),
                )
            counters = counters._replace(per_cpu_run_time_ns=times, per_cpu_run_count=counts)
        if before is not None and before.load_time_ns == load_time_ns:
            return evolve(before, counters=counters)
        # Met for the first time (or an id the kernel reused): what its record says. Its full
        # name and footprint are the details stage's, later (a program gone by then keeps this).
        # Tags and names interned: a host's copies of one program share one string of each.
        return ProgramStats(
            id=program_id,
            type=program_type_name(type_id),
            tag=sys.intern(tag.hex()),
            load_time_ns=load_time_ns,
            counters=counters,
            kernel_name=sys.intern(from_host(name.rstrip(b"\0"))),
        )

    @property
    def own_program_ids(self) -> frozenset[int]:
        return frozenset({self.own_id})

    def close(self) -> None:
        self._previous = None  # the last walk, its ids and values: nothing is compared now
        self._iterator.close()


def _placed(values: tuple[int, ...], cpus: list[int], size: int) -> tuple[int, ...]:
    """Values in possible-CPU order as a vector indexed by CPU number (0 where no CPU is)."""
    vector = [0] * size
    for cpu, value in zip(cpus, values, strict=True):
        vector[cpu] = value
    return tuple(vector)
