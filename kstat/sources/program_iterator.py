"""kstat's program iterator, built and loaded: the kernel's offsets (`KernelOffsets`, from its
BTF or the disk cache), the probe that finds the CPUs' per-CPU offsets, the iterator's code, and
the loaded iterator (`ProgramIterator`) whose `read()` is one walk of every program's record;
`kstat.sources.iterator` decodes the records (how the iterator works is told there).

On the command line's path from launch to its baseline read (`kstat._baseline`), so it imports
nothing that takes time: no attrs, typing or pathlib at run time (the kernel's BTF parser only
when an offset is not in the cache). Hence `KernelOffsets` is a plain class.
"""

from __future__ import annotations

import os
import struct

# Not threading: it imports more than its lock (the launch loads this iterator).
from _thread import allocate_lock

from kstat._values import PlainValue
from kstat.abi import assembler as asm
from kstat.abi.bpf import (
    create_iterator,
    create_iterator_link,
    create_map,
    load_program,
    map_lookup_value,
    test_run,
)
from kstat.abi.enums import AttachType, MapType, ProgramType
from kstat.errors import BpfError, FeatureMissing
from kstat.sources import walks
from kstat.sources.clocks import ClockStart
from kstat.sources.walks import WalkBuffers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Final

    from kstat.abi.btf import KernelLayout
    from kstat.abi.structs import Instruction

    # A file's path: these take strings too (pathlib is slow to import).
    FilePath = str | os.PathLike[str]

VMLINUX_BTF: Final = "/sys/kernel/btf/vmlinux"
POSSIBLE_CPUS: Final = "/sys/devices/system/cpu/possible"
ONLINE_CPUS: Final = "/sys/devices/system/cpu/online"
# id, type, tag, load_time, name, run_cnt, run_time_ns, recursion_misses
RECORD: Final = struct.Struct("<II8sQ16sQQQ")
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


_layouts: dict[tuple[str, int, int], KernelLayout] = {}


def btf_key(btf: FilePath) -> tuple[str, int, int]:
    """Which BTF a file holds now (a kernel module's can be reloaded): its path, size, mtime."""
    status = os.stat(btf)
    return os.fspath(btf), status.st_size, status.st_mtime_ns


def kernel_layout(btf: FilePath = VMLINUX_BTF) -> KernelLayout:
    """The running kernel's BTF, parsed once however many of kstat's iterators read it (a
    tenth of a second of Python for a 5 MB vmlinux BTF), until `forget_kernel_layout`."""
    from kstat.abi.btf import KernelLayout  # noqa: PLC0415 - only where no offsets are cached

    key = btf_key(btf)
    layout = _layouts.get(key)
    if layout is None:
        with open(btf, "rb") as file:
            layout = _layouts[key] = KernelLayout(file.read())
    return layout


def forget_kernel_layout() -> None:
    """Let the parsed BTF go (8 MB for a 5 MB vmlinux BTF: the blob, its strings, where each
    type starts) once the window's programs are built: the offsets they took are kept apart
    (`kstat.sources.offsets_cache`), and what needs the BTF again parses it again."""
    _layouts.clear()


