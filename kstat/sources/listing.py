"""Every loaded program as `kstat list` describes it, in one read, as kstat's program values (what
its filters select by): the listing iterator's records (`kstat.sources.listing_iterator`:
counters, and what `bpf_prog_info` would give of the footprint), and for the programs whose
records say the rest needs them (map ids, a BTF name, a sum over several functions) the syscall
reader's details.

Only those programs are looked up by syscalls, as the syscall reader describes every program;
a program with none of them costs no syscall at all. Where the iterator cannot be built (no BTF,
no iterators, a refusal), `read_listing` reads every program by syscalls instead, the same
values. `kstat list` without a filter decodes the same records without these values
(`kstat.commands._lean_list`).
"""

from __future__ import annotations

from kstat.abi.enums import program_type_name
from kstat.core.counters import Counters
from kstat.core.model import ProgramFacts, ProgramFootprint, ProgramStats
from kstat.errors import KstatError
from kstat.sources.listing_iterator import LISTING, LISTING_NAME, ListingIterator, footprint_of
from kstat.sources.syscalls import ProgramReader
from kstat.text import from_host

__all__ = ["LISTING", "LISTING_NAME", "ListingIterator", "decode_listing", "read_listing"]


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
        data = iterator.records()
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
    ) in LISTING.iter_unpack(data[: len(data) - len(data) % LISTING.size]):
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
                jited, xlated, verified_instructions, memlock = footprint_of(
                    *key, counts_verified_instructions=counts_verified_instructions
                )
                footprint = footprints[key] = ProgramFootprint(
                    jited_size_bytes=jited,
                    xlated_size_bytes=xlated,
                    verified_instructions=verified_instructions,
                    memlock_bytes=memlock,
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
