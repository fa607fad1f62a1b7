"""The iterator `kstat list` reads every program with: kstat's program iterator
(`kstat.sources.program_iterator`) writing, after each program's counter record, what
`bpf_prog_info` would give of its footprint (code sizes, verified instructions, memlock) and
whether the rest needs the syscalls: map ids (a program that uses maps), the full name (one
with BTF function info) and the JIT size of a program made of several functions (the kernel
sums theirs).

Built, loaded and read with nothing imported but kstat's bpf(2) layer and the iterator's
builder (no attrs, typing or pathlib at run time): `kstat list` decodes the records straight
into what it prints (`kstat.commands._lean_list`), or into kstat's program values
(`kstat.sources.listing`).
"""

from __future__ import annotations

import operator
import os
import struct
from itertools import compress

from kstat._values import PlainValue
from kstat.abi import assembler as asm
from kstat.sources import offsets_cache
from kstat.sources.program_iterator import (
    DETAILS_AT,
    DETAILS_SIZE,
    RECORD,
    VMLINUX_BTF,
    LinkedIterator,
    iterator_program,
    kernel_layout,
    running_kernel_offsets,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Any, Final

    from kstat.abi.structs import Instruction
    from kstat.sources.program_iterator import FilePath

LISTING_NAME: Final = "kstat_list_iter"
# jited_len, len (instructions), pages, verified_insns, used_map_cnt, func_cnt, func_info_cnt.
DETAILS: Final = struct.Struct(f"<IIIIIII{DETAILS_SIZE - 28}x")
# A program's counter record (program_iterator.RECORD), then its details: one tuple a program,
# (id, type, tag, load_time, name, run_cnt, run_time_ns, recursion_misses, jited_len, len,
# pages, verified_insns, used_map_cnt, func_cnt, func_info_cnt).
LISTING: Final = struct.Struct(RECORD.format + DETAILS.format.lstrip("<"))
# bpf_prog_info.xlated_prog_len is the program's instructions, 8 bytes each (struct bpf_insn);
# its fdinfo memlock its pages.
INSTRUCTION_SIZE: Final = 8
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")

_JITED, _INSTRUCTIONS, _PAGES, _VERIFIED, _MAPS, _FUNCTIONS, _FUNCTION_INFOS = (
    DETAILS_AT + 4 * field for field in range(7)
)
# A record as u32 words, its id and type; as u64 words (LISTING's fields, by their offsets), its
# load time, run count, run time and recursion misses.
_WORDS: Final = LISTING.size // 8
_ID, _TYPE = 0, 1
_LOAD_TIME, _RUN_COUNT, _RUN_TIME, _MISSES = 2, 5, 6, 7
# Its byte fields, each alone (a struct of one field unpacks a column faster than one of several
# does, then split): tag, name (NUL-padded), its details' footprint (jited_len, len, pages,
# verified_insns); and as u32 words, its counts of maps, functions and function infos.
_TAG: Final = struct.Struct(f"<8x8s{LISTING.size - 16}x")
_NAME: Final = struct.Struct(f"<24x16s{LISTING.size - 40}x")
_FOOTPRINT_BYTES: Final = struct.Struct(f"<{RECORD.size}x16s{DETAILS_SIZE - 16}x")
_FOOTPRINT: Final = struct.Struct("=IIII")  # the kernel's byte order, as the columns' words
_SYSCALL_COUNTS: Final = tuple(range(RECORD.size // 4 + 4, RECORD.size // 4 + 7))
_FIRST: Final = operator.itemgetter(0)


class ListingOffsets(PlainValue):
    """Where the listing's details are, on this kernel (`bpf_prog` and `bpf_prog_aux`)."""

    __slots__ = (
        "aux_func_cnt",
        "aux_func_info_cnt",
        "aux_used_map_cnt",
        "aux_verified_insns",
        "prog_jited_len",
        "prog_len",
        "prog_pages",
    )

    prog_pages: int
    prog_len: int
    prog_jited_len: int
    aux_used_map_cnt: int
    aux_func_cnt: int
    aux_func_info_cnt: int
    aux_verified_insns: int | None  # 5.16+

    def __init__(
        self,
        *,
        prog_pages: int,
        prog_len: int,
        prog_jited_len: int,
        aux_used_map_cnt: int,
        aux_func_cnt: int,
        aux_func_info_cnt: int,
        aux_verified_insns: int | None,
    ) -> None:
        self.prog_pages = prog_pages
        self.prog_len = prog_len
        self.prog_jited_len = prog_jited_len
        self.aux_used_map_cnt = aux_used_map_cnt
        self.aux_func_cnt = aux_func_cnt
        self.aux_func_info_cnt = aux_func_info_cnt
        self.aux_verified_insns = aux_verified_insns

    @staticmethod
    def of_running_kernel(btf: FilePath = VMLINUX_BTF) -> ListingOffsets:
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
        # By plain loads where this kernel allows them, as the window's iterator reads.
        code = details_code(details)
        self.load_reading_directly(
            lambda scratch: iterator_program(offsets, cpu_offsets, details=code, scratch_map=scratch),
            LISTING_NAME,
            offsets.attach_btf_id,
        )

    def records(self) -> bytes:
        """One walk's whole records (LISTING each), in the kernel's order (by id)."""
        data = self.read()
        return data[: len(data) - len(data) % LISTING.size]


def footprint_of(
    jited_size: int, instructions: int, pages: int, verified: int, *, counts_verified_instructions: bool
) -> tuple[int, int, int | None, int]:
    """What a record's details say of a program's footprint, as `bpf_prog_info` and fdinfo
    would: JIT size, translated size and memlock in bytes, and the verifier's instructions
    (None on a kernel that does not count them: the record's zero is no count)."""
    return (
        jited_size,
        instructions * INSTRUCTION_SIZE,
        verified if counts_verified_instructions else None,
        pages * PAGE_SIZE,
    )


class RecordColumns:
    """A walk's records as columns: one list a field, one entry a record (but those of the
    programs left out), in the kernel's order (by id), read at C speed (a column of words, or
    of byte fields, at a time): a listing of 10,000 programs decodes no record by a Python
    statement."""

    __slots__ = (
        "footprints",
        "ids",
        "load_times_ns",
        "names",
        "needing_syscalls",
        "recursion_misses",
        "run_counts",
        "run_times_ns",
        "tags",
        "types",
    )

    def __init__(self, records: bytes, leave_out: Collection[int] = ()) -> None:
        # In the kernel's byte order, as the iterator wrote them.
        words, longs = memoryview(records).cast("I"), memoryview(records).cast("Q")
        self.ids: list[int] = words[_ID :: 2 * _WORDS].tolist()
        self.types: list[int] = words[_TYPE :: 2 * _WORDS].tolist()
        self.load_times_ns: list[int] = longs[_LOAD_TIME::_WORDS].tolist()
        self.run_counts: list[int] = longs[_RUN_COUNT::_WORDS].tolist()
        self.run_times_ns: list[int] = longs[_RUN_TIME::_WORDS].tolist()
        # Zero where the kernel does not count them (before 5.12).
        self.recursion_misses: list[int] = longs[_MISSES::_WORDS].tolist()
        # Each tag's 8 bytes, each name's 16 (NUL-padded).
        self.tags: list[bytes] = list(map(_FIRST, _TAG.iter_unpack(records)))
        self.names: list[bytes] = list(map(_FIRST, _NAME.iter_unpack(records)))
        # What the details say of a footprint, as bytes (footprint_fields reads them): equal
        # ones are one footprint.
        self.footprints: list[bytes] = list(map(_FIRST, _FOOTPRINT_BYTES.iter_unpack(records)))
        maps, functions, function_infos = (words[word :: 2 * _WORDS].tolist() for word in _SYSCALL_COUNTS)
        for program_id in leave_out:
            if program_id in self.ids:
                index = self.ids.index(program_id)
                for column in (*self._columns(), maps, functions, function_infos):
                    del column[index]
        # Which of the kept records (their indexes) say that the rest of their program's
        # details needs the syscalls: it uses maps (their ids), has BTF function info (a full
        # name) or is made of several functions (the JIT size is their sum).
        needs = map(operator.or_, map(operator.or_, maps, functions), function_infos)
        self.needing_syscalls: list[int] = list(compress(range(len(self.ids)), needs))

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.ids,
            self.types,
            self.load_times_ns,
            self.run_counts,
            self.run_times_ns,
            self.recursion_misses,
            self.tags,
            self.names,
            self.footprints,
        )

    def __len__(self) -> int:
        return len(self.ids)


def footprint_fields(footprint: bytes) -> tuple[int, int, int, int]:
    """A record's footprint bytes (RecordColumns.footprints) as footprint_of's jited_len, len,
    pages and verified_insns."""
    jited_size, instructions, pages, verified = _FOOTPRINT.unpack(footprint)
    return jited_size, instructions, pages, verified
