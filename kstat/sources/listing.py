"""Every loaded program as `kstat list` prints it, in one read: kstat's program iterator
(`kstat.sources.iterator`) writing, after each program's counter record, what `bpf_prog_info`
would give of its footprint (code sizes, verified instructions, memlock) and whether the rest
needs the syscalls: map ids (a program that uses maps), the full name (one with BTF function
info) and the JIT size of a program made of several functions (the kernel sums theirs).

Only those programs are looked up by syscalls, as the syscall reader describes every program;
a program with none of them costs no syscall at all. Where the iterator cannot be built (no BTF,
no iterators, a refusal), `read_listing` reads every program by syscalls instead, the same
values.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Final

from attrs import frozen

from kstat.abi import assembler as asm
from kstat.abi.enums import program_type_name
from kstat.abi.structs import Instruction
from kstat.core.counters import Counters
from kstat.core.model import ProgramFacts, ProgramFootprint, ProgramStats
from kstat.errors import KstatError
from kstat.sources import offsets_cache
from kstat.sources.iterator import (
    RECORD,
    VMLINUX_BTF,
    LinkedIterator,
    iterator_program,
    kernel_layout,
    running_kernel_offsets,
)
from kstat.sources.program_iterator import DETAILS_AT, DETAILS_SIZE
from kstat.sources.syscalls import ProgramReader
from kstat.text import from_host

LISTING_NAME: Final = "kstat_list_iter"
# jited_len, len (instructions), pages, verified_insns, used_map_cnt, func_cnt, func_info_cnt.
DETAILS: Final = struct.Struct(f"<IIIIIII{DETAILS_SIZE - 28}x")
# A program's counter record (kstat.sources.iterator.RECORD), then its details.
LISTING: Final = struct.Struct(RECORD.format + DETAILS.format.lstrip("<"))
# bpf_prog_info.xlated_prog_len is the program's instructions, 8 bytes each (struct bpf_insn);
# its fdinfo memlock its pages.
_INSTRUCTION_SIZE: Final = 8
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")

_JITED, _INSTRUCTIONS, _PAGES, _VERIFIED, _MAPS, _FUNCTIONS, _FUNCTION_INFOS = (
    DETAILS_AT + 4 * field for field in range(7)
)


@frozen
class ListingOffsets:
    """Where the listing's details are, on this kernel (`bpf_prog` and `bpf_prog_aux`)."""

    prog_pages: int
    prog_len: int
    prog_jited_len: int
    aux_used_map_cnt: int
    aux_func_cnt: int
    aux_func_info_cnt: int
    aux_verified_insns: int | None  # 5.16+

    @staticmethod
    def of_running_kernel(btf: Path = VMLINUX_BTF) -> ListingOffsets:
        """FeatureMissing when this kernel lacks one of them; OSError when it has no BTF."""
        layout = kernel_layout(btf)
        return ListingOffsets(
            prog_pages=layout.offset("bpf_prog", "pages"),
            prog_len=layout.offset("bpf_prog", "len"),
            prog_jited_len=layout.offset("bpf_prog", "jited_len"),
            aux_used_map_cnt=layout.offset("bpf_prog_aux", "used_map_cnt"),
            aux_func_cnt=layout.offset("bpf_prog_aux", "func_cnt"),
            aux_func_info_cnt=layout.offset("bpf_prog_aux", "func_info_cnt"),
            aux_verified_insns=layout.offset_if_any("bpf_prog_aux", "verified_insns", since="5.16"),
        )


def details_code(offsets: ListingOffsets) -> list[Instruction]:
    """The iterator's details (r7 the program, r9 its aux): each field loaded directly, the
    kernel guarding each load. `pages` is a u16 (bpf_prog's first member); the rest u32."""
    code = [asm.store_imm(8, asm.FP, offset, 0) for offset in range(DETAILS_AT, DETAILS_AT + DETAILS_SIZE, 8)]
    fields = [
        (2, asm.R7, offsets.prog_pages, _PAGES),
        (4, asm.R7, offsets.prog_len, _INSTRUCTIONS),
        (4, asm.R7, offsets.prog_jited_len, _JITED),
        (4, asm.R9, offsets.aux_used_map_cnt, _MAPS),
        (4, asm.R9, offsets.aux_func_cnt, _FUNCTIONS),
        (4, asm.R9, offsets.aux_func_info_cnt, _FUNCTION_INFOS),
    ]
    if offsets.aux_verified_insns is not None:
        fields.append((4, asm.R9, offsets.aux_verified_insns, _VERIFIED))
    for size, source, offset, slot in fields:
        code += [*asm.load(size, asm.R1, source, offset), asm.store(4, asm.FP, slot, asm.R1)]
    return code


