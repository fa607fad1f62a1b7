"""kstat list's one read (kstat.sources.listing) against the syscall reader, on real programs:
one plain and run, two using real maps (one shared), one with a BTF name, one only a link
holds; the same listing by syscalls where the iterator cannot be built; and kstat list's lean
path (no filter: kstat.commands._lean_list) against the command's, byte for byte."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest

from kstat.commands.list import Listing, list_programs
from kstat.core.filters import ProgramFilter
from kstat.core.model import ProgramStats
from kstat.errors import FeatureMissing
from kstat.sources import listing
from kstat.sources.stats_switch import runtime_stats_enabled
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import BpfMap, HeldByLink, LoopbackTarget, SocketFilter
from tests.kstat_process import run_kstat
from tests.listings import command_path, lean_path, listing_columns, reported, written
from tests.names import KT

pytestmark = pytest.mark.kernel

FULL_NAME = "kstat_listing_program_with_a_long_btf_name"
REPO = Path(__file__).parents[1]
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


@pytest.fixture
def linked(programs: list[SocketFilter]) -> Iterator[int]:
    """The id of a program that only a link holds (its attachment: `iter`), beside `programs`."""
    held = HeldByLink(f"{KT}llink")
    try:
        yield held.id
    finally:
        held.close()


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


def test_the_lean_path_writes_what_the_command_writes(
    programs: list[SocketFilter], linked: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = {program.id for program in programs} | {linked}
    lean, boot_to_wall_ns = lean_path(ids)
    assert lean.ids == sorted(ids)
    # The command by kstat's iterator, and by syscalls where it cannot be built: the same bytes.
    assert written(lean) == written(listing_columns(command_path(ids, boot_to_wall_ns)))

    def lacking() -> listing.ListingIterator:
        raise FeatureMissing("iter/bpf_prog", "5.8")

    monkeypatch.setattr(listing, "ListingIterator", lacking)
    by_syscalls = command_path(ids, boot_to_wall_ns)
    assert written(lean) == written(listing_columns(by_syscalls))
    # And what kstat list wrote before its lean path: orjson's dump of each program's object.
    compact, pretty, _ = written(lean)
    assert compact.encode() == orjson.dumps(reported(by_syscalls), option=orjson.OPT_APPEND_NEWLINE)
    option = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    assert pretty.encode() == orjson.dumps(reported(by_syscalls), option=option)
    objects = {entry["id"]: entry for entry in json.loads(compact)}
    assert objects[linked]["attachments"] == ["iter"]
    assert objects[programs[1].id]["map_ids"] and objects[programs[3].id]["name"] == FULL_NAME


def _by_id(text: str) -> dict[int, dict[str, Any]]:
    """A listing's objects by id, but when each was loaded (two processes read the offset from
    the boot-time clock to the wall clock a moment apart) and with this process alone among the
    owners (`_ours_only`)."""
    return {
        entry["id"]: {
            **entry,
            "loaded_at": entry["loaded_at"][:19],
            "owners": [owner for owner in entry["owners"] if owner["pid"] == os.getpid()],
        }
        for entry in json.loads(text)
    }


def _ours_only(row: str) -> list[str]:
    """A table row's words, the OWNERS cell with this process alone: any process of the host
    that holds the test's program fds for a moment is rightly listed by the one listing that
    met it (seen about one run in six), and is not what the two listings are compared for."""
    words = []
    for word in row.split():
        owner = re.fullmatch(r"(\d+)/\S*?(,?)", word)
        if owner is not None and int(owner[1]) != os.getpid():
            continue
        words.append(word.rstrip(",") if owner is not None else word)
    return words


def test_kstat_list_lists_on_its_lean_path_what_its_filters_select(
    programs: list[SocketFilter], linked: int
) -> None:
    ids = [str(program.id) for program in programs] + [str(linked)]
    selecting = [word for program_id in ids for word in ("--id", program_id)]
    for form in (["--json"], ["--pretty"]):
        lean = run_kstat(["list", *form])
        full = run_kstat(["list", *form, *selecting])
        assert (lean.returncode, lean.stderr, full.returncode) == (0, "", 0), lean.stderr + full.stderr
        listed = _by_id(lean.stdout)
        assert {int(program_id): listed[int(program_id)] for program_id in ids} == _by_id(full.stdout)
    lean_rows = {row.split()[0]: _ours_only(row) for row in run_kstat(["list"]).stdout.splitlines()[1:]}
    full_rows = [_ours_only(row) for row in run_kstat(["list", *selecting]).stdout.splitlines()[1:]]
    assert [lean_rows[row[0]] for row in full_rows] == full_rows


# What the lean path must not import: kstat's model and everything above it, the CLI's parser,
# the logging pipeline, the live view, trio, orjson (and the dataclasses, inspect and ast it
# imports), typing and pathlib.
NOT_FOR_THE_LEAN_PATH = (
    "attr",
    "attrs",
    "cattrs",
    "typing",
    "pathlib",
    "argparse",
    "structlog",
    "asyncio",
    "rich",
    "trio",
    "orjson",
    "dataclasses",
    "kstat.core.model",
    "kstat.core.counters",
    "kstat.core.catalogue",
    "kstat.sources.syscalls",
    "kstat.sources.iterator",
    "kstat.sources.listing",
    "kstat.sources.owners",
    "kstat.commands._options",
    "kstat.commands.list",
    "kstat.cli",
)
LEAN_COMMAND_LINE = (
    "import sys\n"
    "sys.path.insert(0, sys.argv.pop(1))\n"
    "sys.argv = ['kstat', 'list', *sys.argv[1:]]\n"
    "from kstat._entry import main\n"
    "main()\n"
)


@pytest.mark.parametrize("form", [["--json"], ["--pretty"], []])
def test_kstat_list_without_a_filter_imports_only_what_it_reads_and_writes_with(
    programs: list[SocketFilter], form: list[str]
) -> None:
    """As the console script runs it, without site (-S): this checkout's own editable-install
    finder imports pathlib at every start, which an installed kstat does not."""
    shown = subprocess.run(
        [
            sys.executable,
            "-S",
            "-X",
            "importtime",
            "-c",
            LEAN_COMMAND_LINE,
            str(Path(__file__).parents[1]),
            *form,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in shown.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "kstat.commands._listed" in imported
    heavy = sorted(
        name
        for name in imported
        if any(name == banned or name.startswith(f"{banned}.") for banned in NOT_FOR_THE_LEAN_PATH)
    )
    assert heavy == []
    assert str(programs[0].id) in shown.stdout


FALLING_BACK = (
    "import sys\n"
    "from kstat.errors import FeatureMissing\n"
    "from kstat.sources import listing_iterator\n"
    "def lacking():\n"
    "    raise FeatureMissing('iter/bpf_prog', '5.8')\n"
    "listing_iterator.ListingIterator = lacking\n"
    "sys.argv = ['kstat', 'list', *sys.argv[1:]]\n"
    "from kstat._entry import main\n"
    "main()\n"
)


def test_without_the_iterator_kstat_list_is_the_commands_by_syscalls(
    programs: list[SocketFilter], linked: int
) -> None:
    ids = {program.id for program in programs} | {linked}
    by_syscalls = subprocess.run(
        [sys.executable, "-c", FALLING_BACK, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (by_syscalls.returncode, by_syscalls.stderr) == (0, "")
    lean = run_kstat(["list", "--json"])
    listed = _by_id(lean.stdout)
    assert {program_id: listed[program_id] for program_id in ids} == {
        program_id: entry for program_id, entry in _by_id(by_syscalls.stdout).items() if program_id in ids
    }
