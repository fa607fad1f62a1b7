"""`kstat list`'s output: each program's JSON object, in the order written (what it is, when it
was loaded, who holds it and where it is attached, its footprint as `bpftool prog show` gives
it, then the kernel's counters), the JSON as `bpftool --json` writes it, and the table.

A listing is columns (`ListedColumns`: one list a field, one entry a program), each program
with the shape it shares with others (`ProgramShape`: owners, attachments, footprint; one
loader's thousands of programs have one). Each shape is encoded once; a program's text is its
own values and its shape's text put together, the values of each column encoded at C speed
(`map` over a column): at 10,000 programs, a loop of Python statements a program is most of a
listing's time. The columns are plain values, whether read by kstat's iterators
(`kstat.commands._listed`, which imports none of kstat's model) or from kstat's program
values (`kstat.commands.list`, with a filter or by syscalls): one layout for both.

The JSON is what orjson writes (a C encoder, as the report's): the standard library's encoder,
imported already for the offsets cache, escapes every character as orjson does (a test holds it
to that, for every code point), and names from the host are escaped by its C function. Nothing
of kstat's model (attrs) is imported, so the names of the catalogues written are spelled out
here; a test holds them to the catalogues.
"""

from __future__ import annotations

import json
from itertools import chain, islice, repeat
from json.encoder import encode_basestring

from kstat.text import for_terminal, for_terminal_each

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from typing import Any, Final

    # An owner's or a footprint's JSON object.
    JsonObject = dict[str, Any]

# A program's object: its own fields, what it shares (owners, attachments, its footprint's), then
# its counters: the counter catalogue's, in its order (`kstat.core.counters.Counters`), null where
# this kernel has none (the per-CPU splits always: a listing does not read them).
OWN_KEYS: Final = ("id", "type", "name", "kernel_name", "tag", "load_time_ns", "loaded_at")
COUNTER_KEYS: Final = (
    "run_time_ns",
    "run_count",
    "recursion_misses",
    "per_cpu_run_time_ns",
    "per_cpu_run_count",
)
# The metric catalogue's property metrics, in its order (`kstat.core.catalogue`), then the map
# ids: a footprint's object (`kstat.formats.program_json.footprint_to_dict`).
FOOTPRINT_KEYS: Final = (
    "jited_size_bytes",
    "xlated_size_bytes",
    "verified_instructions",
    "num_maps",
    "memlock_bytes",
    "maps_memlock_bytes",
    "map_ids",
)
# Indented JSON: two spaces a level; a program's fields are two levels in (the list, the object).
_INDENT: Final = 2
_FIELD_INDENT: Final = " " * (2 * _INDENT)
# Programs a piece of the JSON holds.
_PIECE_PROGRAMS: Final = 1000


def owner_object(pid: int, command: str, workload: Mapping[str, str]) -> JsonObject:
    """`{"pid", "command"}` and the owner's workload fields known, in their order
    (`kstat.sources.workload_fields`: `kstat.formats.program_json.owner_to_dict`'s)."""
    return {"pid": pid, "command": command, **workload}


def footprint_object(
    *,
    jited_size_bytes: int,
    xlated_size_bytes: int,
    verified_instructions: int | None,
    memlock_bytes: int | None,
    maps: Sequence[tuple[int, int | None]],
) -> JsonObject:
    """A footprint's properties, each only where known (no verifier count before Linux 5.16, no
    memlock that could not be read; the maps' memlock only when every map's was read), then
    its map ids. `maps`: each map's id and memlock, in the kernel's order."""
    found: JsonObject = {"jited_size_bytes": jited_size_bytes, "xlated_size_bytes": xlated_size_bytes}
    if verified_instructions is not None:
        found["verified_instructions"] = verified_instructions
    found["num_maps"] = len(maps)
    if memlock_bytes is not None:
        found["memlock_bytes"] = memlock_bytes
    memlocks = [memlock for _, memlock in maps]
    if None not in memlocks:
        found["maps_memlock_bytes"] = sum(memlock for memlock in memlocks if memlock is not None)
    found["map_ids"] = [map_id for map_id, _ in maps]
    return found


