"""`kstat list`: the loaded programs, who holds them and where they are attached, right now.

`kstat list` with no flag but `--json` or `--pretty` is printed by the console script on a lean
path (`kstat.commands._lean_list`) wherever kstat's iterators can be built. This is the command
with its parser: the filters, `-v`, `--host-root`, and every listing by syscalls, read as kstat's
program values and written in the same layout (`kstat.formats.listing`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from attrs import field, frozen

from kstat.commands._lean_list import write_listing
from kstat.commands._options import (
    EXIT_OK,
    ArgumentParser,
    add_filter_flags,
    add_verbose_flag,
    parse_with_filter,
)
from kstat.core.filters import ProgramFilter
from kstat.core.model import NO_DETAILS, ProgramStats
from kstat.core.timestamps import format_timestamp
from kstat.formats.listing import ListedColumns, ProgramShape
from kstat.formats.program_json import footprint_to_dict, owner_to_dict
from kstat.sources import clocks
from kstat.sources.attribution import Attributor
from kstat.sources.listing import read_listing
from kstat.sources.owners import open_owner_source

# Its output is the point: info logs only with -v (kstat.cli).
PRINTS_ITS_RESULT: Final = True


@frozen
class Listing:
    """Every loaded program the filter selects, described (full name, footprint) and attributed
    (owners, attachments), in id order; and the offset that puts their load times (boot-time
    clock) on the wall clock."""

    programs: list[ProgramStats]
    boot_to_wall_ns: int = field(factory=clocks.boot_to_wall_ns)

    def loaded_at(self, program: ProgramStats) -> str:
        return format_timestamp(program.load_time_ns + self.boot_to_wall_ns)


def list_programs(program_filter: ProgramFilter, host_root: Path = Path("/")) -> Listing:
    """One read of every loaded program (no stats window: nothing is switched on): by kstat's
    iterator where it loads, what it prints and no more (`kstat.sources.listing`); the owners
    of every program in one walk, the attachments in one scan."""
    # Owners of every program in one read, by kstat's task-file iterator where it loads.
    owner_source = open_owner_source()
    try:
        # An inventory lists every program, other kstat instances' own too (as bpftool does),
        # but the owner source's own iterator.
        ignored = owner_source.own_program_ids
        programs = [program for program in read_listing()[0] if program.id not in ignored]
        details = Attributor(host_root=host_root, owner_source=owner_source).details_by_id(programs)
    finally:
        owner_source.close()
    for program in programs:
        facts = program.facts
        facts.details, facts.attributed = details.get(program.id, NO_DETAILS), True
    if not program_filter.is_empty:
        programs = _selected(programs, program_filter)
    # load_time is on the boot-time clock; the wall clock is what people read.
    return Listing(programs)


def _selected(programs: list[ProgramStats], program_filter: ProgramFilter) -> list[ProgramStats]:
    """The programs the filter selects: by what they are and who holds them, and by the process
    tree it names, as /proc shows it now."""
    held = [True] * len(programs)
    root = program_filter.process_tree
    if root is not None:
        # Imported here: only a filter by process tree needs it.
        from kstat.sources.process_tree import ProcessTree  # noqa: PLC0415

        tree = ProcessTree(root, follow_with_perf=False)
        try:
            tree.refresh()
            held = tree.holds_all(programs)
        finally:
            tree.close()
    selects = program_filter.selects
    return [
        program
        for program, in_tree in zip(programs, held, strict=True)
        if in_tree and selects(program, program.details)
    ]


def listing_columns(listing: Listing) -> ListedColumns:
    """Every program's values (`kstat.formats.listing`), from kstat's program values."""
    # Programs share their details (one loader's owners and attachments) and often footprints:
    # each pair is one shape.
    shapes: dict[tuple[int, int], ProgramShape] = {}
    columns = ListedColumns()
    for program in listing.programs:
        facts = program.facts
        details, footprint = facts.details, facts.footprint
        shape = shapes.get((id(details), id(footprint)))
        if shape is None:
            shape = shapes[id(details), id(footprint)] = ProgramShape(
                [owner_to_dict(owner) for owner in details.owners],
                list(details.attachments),
                footprint_to_dict(footprint),
            )
        columns.shapes.append(shape)
        columns.ids.append(program.id)
        columns.types.append(program.type)
        columns.names.append(facts.name or program.kernel_name)
        columns.kernel_names.append(program.kernel_name)
        columns.tags.append(program.tag)
        columns.load_times_ns.append(program.load_time_ns)
        columns.loaded_at.append(listing.loaded_at(program))
        columns.run_times_ns.append(program.counters.run_time_ns)
        columns.run_counts.append(program.counters.run_count)
        columns.recursion_misses.append(program.counters.recursion_misses)
    return columns


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat list",
        description=(
            "List the loaded eBPF programs (id, type, full name, the kernel's run count and run "
            "time as bpftool shows them, owning processes as pid/comm, attachments) without a "
            "collection window."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of a table, on one line")
    parser.add_argument("--pretty", action="store_true", help="JSON, indented for people to read")
    add_verbose_flag(parser)
    add_filter_flags(parser)
    return parser


def parse(arguments: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    return parser, parse_with_filter(parser, arguments)


def run(options: argparse.Namespace) -> int:
    columns = listing_columns(list_programs(options.program_filter, options.host_root))
    filtered = not options.program_filter.is_empty
    write_listing(columns, json=options.json, pretty=options.pretty, filtered=filtered)
    return EXIT_OK
