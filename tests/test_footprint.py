"""What programs cost besides CPU: code size, verifier work, memory and maps, on real programs
that use real maps, checked against the maps' sizes and against bpftool."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from kstat.abi import bpf
from kstat.core.filters import ProgramFilter
from kstat.sinks.ndjson import NdjsonSink
from kstat.sources import descriptions
from kstat.sources.descriptions import fdinfo_memlock
from kstat.sources.stats_switch import runtime_stats_enabled
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import BpfMap, LoopbackTarget, SocketFilter
from tests.kstat_process import run_kstat
from tests.names import KT
from tests.windows import LoadFilter, WindowProbe, run_window, send

pytestmark = pytest.mark.kernel

BPFTOOL = "/usr/sbin/bpftool"
HASH_VALUE, HASH_ENTRIES = 64, 1000
ARRAY_VALUE, ARRAY_ENTRIES = 128, 256


def bpftool(*arguments: str) -> dict[str, Any]:
    if not Path(BPFTOOL).exists():
        pytest.skip("bpftool is not installed; run `make deps`")
    shown = subprocess.run([BPFTOOL, "--json", *arguments], capture_output=True, text=True, check=True)
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


@pytest.fixture
def programs_with_maps() -> Iterator[tuple[SocketFilter, SocketFilter, BpfMap, BpfMap]]:
    """Two programs sharing an array; the first also uses a hash map."""
    with ExitStack() as stack:
        hashed = stack.enter_context(BpfMap.hash(f"{KT}hash", HASH_VALUE, HASH_ENTRIES))
        array = stack.enter_context(BpfMap.array(f"{KT}array", ARRAY_VALUE, ARRAY_ENTRIES))
        both = stack.enter_context(SocketFilter(f"{KT}maps", 64, maps=[hashed, array]))
        shared = stack.enter_context(SocketFilter(f"{KT}share", maps=[array]))
        yield both, shared, hashed, array


def map_id(bpf_map: BpfMap) -> int:
    for line in Path(f"/proc/self/fdinfo/{bpf_map.fd}").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "map_id":
            return int(value)
    raise KeyError("map_id")


async def test_the_report_carries_each_programs_footprint_as_bpftool_sees_it(
    programs_with_maps: tuple[SocketFilter, SocketFilter, BpfMap, BpfMap],
) -> None:
    both, shares, hashed, array = programs_with_maps
    target = LoopbackTarget(both)

    async def body(probe: WindowProbe) -> None:
        await send(target, 10)

    try:
        # The two programs alone: the totals are then theirs (another tenant's programs,
        # loaded and gone before their footprint was read, would leave a total unknown).
        own = ProgramFilter(ids=(both.id, shares.id))
        report = (await run_window(body, program_filter=own)).report
    finally:
        target.close()
    line, other = report.program(f"{KT}maps"), report.program(f"{KT}share")
    shown = bpftool("prog", "show", "id", str(line.id))
    assert line.value("jited_size_bytes") == shown["bytes_jited"]
    assert line.value("xlated_size_bytes") == shown["bytes_xlated"]
    assert line.value("memlock_bytes") == shown["bytes_memlock"]
    assert line.map_ids is not None and sorted(line.map_ids) == sorted(shown["map_ids"])
    assert line.value("num_maps") == 2
    assert line.run_count == 10
    # A straight-line program: the verifier walked each instruction once (two lookups of six,
    # 64 of work, and a few more); bpftool of this version does not show the figure. Kernels
    # before 5.16 do not say it: none, rather than a zero.
    if "verified_insns" in bpf.filled_prog_info_fields(both.fd):
        assert 2 * 6 + 64 <= (line.value("verified_instructions") or 0) <= 2 * 6 + 64 + 8
    else:
        assert line.value("verified_instructions") is None
    hashed_memlock = bpftool("map", "show", "id", str(map_id(hashed)))["bytes_memlock"]
    array_memlock = bpftool("map", "show", "id", str(map_id(array)))["bytes_memlock"]
    # At least what the entries need; bpftool says the same as kstat.
    assert array_memlock >= ARRAY_VALUE * ARRAY_ENTRIES
    assert hashed_memlock >= (HASH_VALUE + 4) * HASH_ENTRIES
    assert line.value("maps_memlock_bytes") == hashed_memlock + array_memlock
    assert other.value("maps_memlock_bytes") == array_memlock
    # The shared array counts for each program, once in the total.
    ours = [line, other]
    assert report.total("maps_memlock_bytes") == hashed_memlock + array_memlock
    assert report.total("memlock_bytes") == sum(
        program.value("memlock_bytes") or 0 for program in report.programs
    )
    assert sum(program.value("num_maps") or 0 for program in ours) == 3


def test_kstat_list_shows_the_footprint_bpftool_shows(
    programs_with_maps: tuple[SocketFilter, SocketFilter, BpfMap, BpfMap],
) -> None:
    both = programs_with_maps[0]
    listed = json.loads(run_kstat(["list", "--json", "--id", str(both.id)]).stdout)
    assert [program["id"] for program in listed] == [both.id]
    shown = bpftool("prog", "show", "id", str(both.id))
    program = listed[0]
    assert program["jited_size_bytes"] == shown["bytes_jited"]
    assert program["xlated_size_bytes"] == shown["bytes_xlated"]
    assert program["memlock_bytes"] == shown["bytes_memlock"]
    assert sorted(program["map_ids"]) == sorted(shown["map_ids"])
    assert program["num_maps"] == 2 and program["maps_memlock_bytes"] > 0


def test_kstat_list_shows_the_run_count_and_run_time_bpftool_shows(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}lrun", 50)
    with runtime_stats_enabled():
        target.send(77)
    shown = bpftool("prog", "show", "id", str(target.program.id))
    header, *rows = run_kstat(["list", "--id", str(target.program.id)]).stdout.splitlines()
    assert header.split()[:5] == ["ID", "TYPE", "NAME", "RUN_CNT", "RUN_TIME_NS"]
    assert len(rows) == 1
    _, _, name, runs, run_time, owner, *_ = rows[0].split()
    assert (name, int(runs), int(run_time)) == (f"{KT}lrun", 77, shown["run_time_ns"])
    assert shown["run_cnt"] == 77 and shown["run_time_ns"] > 0
    assert owner == f"{os.getpid()}/{Path('/proc/self/comm').read_text().strip()}"  # pid/comm


def test_the_footprint_is_read_once_when_first_met(
    programs_with_maps: tuple[SocketFilter, SocketFilter, BpfMap, BpfMap], monkeypatch: pytest.MonkeyPatch
) -> None:
    both_id = programs_with_maps[0].id  # (asking a program its id reads it afresh: before counting)
    reader = ProgramReader()
    first = {program.id: program for program in reader.read_all()}
    reads: list[int] = []
    original = fdinfo_memlock

    def counting(fd: int) -> int | None:
        reads.append(fd)
        return original(fd)

    monkeypatch.setattr(descriptions, "fdinfo_memlock", counting)
    programs, changes = reader.read_pass()
    again = {program.id: program for program in programs}
    assert again[both_id].footprint is first[both_id].footprint
    # Only programs new to this pass (another process's, if any) are read: one fdinfo each,
    # and one per map of theirs.
    expected = sum(1 + len(program.footprint.maps) for program in changes.new if program.footprint)
    assert len(reads) == expected, [(program.name, program.footprint) for program in changes.new]


async def test_ndjson_says_a_programs_footprint_once(
    programs_with_maps: tuple[SocketFilter, SocketFilter, BpfMap, BpfMap], tmp_path: Path
) -> None:
    stream = tmp_path / "s.ndjson"
    late: list[SocketFilter] = []

    async def body(probe: WindowProbe) -> None:
        await probe.wait_for_snapshots(2)
        late.append(SocketFilter(f"{KT}late", maps=[programs_with_maps[3]]))
        await probe.wait_for_snapshots(probe.snapshots_seen + 3)

    try:
        await run_window(body, sinks=[NdjsonSink(stream)])
        late_id = late[0].id
    finally:
        late[0].close()
    lines = [json.loads(line) for line in stream.read_text().splitlines()]
    at_start = {line["name"]: line for line in lines if line["kind"] == "program"}
    assert at_start[f"{KT}maps"]["num_maps"] == 2
    assert at_start[f"{KT}maps"]["jited_size_bytes"] > 0
    mentions = [
        stats
        for line in lines
        if line["kind"] == "interval"
        for stats in line["program_stats"].values()
        if stats["id"] == late_id
    ]
    with_footprint = [stats for stats in mentions if "memlock_bytes" in stats]
    assert len(with_footprint) == 1 and with_footprint[0]["num_maps"] == 1
    # Programs there from the start never repeat it in interval lines.
    assert not any(
        "memlock_bytes" in stats
        for line in lines
        if line["kind"] == "interval"
        for stats in line["program_stats"].values()
        if stats["name"] == f"{KT}maps"
    )


def test_copies_of_one_program_share_one_footprint_and_others_keep_their_own(
    programs_with_maps: tuple[SocketFilter, SocketFilter, BpfMap, BpfMap],
) -> None:
    """A host's copies of one program (one per container or cgroup) describe equal footprints:
    they are kept once (issue 28's memory at 10,000 programs), and each still reads as its own."""
    both, shared, _, _ = programs_with_maps
    with SocketFilter(f"{KT}copy") as first_copy, SocketFilter(f"{KT}copy") as second_copy:
        ids = (first_copy.id, second_copy.id, both.id, shared.id)
        found = {program.id: program for program in ProgramReader().read_all()}
    first, second, with_maps, with_one_map = (found[program_id] for program_id in ids)
    assert first.footprint is not None and first.footprint == second.footprint
    assert first.footprint is second.footprint
    assert with_maps.footprint not in (first.footprint, with_one_map.footprint)
    assert with_maps.footprint is not None and len(with_maps.footprint.maps) == 2