class KernelOffsets(PlainValue):
    """Where the iterator finds what it reads, on this kernel: a value (compared by its fields),
    declared by its annotations, which the disk cache reads and writes by name (a plain class,
    not attrs: it is built on the way to the launch's baseline, before attrs is imported)."""

    __slots__ = (
        "array_pptrs",
        "attach_btf_id",
        "aux_id",
        "aux_load_time",
        "aux_name",
        "context_meta",
        "context_prog",
        "meta_seq",
        "per_cpu_variable",
        "prog_aux",
        "prog_tag",
        "prog_type",
        "rdonly_cast",
        "stats_count",
        "stats_in_aux",
        "stats_misses",
        "stats_pointer",
        "stats_time",
        "stats_type",
    )

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
    # struct bpf_prog_stats's BTF id, and the kfunc bpf_rdonly_cast's (6.2+; None before).
    stats_type: int
    rdonly_cast: int | None

    def __init__(
        self,
        *,
        attach_btf_id: int,
        context_meta: int,
        context_prog: int,
        meta_seq: int,
        prog_type: int,
        prog_tag: int,
        prog_aux: int,
        aux_id: int,
        aux_name: int,
        aux_load_time: int,
        stats_pointer: int,
        stats_in_aux: bool,
        stats_count: int,
        stats_time: int,
        stats_misses: int | None,
        array_pptrs: int,
        per_cpu_variable: int | None,
        stats_type: int,
        rdonly_cast: int | None,
    ) -> None:
        self.attach_btf_id = attach_btf_id
        self.context_meta = context_meta
        self.context_prog = context_prog
        self.meta_seq = meta_seq
        self.prog_type = prog_type
        self.prog_tag = prog_tag
        self.prog_aux = prog_aux
        self.aux_id = aux_id
        self.aux_name = aux_name
        self.aux_load_time = aux_load_time
        self.stats_pointer = stats_pointer
        self.stats_in_aux = stats_in_aux
        self.stats_count = stats_count
        self.stats_time = stats_time
        self.stats_misses = stats_misses
        self.array_pptrs = array_pptrs
        self.per_cpu_variable = per_cpu_variable
        self.stats_type = stats_type
        self.rdonly_cast = rdonly_cast

    @staticmethod
    def of_running_kernel(btf: FilePath = VMLINUX_BTF) -> KernelOffsets:
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
            stats_type=layout.struct_id("bpf_prog_stats", since="5.1"),
            rdonly_cast=_function_if_any(layout, "bpf_rdonly_cast"),
        )

    @property
    def stats_fields(self) -> list[tuple[int, int]]:
        """(offset in one CPU's bpf_prog_stats, offset of its total in the record)."""
        fields = [(self.stats_count, _RUN_COUNT), (self.stats_time, _RUN_TIME)]
        if self.stats_misses is not None:
            fields.append((self.stats_misses, _MISSES))
        return fields


def _function_if_any(layout: KernelLayout, name: str) -> int | None:
    return layout.function_id(name) if layout.has_function(name) else None


def possible_cpus(path: FilePath = POSSIBLE_CPUS) -> list[int]:
    """The CPUs that may ever be online (`0-3,8-11`): every one has per-CPU counters."""
    cpus: list[int] = []
    with open(path, encoding="ascii") as file:
        listed = file.read()
    for part in listed.strip().split(","):
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


_running_kernel_lock = allocate_lock()
_running_kernel: list[tuple[KernelOffsets, list[int], str]] = []


def running_kernel_offsets() -> tuple[KernelOffsets, list[int], str]:
    """This kernel's offsets, its CPUs' per-CPU offsets and how they were found, worked out once
    per process (the probe is run once): the iterator and the recognition of other kstats'
    iterators (kstat.sources.own_programs) share them."""
    with _running_kernel_lock:
        if not _running_kernel:
            # From the disk cache where an earlier kstat parsed this kernel's BTF.
            # Imported here: the counter clock's process walks without it (nor json).
            from kstat.sources import offsets_cache  # noqa: PLC0415

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


# Where `details` (below) keep what else they write of a program, after its record: 64 bytes,
# so that a page holds whole records (a readv(2) goes on to its next buffer only after a full one).
DETAILS_AT: Final = -176
DETAILS_SIZE: Final = 64
# The scratch map's key (0), below the details.
_SCRATCH_KEY: Final = -180


