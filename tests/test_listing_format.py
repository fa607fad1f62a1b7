"""kstat list's output (kstat/formats/listing.py): its JSON is what orjson writes of each
program's object, byte for byte, hostile names included; its table; and the names it spells out
are the catalogues' (it imports none of them)."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstat.core.catalogue import METRICS, Kind
from kstat.core.counters import Counters
from kstat.core.model import MapFootprint, ProgramFootprint, ProgramOwner, Workload
from kstat.formats.listing import (
    COUNTER_KEYS,
    FOOTPRINT_KEYS,
    OWN_KEYS,
    ListedColumns,
    ProgramShape,
    footprint_object,
    listing_json,
    listing_table,
    owner_object,
)
from kstat.formats.program_json import footprint_to_dict, owner_to_dict
from kstat.sources.workload_fields import WORKLOAD_FIELDS
from kstat.sources.workloads import fields_of

# What a hostile name holds: quotes and backslashes, a comm cut in the middle of `é`, a title
# change, a screen clear, a newline, a right-to-left override, DEL, a C1 CSI, JSON's and
# JavaScript's line separators, and a character beyond the BMP.
HOSTILE = 'kpr-"\\\ufffd\x1b]0;pwned\x07\x1b[2J\nnext\u202eevil\x7f\x9b\u2028\u2029\U0001f600%s{0}'
OWNER = {"pid": 4242, "command": HOSTILE, "unit": f"{HOSTILE}.service"}
POD_OWNER: dict[str, Any] = {
    "pid": 7,
    "command": "agent",
    "container_id": "c" * 64,
    "container_runtime": "containerd",
    "container_name": "exporter",
    "pod_uid": "0" * 36,
    "pod": "web",
    "namespace": "team",
    "qos_class": "Burstable",
}
MAPPED = footprint_object(
    jited_size_bytes=129,
    xlated_size_bytes=208,
    verified_instructions=16,
    memlock_bytes=4096,
    maps=[(21, 2472), (22, 440)],
)
UNREADABLE = footprint_object(
    jited_size_bytes=21,
    xlated_size_bytes=24,
    verified_instructions=None,
    memlock_bytes=None,
    maps=[(3, None)],
)


def columns(count: int = 3, *, misses: bool = True) -> ListedColumns:
    """A listing of `count` programs: hostile names, shapes shared and not, owners with and
    without workloads, attachments and none, a footprint that could not be read."""
    shapes = [
        ProgramShape([OWNER], [], MAPPED),
        ProgramShape([OWNER, POD_OWNER], [f"cgroup/egress:/sys/fs/cgroup/{HOSTILE}", "xdp/native:eth0"], {}),
        ProgramShape([], ["iter"], UNREADABLE),
    ]
    listed = ListedColumns()
    for index in range(count):
        listed.shapes.append(shapes[index % len(shapes)])
        listed.ids.append(1000 + index)
        listed.types.append("SocketFilter" if index % 2 else "Tracing")
        listed.kernel_names.append(HOSTILE[:15] if index % 3 else f"kbench_{index}")
        listed.names.append(f"{HOSTILE}_full" if index % 4 == 1 else listed.kernel_names[-1])
        listed.tags.append(f"{index:016x}")
        listed.load_times_ns.append(2_422_186_980_681 + index)
        listed.loaded_at.append(f"2026-12-01T22:52:24.{index:09d}".rstrip("0").rstrip(".") + "Z")
        listed.run_times_ns.append(index * 1_000_003 if index % 2 else 0)
        listed.run_counts.append(index * 7 if index % 2 else 0)
        listed.recursion_misses.append((index % 5 if index % 2 else 0) if misses else None)
    return listed


def objects(listed: ListedColumns) -> list[dict[str, Any]]:
    """Each program's object as the listing documents it (docs/programs.md), field by field."""
    found = []
    for index, shape in enumerate(listed.shapes):
        found.append(
            {
                "id": listed.ids[index],
                "type": listed.types[index],
                "name": listed.names[index],
                "kernel_name": listed.kernel_names[index],
                "tag": listed.tags[index],
                "load_time_ns": listed.load_times_ns[index],
                "loaded_at": listed.loaded_at[index],
                "owners": shape.owners,
                "attachments": shape.attachments,
                **shape.footprint,
                "run_time_ns": listed.run_times_ns[index],
                "run_count": listed.run_counts[index],
                "recursion_misses": listed.recursion_misses[index],
                "per_cpu_run_time_ns": None,
                "per_cpu_run_count": None,
            }
        )
    return found


@pytest.mark.parametrize("pretty", [False, True])
@pytest.mark.parametrize(("count", "misses"), [(0, True), (1, True), (7, False), (2500, True)])
def test_the_json_is_what_orjson_writes_of_each_programs_object(
    pretty: bool, count: int, misses: bool
) -> None:
    listed = columns(count, misses=misses)
    written = "".join(listing_json(listed, pretty=pretty))
    option = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if pretty else 0)
    assert written.encode() == orjson.dumps(objects(listed), option=option)


def test_the_json_is_written_a_thousand_programs_a_piece() -> None:
    pieces = list(listing_json(columns(2500)))
    assert len(pieces) == 4  # three of programs, then the list's end
    assert orjson.loads("".join(pieces)) == objects(columns(2500))


