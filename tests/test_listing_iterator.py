"""The listing iterator's records read a column at a time (kstat/sources/listing_iterator.py),
against the same records unpacked one at a time by their struct."""

from __future__ import annotations

from kstat.sources.listing_iterator import (
    INSTRUCTION_SIZE,
    LISTING,
    PAGE_SIZE,
    RecordColumns,
    footprint_fields,
    footprint_of,
)

# (id, type, tag, load_time, name, run_cnt, run_time_ns, recursion_misses, jited_len, len,
# pages, verified_insns, used_map_cnt, func_cnt, func_info_cnt)
RECORDS = [
    (
        5,
        1,
        b"\x01\x02\x03\x04\x05\x06\x07\x08",
        3_000,
        b"plain".ljust(16, b"\0"),
        11,
        12,
        0,
        41,
        8,
        1,
        8,
        0,
        0,
        0,
    ),
    (6, 26, b"kstatown", 4_000, b"kstat_list_iter\0", 21, 22, 0, 900, 78, 1, 70, 1, 0, 0),
    (
        7,
        1,
        b"\xff" * 8,
        2**63,
        b"\xc3\x1b]0;x\x07".ljust(16, b"\0"),
        2**64 - 1,
        2**40,
        3,
        129,
        26,
        1,
        16,
        2,
        0,
        0,
    ),
    (8, 1, b"\0" * 8, 6_000, b"with_btf".ljust(16, b"\0"), 0, 0, 0, 21, 3, 1, 3, 0, 0, 1),
    (9, 1, b"\0" * 8, 7_000, b"several".ljust(16, b"\0"), 0, 0, 0, 300, 30, 2, 40, 0, 2, 0),
]


def test_columns_hold_what_each_record_says() -> None:
    columns = RecordColumns(b"".join(LISTING.pack(*record) for record in RECORDS), leave_out={6, 99})
    kept = [record for record in RECORDS if record[0] != 6]
    assert len(columns) == 4
    assert columns.ids == [record[0] for record in kept]
    assert columns.types == [record[1] for record in kept]
    assert columns.tags == [record[2] for record in kept]
    assert columns.load_times_ns == [record[3] for record in kept]
    assert columns.names == [record[4] for record in kept]
    assert columns.run_counts == [record[5] for record in kept]
    assert columns.run_times_ns == [record[6] for record in kept]
    assert columns.recursion_misses == [record[7] for record in kept]
    assert [footprint_fields(footprint) for footprint in columns.footprints] == [
        record[8:12] for record in kept
    ]
    # Maps, a BTF function info, several functions: each of the last three needs the syscalls.
    assert columns.needing_syscalls == [1, 2, 3]


def test_no_record_is_no_column() -> None:
    columns = RecordColumns(b"", leave_out={6})
    assert (len(columns), columns.ids, columns.names, columns.needing_syscalls) == (0, [], [], [])


def test_a_records_footprint_is_what_bpf_prog_info_would_say() -> None:
    assert footprint_of(41, 8, 1, 8, counts_verified_instructions=True) == (
        41,
        8 * INSTRUCTION_SIZE,
        8,
        PAGE_SIZE,
    )
    # Before 5.16 the record's zero is no count.
    assert footprint_of(41, 8, 1, 0, counts_verified_instructions=False) == (41, 64, None, PAGE_SIZE)
