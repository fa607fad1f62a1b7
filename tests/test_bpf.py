"""The ABI layer against the real kernel, cross-checked with bpftool where it has an opinion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from kstat.abi import assembler as asm
from kstat.abi import bpf as _bpf
from kstat.abi.enums import ProgramType
from kstat.errors import ProgramLoadError
from kstat.sources.stats_switch import runtime_stats_enabled
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import SocketFilter
from tests.names import KT
from tests.stats_holders import stats_released
from tests.windows import LoadFilter

pytestmark = pytest.mark.kernel


def test_counts_every_run_exactly(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}exact")
    with runtime_stats_enabled():
        target.send(1_234)
        stats = target.program.stats()
    assert stats.run_count == 1_234
    assert stats.run_time_ns > 0
    assert stats.name == f"{KT}exact"
    assert stats.type == "SocketFilter"
    assert len(stats.tag) == 16


def test_stats_stop_moving_when_the_enable_fd_closes(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}off")
    with runtime_stats_enabled():
        target.send(10)
    counted = target.program.stats()
    with stats_released() as released:
        target.send(500)
        stats = target.program.stats()
    assert (counted.run_count, counted.run_time_ns > 0) == (10, True)
    if released.quiet:  # else others count the 500: the closed fd is what was checked
        assert stats == counted


def test_discovery_lists_loaded_programs_and_skips_unloaded_ones(load_filter: LoadFilter) -> None:
    kept = load_filter(f"{KT}kept").program
    unloaded = SocketFilter(f"{KT}gone")
    unloaded_id = unloaded.id
    unloaded.close()
    reader = ProgramReader()
    ids = list(reader.program_ids())
    assert kept.id in ids
    assert unloaded_id not in ids
    assert ids == sorted(ids)
    # An id that was listed and then unloaded reads as None, not as an error.
    assert reader.read_one(unloaded_id) is None
    by_id = {program.id: program for program in reader.read_all()}
    assert by_id[kept.id].name == f"{KT}kept"


def test_no_fd_is_left_open_by_a_pass(load_filter: LoadFilter) -> None:
    for index in range(20):
        load_filter(f"{KT}fd{index}")
    reader = ProgramReader()
    reader.read_all()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        reader.read_all()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool is not installed")
def test_agrees_with_bpftool(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}tool", 32)
    with runtime_stats_enabled():
        target.send(321)
        ours = target.program.stats()
        shown = subprocess.run(
            ["bpftool", "--json", "prog", "show", "id", str(ours.id)],
            check=True,
            capture_output=True,
            text=True,
        )
    theirs = json.loads(shown.stdout)
    assert theirs["id"] == ours.id
    assert theirs["name"] == ours.name
    assert theirs["tag"] == ours.tag
    assert theirs["type"] == "socket_filter"
    assert theirs["run_cnt"] == ours.run_count == 321
    assert theirs["run_time_ns"] == ours.run_time_ns


def test_a_rejected_program_carries_the_verifier_log() -> None:
    # r0 is never set before exit: the verifier must refuse it and say why.
    with pytest.raises(ProgramLoadError) as caught:
        _bpf.load_program(ProgramType.SOCKET_FILTER, [asm.exit_()], f"{KT}bad")
    assert "R0" in caught.value.verifier_log