def test_the_standard_librarys_escaping_is_orjsons_for_every_code_point() -> None:
    # What the listing's strings are escaped by (the standard library's C encoder, as
    # json.dumps(ensure_ascii=False)) against orjson, the report's encoder: every character
    # alone, and all of them in one string.
    from json.encoder import encode_basestring  # noqa: PLC0415

    every = [chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF]
    assert [encode_basestring(character) for character in every[:0x3000]] == [
        orjson.dumps(character).decode() for character in every[:0x3000]
    ]
    assert encode_basestring("".join(every)) == orjson.dumps("".join(every)).decode()


@given(st.lists(st.text(), max_size=5))
def test_any_names_are_written_as_orjson_writes_them(names: list[str]) -> None:
    listed = columns(len(names))
    listed.names = listed.kernel_names = names
    listed.types = names
    for shape in listed.shapes:
        shape.attachments = names
    assert "".join(listing_json(listed)).encode() == orjson.dumps(
        objects(listed), option=orjson.OPT_APPEND_NEWLINE
    )


def test_the_table_aligns_its_columns_numbers_to_the_right() -> None:
    listed = ListedColumns()
    shared = ProgramShape([{"pid": 4242, "command": "agent", "unit": "agent.service"}], [], {})
    attached = ProgramShape([POD_OWNER, {"pid": 9, "command": "tc"}], ["xdp/native:eth0", "iter"], {})
    for shape, program_id, name, runs, run_time in [
        (shared, 7, "kbench_0", 0, 0),
        (attached, 123456, "a_much_longer_name", 42, 1_000_003),
    ]:
        listed.shapes.append(shape)
        listed.ids.append(program_id)
        listed.types.append("SocketFilter")
        listed.names.append(name)
        listed.kernel_names.append(name)
        listed.run_counts.append(runs)
        listed.run_times_ns.append(run_time)
    assert listing_table(listed).splitlines() == [
        "    ID  TYPE          NAME                RUN_CNT  RUN_TIME_NS  OWNERS         RUNS IN  "
        "          ATTACHED",
        "     7  SocketFilter  kbench_0                  0            0  4242/agent     agent.service      -",
        "123456  SocketFilter  a_much_longer_name       42      1000003  7/agent, 9/tc  team/web/exporter  "
        "xdp/native:eth0, iter",
    ]


def test_the_table_shows_every_name_escaped_and_on_its_line() -> None:
    rows = listing_table(columns(3)).splitlines()
    assert len(rows) == 4  # the heading and three programs: no name added a line
    assert not [row for row in rows if "\x1b" in row or "\u202e" in row or "\x9b" in row]
    assert '4242/kpr-"\\\ufffd\\x1b]0;pwned\\x07\\x1b[2J\\x0anext\\u202eevil\\x7f\\x9b' in rows[1]


def test_an_empty_table_is_its_heading() -> None:
    assert (
        listing_table(ListedColumns()) == "ID  TYPE  NAME  RUN_CNT  RUN_TIME_NS  OWNERS  RUNS IN  ATTACHED\n"
    )


def test_the_names_spelled_out_are_the_catalogues() -> None:
    assert Counters._fields == COUNTER_KEYS
    properties = tuple(metric.name for metric in METRICS if metric.kind is Kind.PROPERTY)
    assert (*properties, "map_ids") == FOOTPRINT_KEYS
    assert tuple(field.name for field in attrs.fields(Workload)) == WORKLOAD_FIELDS
    written = orjson.loads("".join(listing_json(columns(1))))[0]
    assert list(written) == [*OWN_KEYS, "owners", "attachments", *FOOTPRINT_KEYS, *COUNTER_KEYS]


@pytest.mark.parametrize(
    "footprint",
    [
        ProgramFootprint(
            jited_size_bytes=41, xlated_size_bytes=64, verified_instructions=8, memlock_bytes=4096
        ),
        ProgramFootprint(
            jited_size_bytes=129,
            xlated_size_bytes=208,
            verified_instructions=None,
            memlock_bytes=None,
            maps=(MapFootprint(21, 2472), MapFootprint(22, None)),
        ),
        ProgramFootprint(
            jited_size_bytes=1,
            xlated_size_bytes=8,
            verified_instructions=1,
            memlock_bytes=4096,
            maps=(MapFootprint(3, 320),),
        ),
    ],
)
def test_a_footprints_object_is_the_reports(footprint: ProgramFootprint) -> None:
    assert footprint_object(
        jited_size_bytes=footprint.jited_size_bytes,
        xlated_size_bytes=footprint.xlated_size_bytes,
        verified_instructions=footprint.verified_instructions,
        memlock_bytes=footprint.memlock_bytes,
        maps=[(entry.id, entry.memlock_bytes) for entry in footprint.maps],
    ) == footprint_to_dict(footprint)


@pytest.mark.parametrize(
    "workload",
    [
        Workload(),
        Workload(unit="nginx.service"),
        Workload(
            container_id="c" * 64,
            container_runtime="containerd",
            container_name="exporter",
            pod_uid="0" * 36,
            pod="web",
            namespace="team",
            qos_class="Burstable",
        ),
    ],
)
def test_an_owners_object_is_the_reports(workload: Workload) -> None:
    owner = ProgramOwner(12, HOSTILE, workload)
    assert owner_object(owner.pid, owner.command, fields_of(workload)) == owner_to_dict(owner)
    assert list(owner_object(owner.pid, owner.command, fields_of(workload))) == list(owner_to_dict(owner))
