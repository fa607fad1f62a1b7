"""`kstat list`: the loaded programs, who holds them and where they are attached, right now."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Final

import orjson
from attrs import frozen

from kstat.commands._options import (
    EXIT_OK,
    ArgumentParser,
    add_filter_flags,
    add_verbose_flag,
    parse_with_filter,
    say,
    write_stdout,
)
from kstat.core.counters import Counters
from kstat.core.filters import ProgramFilter
from kstat.core.model import NO_DETAILS, ProgramOwner, ProgramStats
from kstat.core.timestamps import format_timestamp
from kstat.formats.program_json import footprint_to_dict, owner_to_dict
from kstat.sources.attribution import Attributor
from kstat.sources.listing import read_listing
from kstat.sources.owners import open_owner_source
from kstat.text import for_terminal

# With standard output closed: kstat list has no other place to write (it takes no -o).
_ONLY_STDOUT: Final = "kstat list writes only there: redirect it to a file (> FILE)"


# Its output is the point: info logs only with -v (kstat.cli).
PRINTS_ITS_RESULT: Final = True


@frozen
class Listing:
    """Every loaded program the filter selects, described (full name, footprint) and attributed
    (owners, attachments), in id order; and the offset that puts their load times (boot-time
    clock) on the wall clock."""

    programs: list[ProgramStats]
    boot_to_wall_ns: int

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
    return Listing(programs, time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME))


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


# Each program's object, in the order written: what it is, when it was loaded, who holds it and
# where it is attached, its footprint (code size, memlock and maps as `bpftool prog show` gives
# them, the catalogue naming them), then the counter catalogue's counters (null where this
# kernel has none).
_COUNTER_FIELDS: Final = Counters._fields


def listing_json(listing: Listing, pretty: bool = False) -> str:
    """One line, as `bpftool --json` writes (orjson, a C encoder); `pretty` indents."""
    # Programs share their details (one loader's owners and attachments) and often footprints
    # and counters (idle ones): each encoded once, into a template each program's object is
    # copied from, its own fields then filled in place (a dict keeps its keys' order).
    templates: dict[tuple[int, int], dict[str, Any]] = {}
    counters: dict[Counters, dict[str, Any]] = {}
    data: list[dict[str, Any]] = []
    loaded_at = listing.loaded_at
    for program in listing.programs:
        facts = program.facts
        details, footprint = facts.details, facts.footprint
        key = (id(details), id(footprint))
        template = templates.get(key)
        if template is None:
            template = templates[key] = {
                "id": 0,
                "type": "",
                "name": "",
                "kernel_name": "",
                "tag": "",
                "load_time_ns": 0,
                "loaded_at": "",
                "owners": [owner_to_dict(owner) for owner in details.owners],
                "attachments": list(details.attachments),
                **footprint_to_dict(footprint),
                **dict.fromkeys(_COUNTER_FIELDS),
            }
        counted = counters.get(program.counters)
        if counted is None:
            counted = counters[program.counters] = program.counters._asdict()
        entry = template.copy()
        entry["id"] = program.id
        entry["type"] = program.type
        entry["name"] = facts.name or program.kernel_name
        entry["kernel_name"] = program.kernel_name
        entry["tag"] = program.tag
        entry["load_time_ns"] = program.load_time_ns
        entry["loaded_at"] = loaded_at(program)
        entry.update(counted)
        data.append(entry)
    option = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE if pretty else orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(data, option=option).decode()


def where_it_runs(owner: ProgramOwner) -> str:
    """`namespace/pod/container`, a short container id, a systemd unit, or nothing."""
    workload = owner.workload
    if workload.pod is not None:
        container = f"/{workload.container_name}" if workload.container_name else ""
        return f"{workload.namespace}/{workload.pod}{container}"
    if workload.pod_uid is not None:
        return f"pod {workload.pod_uid}"
    if workload.container_id is not None:
        return f"{workload.container_runtime or 'container'} {workload.container_id[:12]}"
    return workload.unit or ""


# Columns that are numbers: right-aligned, as bpftool's counters read.
_NUMERIC: Final = frozenset({"ID", "RUN_CNT", "RUN_TIME_NS"})


def listing_table(listing: Listing) -> str:
    """One line a program; every name the host chose escaped for the terminal. RUN_CNT and
    RUN_TIME_NS are the kernel's counters as `bpftool prog show` prints them (cumulative since
    load, moving only while someone has the stats on)."""
    headers = ("ID", "TYPE", "NAME", "RUN_CNT", "RUN_TIME_NS", "OWNERS", "RUNS IN", "ATTACHED")
    rows = [
        (
            str(program.id),
            program.type,
            for_terminal(program.name),
            str(program.counters.run_count),
            str(program.counters.run_time_ns),
            for_terminal(", ".join(owner.label for owner in program.details.owners)) or "-",
            for_terminal(", ".join(sorted({where_it_runs(owner) for owner in program.details.owners} - {""})))
            or "-",
            for_terminal(", ".join(program.details.attachments)) or "-",
        )
        for program in listing.programs
    ]
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]
    lines = [
        "  ".join(
            cell.rjust(width) if heading in _NUMERIC else cell.ljust(width)
            for cell, width, heading in zip(row, widths, headers, strict=True)
        ).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


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
    listing = list_programs(options.program_filter, options.host_root)
    if options.json or options.pretty:
        write_stdout(listing_json(listing, pretty=options.pretty), instead=_ONLY_STDOUT)
    else:
        write_stdout(listing_table(listing), instead=_ONLY_STDOUT)
        if not listing.programs:
            # On stderr, as bpftool says nothing: the table's header alone would look cut off.
            filtered = not options.program_filter.is_empty
            say("kstat: no eBPF program is loaded" + (" that the filter selects" if filtered else ""))
    return EXIT_OK