class ProgramShape:
    """What programs share: their owners' objects, their attachments and their footprint's
    object (empty where it could not be read). Hashed by identity: a listing's shapes are its
    own."""

    __slots__ = ("attachments", "footprint", "owners")

    def __init__(self, owners: list[JsonObject], attachments: list[str], footprint: JsonObject) -> None:
        self.owners, self.attachments, self.footprint = owners, attachments, footprint


class ListedColumns:
    """Every listed program, as columns: one list a field, one entry a program, in the order
    written. `names` are the full names where known, else the kernel's (the same list as
    `kernel_names` where no program has one); `recursion_misses` None where the kernel does not
    count them."""

    __slots__ = (
        "ids",
        "kernel_names",
        "load_times_ns",
        "loaded_at",
        "names",
        "recursion_misses",
        "run_counts",
        "run_times_ns",
        "shapes",
        "tags",
        "types",
    )

    def __init__(self) -> None:
        self.shapes: list[ProgramShape] = []
        self.ids: list[int] = []
        self.types: list[str] = []
        self.names: list[str] = []
        self.kernel_names: list[str] = []
        self.tags: list[str] = []
        # On the boot-time clock, and when that was (RFC 3339).
        self.load_times_ns: list[int] = []
        self.loaded_at: list[str] = []
        self.run_times_ns: list[int] = []
        self.run_counts: list[int] = []
        self.recursion_misses: list[int | None] = []

    def __len__(self) -> int:
        return len(self.ids)


class _ShapeTexts(dict[ProgramShape, str]):
    """Each shape's fields (owners, attachments, footprint) in one form of JSON, made at its
    first look-up (a look-up at C speed, `map` over a column); an owners' list shared by
    several shapes, once."""

    def __init__(self, *, pretty: bool) -> None:
        super().__init__()
        self._pretty = pretty
        # Between two fields: a comma, and in indented JSON a field's line and indent.
        self._between = f",\n{_FIELD_INDENT}" if pretty else ","
        self._colon = ": " if pretty else ":"
        self._owners: dict[int, str] = {}

    def __missing__(self, shape: ProgramShape) -> str:
        owners = self._owners.get(id(shape.owners))
        if owners is None:
            owners = self._owners[id(shape.owners)] = _encoded(shape.owners, pretty=self._pretty)
        fields = [
            f'"owners"{self._colon}{owners}',
            f'"attachments"{self._colon}{self._value(shape.attachments)}',
            *(
                f"{encode_basestring(key)}{self._colon}{self._value(value)}"
                for key, value in shape.footprint.items()
            ),
        ]
        text = self[shape] = self._between.join(fields)
        return text

    def _value(self, value: Any) -> str:
        """A field's value: numbers and lists of numbers or strings (a footprint's, the
        attachments) written here, as orjson writes them; anything else by the encoder."""
        if type(value) is int:
            return str(value)
        if type(value) is list and all(type(item) in (int, str) for item in value):
            items = [str(item) if type(item) is int else encode_basestring(item) for item in value]
            if not items:
                return "[]"
            if not self._pretty:
                return f"[{','.join(items)}]"
            inner = f"{_FIELD_INDENT}{' ' * _INDENT}"
            return f"[\n{inner}" + f",\n{inner}".join(items) + f"\n{_FIELD_INDENT}]"
        return _encoded(value, pretty=self._pretty)


class _Encoded(dict[str, str]):
    """Strings as JSON, each encoded at its first look-up (a column's few program types)."""

    def __missing__(self, text: str) -> str:
        encoded = self[text] = encode_basestring(text)
        return encoded