def iterator_program(
    offsets: KernelOffsets,
    cpu_offsets: list[int],
    *,
    per_cpu: bool = False,
    details: Sequence[Instruction] = (),
    scratch_map: int | None = None,
) -> list[Instruction]:
    """The iterator: one 64-byte record per program, counters summed over every CPU; with
    `per_cpu`, each CPU's run count and run time (CPU_ENTRY) written before it. `details` (for
    kstat list: code run with r7 the program and r9 its aux, free to use r1-r5, that fills
    DETAILS_SIZE bytes at r10 + DETAILS_AT) are written after each record.

    With `scratch_map` (a one-element array of 8 bytes, `scratch_map_fd`), every field is read
    by plain loads, the kernel guarding each: the tag and the name as integers (the
    verifier lets an array of bytes be read as one), the per-CPU stats pointer turned into a
    number by a round trip through the map's value (a privileged program may store a pointer
    there and read back a number; the array's lookup is inlined, no call), and each CPU's stats
    through `bpf_rdonly_cast` (6.2+; inlined too) where the kernel has it. Without, and on a
    kernel that refuses that program (`ProgramIterator` falls back), the arrays, the pointer
    and each CPU's stats go through bpf_probe_read_kernel: five calls a program on two CPUs,
    each dearer than the loads (bench/iterator_floor.py measures both)."""
    direct = scratch_map is not None
    body: list[Instruction] = [
        *asm.load(8, asm.R8, asm.R6, offsets.context_meta),
        *asm.load(8, asm.R8, asm.R8, offsets.meta_seq),
        # The counters' sums start at 0; every other field of the record is written whole.
        *[asm.store_imm(8, asm.FP, offset, 0) for offset in (_RUN_COUNT, _RUN_TIME, _MISSES)],
        *asm.load(4, asm.R1, asm.R7, offsets.prog_type),
        asm.store(4, asm.FP, _TYPE, asm.R1),
        *asm.load(8, asm.R9, asm.R7, offsets.prog_aux),
        *asm.load(4, asm.R1, asm.R9, offsets.aux_id),
        asm.store(4, asm.FP, _ID, asm.R1),
        *asm.load(8, asm.R1, asm.R9, offsets.aux_load_time),
        asm.store(8, asm.FP, _LOAD_TIME, asm.R1),
    ]
    if direct:
        for source, offset, slot in (
            (asm.R7, offsets.prog_tag, _TAG),
            (asm.R9, offsets.aux_name, _NAME),
            (asm.R9, offsets.aux_name + 8, _NAME + 8),
        ):
            body += [*asm.load(8, asm.R1, source, offset), asm.store(8, asm.FP, slot, asm.R1)]
    else:
        body += [
            *asm.probe_read(_TAG, 8, asm.R7, offsets.prog_tag),
            *asm.probe_read(_NAME, 16, asm.R9, offsets.aux_name),
        ]
    body += details
    holder = asm.R9 if offsets.stats_in_aux else asm.R7
    # The rest, from the per-CPU stats pointer (r9, a plain number) on.
    rest = [
        *_per_cpu_reads(offsets, cpu_offsets, per_cpu=per_cpu, cast=direct),
        asm.mov(asm.R1, asm.R8),
        *asm.stack_address(asm.R2, _ID),
        asm.mov_imm(asm.R3, RECORD.size),
        asm.call(asm.SEQ_WRITE),
    ]
    if details:
        rest += [
            asm.mov(asm.R1, asm.R8),
            *asm.stack_address(asm.R2, DETAILS_AT),
            asm.mov_imm(asm.R3, DETAILS_SIZE),
            asm.call(asm.SEQ_WRITE),
        ]
    if scratch_map is None:
        body += [
            *asm.probe_read(_SCRATCH, 8, holder, offsets.stats_pointer),
            *asm.load(8, asm.R9, asm.FP, _SCRATCH),
            *rest,
        ]
    else:
        rest = [
            *asm.load(8, asm.R1, holder, offsets.stats_pointer),
            asm.store(8, asm.R0, 0, asm.R1),
            *asm.load(8, asm.R9, asm.R0, 0),
            *rest,
        ]
        body += [
            asm.store_imm(4, asm.FP, _SCRATCH_KEY, 0),
            *asm.load_map(asm.R1, scratch_map),
            *asm.stack_address(asm.R2, _SCRATCH_KEY),
            asm.call(asm.MAP_LOOKUP_ELEM),
            # A one-element array always has key 0: the verifier asks for the check all the same.
            asm.jump_if("==", asm.R0, 0, len(rest)),
            *rest,
        ]
    return [
        asm.mov(asm.R6, asm.R1),
        *asm.load(8, asm.R7, asm.R6, offsets.context_prog),
        asm.jump_if("==", asm.R7, 0, len(body)),  # the walk's last call has no program
        *body,
        asm.mov_imm(asm.R0, 0),
        asm.exit_(),
    ]


