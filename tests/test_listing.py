"""kstat list's one read (kstat.sources.listing) against the syscall reader, on real programs:
one plain and run, two using real maps (one shared), one with a BTF name; and the same listing
by syscalls where the iterator cannot be built."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from kstat.commands.list import Listing, list_programs
from kstat.core.filters import ProgramFilter
from kstat.core.model import ProgramStats
from kstat.errors import FeatureMissing
from kstat.sources import listing
from kstat.sources.stats_switch import runtime_stats_enabled
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import BpfMap, LoopbackTarget, SocketFilter
from tests.names import KT

pytestmark = pytest.mark.kernel

FULL_NAME = "kstat_listing_program_with_a_long_btf_name"
SENT = 7


@pytest.fixture
def programs() -> Iterator[list[SocketFilter]]:
    with ExitStack() as stack:
        hashed = stack.enter_context(BpfMap.hash(f"{KT}lhash", 16, 10))
        array = stack.enter_context(BpfMap.array(f"{KT}larray", 32, 4))
        plain = stack.enter_context(SocketFilter(f"{KT}lplain", 5))
        loaded = [
            plain,
            stack.enter_context(SocketFilter(f"{KT}lmaps", 3, maps=[hashed, array])),
            stack.enter_context(SocketFilter(f"{KT}lshare", maps=[array])),
            stack.enter_context(SocketFilter(f"{KT}lbtf", function_name=FULL_NAME)),
        ]
        target = stack.enter_context(LoopbackTarget(plain))
        with runtime_stats_enabled():
            target.send(SENT)
        yield loaded


def described(program: ProgramStats) -> tuple[Any, ...]:
    return (
        program.id,
        program.type,
        program.tag,
        program.load_time_ns,
        program.kernel_name,
        program.name,
        program.footprint,
        program.counters,
    )


def ours(programs: list[ProgramStats], loaded: list[SocketFilter]) -> list[tuple[Any, ...]]:
    ids = {program.id for program in loaded}
    return [described(program) for program in programs if program.id in ids]


def test_one_iterator_read_lists_what_the_syscalls_describe(programs: list[SocketFilter]) -> None:
    listed, method = listing.read_listing()
    assert method == "iterator"
    by_syscalls = ProgramReader().read_all()
    assert ours(listed, programs) == ours(by_syscalls, programs)
    first = ours(listed, programs)
    assert [entry[5] for entry in first] == [f"{KT}lplain", f"{KT}lmaps", f"{KT}lshare", FULL_NAME]
    assert first[0][7].run_count == SENT
    assert [len(entry[6].maps) for entry in first] == [0, 2, 1, 0]
    # Its own iterator is not listed.
    assert not [program for program in listed if program.kernel_name == listing.LISTING_NAME]


def listed(listing: Listing) -> list[tuple[Any, ...]]:
    return [(*described(program), program.details) for program in listing.programs]


def test_without_the_iterator_kstat_list_reads_the_same_by_syscalls(
    programs: list[SocketFilter], monkeypatch: pytest.MonkeyPatch
) -> None:
    select = ProgramFilter(ids=tuple(program.id for program in programs))
    by_iterator = list_programs(select)

    def lacking() -> listing.ListingIterator:
        raise FeatureMissing("iter/bpf_prog", "5.8")

    monkeypatch.setattr(listing, "ListingIterator", lacking)
    assert listing.read_listing()[1] == "syscalls"
    by_syscalls = list_programs(select)
    assert [program.id for program in by_iterator.programs] == [program.id for program in programs]
    assert [len(program.details.owners) for program in by_iterator.programs] == [1, 1, 1, 1]
    assert listed(by_iterator) == listed(by_syscalls)


# What kstat list must not import: the logging pipeline (structlog, and asyncio under it), the
# live view's rich, the report's converter, trio, the collecting sampler and the report arithmetic.
NOT_FOR_LIST = ("structlog", "asyncio", "rich", "cattrs", "trio", "kstat.engine.sampler", "kstat.core.report")
SAYS_WHAT_WAS_IMPORTED = (
    "import atexit, sys\n"
    f"heavy = {NOT_FOR_LIST!r}\n"
    "atexit.register(lambda: sys.stderr.write(' '.join(m for m in heavy if m in sys.modules)))\n"
    "from kstat._entry import main\n"
    "sys.argv = ['kstat', 'list', '--json', *sys.argv[1:]]\n"
    "main()\n"
)


def test_kstat_list_imports_only_what_it_prints_with(programs: list[SocketFilter]) -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            SAYS_WHAT_WAS_IMPORTED,
            *[word for program in programs for word in ("--id", str(program.id))],
        ],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [entry["kernel_name"] for entry in json.loads(shown.stdout)] == [
        program.name for program in programs
    ]
    assert shown.stderr == ""