class ListingIterator(LinkedIterator):
    """kstat's program iterator with the listing's details: `read()` is one walk, a LISTING
    record per loaded program, this iterator's own included."""

    def __init__(self) -> None:
        offsets, cpu_offsets, _ = running_kernel_offsets()
        details = offsets_cache.offsets(ListingOffsets, ListingOffsets.of_running_kernel, VMLINUX_BTF)
        self.counts_recursion_misses = offsets.stats_misses is not None
        self.counts_verified_instructions = details.aux_verified_insns is not None
        super().__init__(
            iterator_program(offsets, cpu_offsets, details=details_code(details)),
            LISTING_NAME,
            offsets.attach_btf_id,
        )


def read_listing(syscalls: ProgramReader | None = None) -> tuple[list[ProgramStats], str]:
    """Every loaded program, described (full name, footprint), and how they were read:
    `iterator`, or `syscalls` where kstat's iterator cannot be built here."""
    syscalls = syscalls or ProgramReader()
    try:
        iterator = ListingIterator()
    except (OSError, KstatError):
        return syscalls.read_all(), "syscalls"
    try:
        own_id = syscalls.read_fd(iterator.program_fd).id
        data = iterator.read()
        programs = decode_listing(
            data,
            own_id,
            counts_recursion_misses=iterator.counts_recursion_misses,
            counts_verified_instructions=iterator.counts_verified_instructions,
        )
    finally:
        iterator.close()
    syscalls.describe_all([program for program in programs if not program.facts.described])
    return programs, "iterator"


def decode_listing(
    data: bytes, own_id: int, *, counts_recursion_misses: bool, counts_verified_instructions: bool
) -> list[ProgramStats]:
    """The programs of one walk (but the iterator's own), in the kernel's order (by id). Those
    whose details need no syscall are described here; footprints that are equal are one value."""
    programs: list[ProgramStats] = []
    footprints: dict[tuple[int, int, int, int], ProgramFootprint] = {}
    type_names: dict[int, str] = {}
    size = LISTING.size
    for (
        program_id,
        type_id,
        tag,
        load_time_ns,
        name,
        run_count,
        run_time_ns,
        misses,
        jited_size,
        instructions,
        pages,
        verified,
        maps,
        functions,
        function_infos,
    ) in LISTING.iter_unpack(data[: len(data) - len(data) % size]):
        if program_id == own_id:
            continue
        type_name = type_names.get(type_id)
        if type_name is None:
            type_name = type_names[type_id] = program_type_name(type_id)
        # The counter catalogue's counters, by name (the rest None); recursion misses None where
        # the kernel does not count them (before 5.12: the record's zero is no count).
        counters = Counters(
            run_time_ns=run_time_ns,
            run_count=run_count,
            recursion_misses=misses if counts_recursion_misses else None,
        )
        if maps or functions or function_infos:
            # Map ids, a BTF name, a sum over functions: the syscalls' (describe_all), later.
            facts = ProgramFacts()
        else:
            key = (jited_size, instructions, pages, verified)
            footprint = footprints.get(key)
            if footprint is None:
                footprint = footprints[key] = ProgramFootprint(
                    jited_size_bytes=jited_size,
                    xlated_size_bytes=instructions * _INSTRUCTION_SIZE,
                    verified_instructions=verified if counts_verified_instructions else None,
                    memlock_bytes=pages * _PAGE_SIZE,
                )
            facts = ProgramFacts(footprint=footprint, described=True)
        programs.append(
            ProgramStats(
                id=program_id,
                type=type_name,
                tag=tag.hex(),
                load_time_ns=load_time_ns,
                counters=counters,
                kernel_name=from_host(name.rstrip(b"\0")),
                facts=facts,
            )
        )
    return programs