def _per_cpu_reads(
    offsets: KernelOffsets, cpu_offsets: list[int], *, per_cpu: bool, cast: bool
) -> list[Instruction]:
    """Each CPU's stats (r9 the per-CPU pointer as a number) added into the record's sums, and
    with `per_cpu` written out as that CPU's entry: read by plain loads through
    `bpf_rdonly_cast` where `cast` and the kernel has it, else copied by bpf_probe_read_kernel."""
    fields = offsets.stats_fields
    code: list[Instruction] = []
    rdonly_cast = offsets.rdonly_cast if cast else None
    # One CPU's stats up to the last field read (cnt and nsecs: 16 bytes; with misses: 24).
    read_size = max(field for field, _ in fields) + 8
    for cpu_offset in cpu_offsets:
        if rdonly_cast is None:
            # Copied to the stack, read from there.
            code += [
                *asm.load_imm64(asm.R7, cpu_offset),
                asm.alu("+", asm.R7, asm.R9),
                *asm.probe_read(_STATS, read_size, asm.R7),
            ]
            base, at = asm.FP, _STATS
        else:
            # r0 = that CPU's struct bpf_prog_stats, read-only (a load that faults reads 0).
            code += [
                *asm.load_imm64(asm.R1, cpu_offset),
                asm.alu("+", asm.R1, asm.R9),
                asm.mov_imm(asm.R2, offsets.stats_type),
                asm.call_kernel_function(rdonly_cast),
            ]
            base, at = asm.R0, 0
        for field, total in fields:
            code += [
                *asm.load(8, asm.R1, base, at + field),
                *asm.load(8, asm.R2, asm.FP, total),
                asm.alu("+", asm.R2, asm.R1),
                asm.store(8, asm.FP, total, asm.R2),
            ]
        if per_cpu:
            code += [
                *asm.load(8, asm.R1, base, at + offsets.stats_count),
                asm.store(8, asm.FP, _CPU_ENTRY, asm.R1),
                *asm.load(8, asm.R1, base, at + offsets.stats_time),
                asm.store(8, asm.FP, _CPU_ENTRY + 8, asm.R1),
                asm.mov(asm.R1, asm.R8),
                *asm.stack_address(asm.R2, _CPU_ENTRY),
                asm.mov_imm(asm.R3, CPU_ENTRY.size),
                asm.call(asm.SEQ_WRITE),
            ]
    return code


def scratch_map_fd() -> int:
    """A new one-element array map of 8 bytes: the scratch `iterator_program` turns pointers
    into numbers through (the loaded program holds it; the caller closes this fd)."""
    return create_map(MapType.ARRAY, 4, 8, 1, "kstat_scratch")


def walk_once(link_fd: int, buffers: WalkBuffers) -> tuple[bytes, ClockStart]:
    """One walk of the iterator linked at `link_fd` (`kstat.sources.walks.walk_once`), as one
    bytes, and the clocks around the walk alone (stopped)."""
    pieces, clocks = walks.walk_once(lambda: create_iterator(link_fd), buffers)
    return walks.joined(pieces), clocks


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
        self._buffers = WalkBuffers()

    def load_reading_directly(
        self, code: Callable[[int | None], list[Instruction]], name: str, attach_btf_id: int
    ) -> bool:
        """For a subclass's constructor: loads and links `code(scratch_map)` (`iterator_program`
        reading by plain loads), or `code(None)` where the kernel refuses it (or the map);
        whether the first was taken. The map's fd is closed: the program holds the map."""
        try:
            scratch_map: int | None = scratch_map_fd()
        except BpfError:
            scratch_map = None
        if scratch_map is not None:
            try:
                LinkedIterator.__init__(self, code(scratch_map), name, attach_btf_id)
                return True
            except BpfError:
                pass  # a verifier of its own mind (a kernel before these loads were allowed)
            finally:
                os.close(scratch_map)
        LinkedIterator.__init__(self, code(None), name, attach_btf_id)
        return False

    @property
    def program_fd(self) -> int:
        return self._program

    @property
    def link_fd(self) -> int:
        return self._link

    def read(self) -> bytes:
        """One walk: everything the program wrote, in the kernel's order."""
        fd = create_iterator(self._link)
        try:
            return self._buffers.read(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._buffers.release()
        for fd in (self._link, self._program):
            try:  # noqa: SIM105 - no contextlib on the launch's path
                os.close(fd)
            except OSError:
                pass


# How an iterator reads the kernel's fields (`ProgramIterator.reads_by`), as the kernel took it.
BY_LOADS_AND_CAST: Final = "plain loads, each CPU's stats through bpf_rdonly_cast"
BY_LOADS_AND_PROBES: Final = "plain loads, each CPU's stats by bpf_probe_read_kernel"
BY_PROBES: Final = "bpf_probe_read_kernel"


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
        self.reads_directly = self.load_reading_directly(
            lambda scratch_map: iterator_program(
                offsets, cpu_offsets, per_cpu=per_cpu, scratch_map=scratch_map
            ),
            ITERATOR_NAME,
            offsets.attach_btf_id,
        )
        if not self.reads_directly:
            self.reads_by = BY_PROBES
        else:
            self.reads_by = BY_LOADS_AND_PROBES if offsets.rdonly_cast is None else BY_LOADS_AND_CAST
