"""What a walk of kstat's program iterator costs the kernel before kstat reads anything: the
same BPF iterator over every loaded program with less and less done per program, each walk
timed as kstat times its own (one readv of the link's iterator fd, `LinkedIterator.read`).

- `walk alone`: a program that returns at once (writes nothing): the kernel's walk of the
  program idr, a reference taken and dropped per program, and one run of the program, timed by
  the kernel when its stats are on (kstat's iterator program is itself a program).
- `ids only`: each program's id, 4 bytes to the seq_file (loads through the kernel's BTF).
- `kstat's, by probe reads`: kstat's own iterator program as a kernel that refuses its plain
  loads gets it: tag, name, the per-CPU pointer and each CPU's stats by bpf_probe_read_kernel.
- `kstat's`: kstat's own iterator program (a 64-byte record, counters summed over CPUs), as
  this kernel takes it (`ProgramIterator.reads_directly`: by plain loads where it can).

The iterator snapshot's target (a quarter of the C floor's pass, issue 28) can be no lower than
the first of these: when `walk alone` is above it, no program kstat could write meets it.
"""

from __future__ import annotations

from attrs import frozen

from bench.measure import Timing, time_calls
from kstat.abi import assembler as asm
from kstat.abi.structs import Instruction
from kstat.sources.program_iterator import (
    ITERATOR_NAME,
    LinkedIterator,
    ProgramIterator,
    iterator_program,
    running_kernel_offsets,
)

WALKS: tuple[str, ...] = ("walk alone", "ids only", "kstat's, by probe reads", "kstat's")


@frozen
class IteratorFloor:
    programs_seen: int
    # Each walk by its name (WALKS), the time of one whole walk.
    walks: dict[str, Timing]


def _walk_alone() -> list[Instruction]:
    return [asm.mov_imm(asm.R0, 0), asm.exit_()]


def _ids_only() -> list[Instruction]:
    offsets, _, _ = running_kernel_offsets()
    body = [
        *asm.load(8, asm.R8, asm.R6, offsets.context_meta),
        *asm.load(8, asm.R8, asm.R8, offsets.meta_seq),
        *asm.load(8, asm.R9, asm.R7, offsets.prog_aux),
        *asm.load(4, asm.R1, asm.R9, offsets.aux_id),
        asm.store(4, asm.FP, -8, asm.R1),
        asm.mov(asm.R1, asm.R8),
        *asm.stack_address(asm.R2, -8),
        asm.mov_imm(asm.R3, 4),
        asm.call(asm.SEQ_WRITE),
    ]
    return [
        asm.mov(asm.R6, asm.R1),
        *asm.load(8, asm.R7, asm.R6, offsets.context_prog),
        asm.jump_if("==", asm.R7, 0, len(body)),
        *body,
        asm.mov_imm(asm.R0, 0),
        asm.exit_(),
    ]


def measure_iterator_floor(repetitions: int) -> IteratorFloor:
    """Each walk `repetitions` times (after one to warm up), in turn; the caller decides whether
    the kernel's stats are on."""
    offsets, cpu_offsets, _ = running_kernel_offsets()
    iterators: dict[str, LinkedIterator] = {}
    try:
        iterators["walk alone"] = LinkedIterator(_walk_alone(), "kbench_walk", offsets.attach_btf_id)
        iterators["ids only"] = LinkedIterator(_ids_only(), "kbench_ids", offsets.attach_btf_id)
        iterators["kstat's, by probe reads"] = LinkedIterator(
            iterator_program(offsets, cpu_offsets), ITERATOR_NAME, offsets.attach_btf_id
        )
        iterators["kstat's"] = ProgramIterator()
        seen = len(iterators["ids only"].read()) // 4
        walks = {}
        for name in WALKS:
            iterators[name].read()
            walks[name] = time_calls(iterators[name].read, repetitions)
    finally:
        for iterator in iterators.values():
            iterator.close()
    return IteratorFloor(seen, walks)
