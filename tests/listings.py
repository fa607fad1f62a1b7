"""kstat list's two paths side by side: the lean one (kstat's iterators decoded straight into
the listing's columns) and the command's (kstat's program values), written alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kstat.commands._listed import Listed
from kstat.commands.list import Listing, list_programs, listing_columns
from kstat.core.filters import ProgramFilter
from kstat.formats.listing import ListedColumns, listing_json, listing_table
from kstat.formats.program_json import footprint_to_dict, owner_to_dict


def only(columns: ListedColumns, ids: set[int]) -> ListedColumns:
    """The listing of the programs with these ids alone, in its order."""
    kept = [index for index, program_id in enumerate(columns.ids) if program_id in ids]
    selected = ListedColumns()
    for name in ListedColumns.__slots__:
        column = getattr(columns, name)
        setattr(selected, name, [column[index] for index in kept])
    return selected


def written(columns: ListedColumns) -> tuple[str, str, str]:
    """What kstat list writes of it: one line of JSON, indented JSON, the table."""
    return (
        "".join(listing_json(columns)),
        "".join(listing_json(columns, pretty=True)),
        listing_table(columns),
    )


def lean_path(ids: set[int], host_root: Path = Path("/")) -> tuple[ListedColumns, int]:
    """The programs with these ids as the lean path lists them, and the offset it put their
    load times (boot-time clock) on the wall clock by."""
    lean = Listed(host_root=str(host_root))
    return only(lean.columns(), ids), lean.boot_to_wall_ns


def command_path(ids: set[int], boot_to_wall_ns: int, host_root: Path = Path("/")) -> Listing:
    """The programs with these ids as the command lists them, their load times put on the wall
    clock by `boot_to_wall_ns` (each path reads the offset for itself, a moment apart)."""
    listed = list_programs(ProgramFilter(ids=tuple(sorted(ids))), host_root)
    return Listing(listed.programs, boot_to_wall_ns)


def reported(listing: Listing) -> list[dict[str, Any]]:
    """Each program's object as kstat list wrote it before its lean path (one orjson dump of
    these): its own fields, its owners and attachments, its footprint, its counters."""
    return [
        {
            "id": program.id,
            "type": program.type,
            "name": program.name,
            "kernel_name": program.kernel_name,
            "tag": program.tag,
            "load_time_ns": program.load_time_ns,
            "loaded_at": listing.loaded_at(program),
            "owners": [owner_to_dict(owner) for owner in program.details.owners],
            "attachments": list(program.details.attachments),
            **footprint_to_dict(program.footprint),
            **program.counters._asdict(),
        }
        for program in listing.programs
    ]


__all__ = ["command_path", "lean_path", "listing_columns", "only", "reported", "written"]
