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
from kstat.core.model import NO_DETAILS, ProgramFootprint, ProgramOwner, ProgramStats
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
class ListedProgram:
    id: int
    type: str
    name: str
    kernel_name: str
    tag: str
    load_time_ns: int
    loaded_at: str
    owners: tuple[ProgramOwner, ...]
    attachments: tuple[str, ...]
    # Code size, verifier work, memory and maps (None when they could not be read).
    footprint: ProgramFootprint | None
    # Cumulative since load, and only moving while someone has the stats on.
    counters: Counters


def list_programs(program_filter: ProgramFilter, host_root: Path = Path("/")) -> list[ListedProgram]:
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
    boot_to_wall_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return [
        ListedProgram(
            id=program.id,
            type=program.type,
            name=program.name,
            kernel_name=program.kernel_name,
            tag=program.tag,
            load_time_ns=program.load_time_ns,
            loaded_at=format_timestamp(program.load_time_ns + boot_to_wall_ns),
            owners=program.details.owners,
            attachments=program.details.attachments,
            footprint=program.footprint,
            counters=program.counters,
        )
        for program in programs
    ]


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


def listing_json(programs: list[ListedProgram], pretty: bool = False) -> str:
    """One line, as `bpftool --json` writes (orjson, a C encoder); `pretty` indents."""
    # Programs share their owners' tuples and often their footprints and counters (idle ones):
    # each encoded once.
    owners: dict[int, list[dict[str, Any]]] = {}
    footprints: dict[int, dict[str, Any]] = {}
    counters: dict[Counters, dict[str, Any]] = {}
    data: list[dict[str, Any]] = []
    for program in programs:
        owned = owners.get(id(program.owners))
        if owned is None:
            owned = owners[id(program.owners)] = [owner_to_dict(owner) for owner in program.owners]
        footprint = footprints.get(id(program.footprint))
        if footprint is None:
            footprint = footprints[id(program.footprint)] = footprint_to_dict(program.footprint)
        counted = counters.get(program.counters)
        if counted is None:
            counted = counters[program.counters] = program.counters._asdict()
        data.append(
            {
                "id": program.id,
                "type": program.type,
                "name": program.name,
                "kernel_name": program.kernel_name,
                "tag": program.tag,
                "load_time_ns": program.load_time_ns,
                "loaded_at": program.loaded_at,
                "owners": owned,
                "attachments": list(program.attachments),
                # Code size, memlock and maps, as `bpftool prog show` gives them (the catalogue
                # names them).
                **footprint,
                # The counter catalogue's counters (null where this kernel has none).
                **counted,
            }
        )
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


def listing_table(programs: list[ListedProgram]) -> str:
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
            for_terminal(", ".join(owner.label for owner in program.owners)) or "-",
            for_terminal(", ".join(sorted({where_it_runs(owner) for owner in program.owners} - {""}))) or "-",
            for_terminal(", ".join(program.attachments)) or "-",
        )
        for program in programs
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
    programs = list_programs(options.program_filter, options.host_root)
    if options.json or options.pretty:
        write_stdout(listing_json(programs, pretty=options.pretty), instead=_ONLY_STDOUT)
    else:
        write_stdout(listing_table(programs), instead=_ONLY_STDOUT)
        if not programs:
            # On stderr, as bpftool says nothing: the table's header alone would look cut off.
            filtered = not options.program_filter.is_empty
            say("kstat: no eBPF program is loaded" + (" that the filter selects" if filtered else ""))
    return EXIT_OK