def _encoded(value: Any, *, pretty: bool) -> str:
    """A value as orjson writes it (compact, or indented at a program field's depth)."""
    if not pretty:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # A JSON text's only line breaks are its own (a string's are escaped).
    return json.dumps(value, ensure_ascii=False, indent=_INDENT).replace("\n", "\n" + _FIELD_INDENT)


# The values whose text goes in quotes as it is: a tag (hex digits) and a time (digits and
# `-:.TZ`) need no escaping (names and types are encoded with their quotes).
_QUOTED: Final = frozenset({"tag", "loaded_at"})
# The counters a listing reads; the others (the per-CPU splits) are null.
_READ_COUNTERS: Final = 3


def _layout(*, pretty: bool) -> tuple[list[str], str]:
    """The text of a program's object around its values: before each value (its own fields, its
    shape's, its counters read, in that order), and after the last (the counters not read)."""
    indent, inner = (" " * _INDENT, "\n" + _FIELD_INDENT) if pretty else ("", "")
    colon = ": " if pretty else ":"
    before, quoted = [], False
    for index, key in enumerate((*OWN_KEYS, None, *COUNTER_KEYS[:_READ_COUNTERS])):
        # The quote that closes the value before, the separator, then the key (none before the
        # shape's fields, which have theirs) and the quote that opens this value.
        text = ('"' if quoted else "") + ("{" if not index else ",") + inner
        if key is not None:
            text += f'"{key}"{colon}' + ('"' if key in _QUOTED else "")
        before.append(indent + text if not index else text)
        quoted = key in _QUOTED
    unread = "".join(f',{inner}"{key}"{colon}null' for key in COUNTER_KEYS[_READ_COUNTERS:])
    return before, ('"' if quoted else "") + unread + ("\n" + indent if pretty else "") + "}"


def _digits(values: Sequence[int | str | None]) -> Iterable[str]:
    """Each value as text, each distinct value once: most of a host's programs are idle, and
    their counters are zeros (a number's digits cost more than looking them up)."""
    distinct = set(values)
    if len(distinct) > len(values) // 2:
        return map(str, values)
    return map(dict(zip(distinct, map(str, distinct), strict=True)).__getitem__, values)


def listing_json(columns: ListedColumns, *, pretty: bool = False) -> Iterator[str]:
    """One line, as `bpftool --json` writes; `pretty` indents (orjson's OPT_INDENT_2). In
    pieces of a thousand programs, in order: a listing's text is never all in memory at once
    (at 10,000 programs, a fresh process's memory costs more than writing into it)."""
    if not columns:
        yield "[]\n"  # as orjson writes an empty list, indented or not
        return
    # Every column's values as their JSON text, at C speed.
    kernel_names = list(map(encode_basestring, columns.kernel_names))
    names = kernel_names if columns.names is columns.kernel_names else map(encode_basestring, columns.names)
    misses: Sequence[int | str | None] = columns.recursion_misses
    if None in columns.recursion_misses:
        misses = ["null" if value is None else value for value in columns.recursion_misses]
    values = (  # in _layout's order
        map(str, columns.ids),
        map(_Encoded().__getitem__, columns.types),
        names,
        kernel_names,
        columns.tags,
        map(str, columns.load_times_ns),
        columns.loaded_at,
        map(_ShapeTexts(pretty=pretty).__getitem__, columns.shapes),
        _digits(columns.run_times_ns),
        _digits(columns.run_counts),
        _digits(misses),
    )
    # Each program's pieces, its object put together at C speed: the separator before it (the
    # list's opening before the first), then the text before each value and the value, then
    # the object's end. A piece of the listing is a thousand programs' pieces, joined.
    before, after = _layout(pretty=pretty)
    opening, between, closing = ("[\n", ",\n", "\n]\n") if pretty else ("[", ",", "]\n")
    parts: list[Iterable[str]] = [chain((opening,), repeat(between))]
    for text, column in zip(before, values, strict=True):
        parts += (repeat(text), column)
    parts.append(repeat(after))
    # As long as the columns: the rest repeat.
    programs = zip(*parts, strict=False)
    while piece := "".join(chain.from_iterable(islice(programs, _PIECE_PROGRAMS))):
        yield piece
    yield closing


def where_it_runs(owner: Mapping[str, Any]) -> str:
    """`namespace/pod/container`, a short container id, a systemd unit, or nothing."""
    pod = owner.get("pod")
    if pod is not None:
        container_name = owner.get("container_name")
        container = f"/{container_name}" if container_name else ""
        return f"{owner.get('namespace')}/{pod}{container}"
    pod_uid = owner.get("pod_uid")
    if pod_uid is not None:
        return f"pod {pod_uid}"
    container_id = owner.get("container_id")
    if container_id is not None:
        return f"{owner.get('container_runtime') or 'container'} {container_id[:12]}"
    return str(owner.get("unit") or "")


_HEADERS: Final = ("ID", "TYPE", "NAME", "RUN_CNT", "RUN_TIME_NS", "OWNERS", "RUNS IN", "ATTACHED")
# Columns that are numbers: right-aligned, as bpftool's counters read.
_NUMERIC: Final = frozenset({"ID", "RUN_CNT", "RUN_TIME_NS"})


class _TableCells(dict[ProgramShape, tuple[str, str, str]]):
    """Each shape's OWNERS, RUNS IN and ATTACHED, escaped for the terminal, made at its first
    look-up."""

    def __missing__(self, shape: ProgramShape) -> tuple[str, str, str]:
        owners = shape.owners
        cells = self[shape] = (
            for_terminal(", ".join(f"{owner['pid']}/{owner['command']}" for owner in owners)) or "-",
            for_terminal(", ".join(sorted({where_it_runs(owner) for owner in owners} - {""}))) or "-",
            for_terminal(", ".join(shape.attachments)) or "-",
        )
        return cells


def listing_table(columns: ListedColumns) -> str:
    """One line a program; every name the host chose escaped for the terminal. RUN_CNT and
    RUN_TIME_NS are the kernel's counters as `bpftool prog show` prints them (cumulative since
    load, moving only while someone has the stats on)."""
    own: list[Sequence[str]] = [
        list(map(str, columns.ids)),
        columns.types,
        for_terminal_each(columns.names),
        list(map(str, columns.run_counts)),
        list(map(str, columns.run_times_ns)),
    ]
    # The cells programs share (OWNERS, RUNS IN, ATTACHED): each shape's, made once.
    cells = _TableCells()
    shapes = list(dict.fromkeys(columns.shapes))
    shared = list(zip(*map(cells.__getitem__, shapes), strict=True)) or [(), (), ()]
    widths = [
        max(len(heading), max(map(len, column), default=0))
        for heading, column in zip(_HEADERS, [*own, *shared], strict=True)
    ]

    def padded(row: Sequence[str], start: int = 0) -> str:
        """Cells padded to their columns' widths (by characters), numbers to the right."""
        return "  ".join(
            cell.rjust(width) if heading in _NUMERIC else cell.ljust(width)
            for cell, heading, width in zip(row, _HEADERS[start:], widths[start:], strict=False)
        )

    # A program's own cells padded a column at a time at C speed, then its shape's, padded
    # once; each line without the spaces after its last cell.
    texts = {shape: padded(cells[shape], len(own)) for shape in shapes}
    parts = [
        map(str.rjust if heading in _NUMERIC else str.ljust, column, repeat(width))
        for heading, column, width in zip(_HEADERS, own, widths, strict=False)
    ]
    rows = map(str.rstrip, map("  ".join, zip(*parts, map(texts.__getitem__, columns.shapes), strict=True)))
    return "\n".join([padded(_HEADERS).rstrip(), *rows]) + "\n"
