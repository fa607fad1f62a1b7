"""One specification of change: `kstat.core.changes`. Both readers' own bookkeeping (the syscall
reader's table, the iterator's record comparison) must give its answer for the same passes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from kstat.abi.bpf import enable_run_time_stats, program_fd
from kstat.core.changes import changes
from kstat.core.model import ProgramChanges, ProgramIdentity, ProgramStats
from kstat.engine.sampler import PassReader
from kstat.sources.iterator import IteratorReader
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.builders import program

Identities = frozenset[ProgramIdentity]


def _answer(found: ProgramChanges) -> tuple[Identities, frozenset[tuple[ProgramIdentity, int]], Identities]:
    """New, moved (with the run count it moved to) and vanished, as comparable sets."""
    return (
        frozenset(program.identity for program in found.new),
        frozenset((after.identity, after.run_count) for _, after in found.moved),
        frozenset(program.identity for program in found.vanished),
    )


def test_the_specification_by_hand() -> None:
    idle, busy, gone = program(1, 10, 1), program(2, 10, 1), program(3, 10, 1)
    reused_before = program(4, 10, 1, load_time_ns=1_000)
    reused_after = program(4, 0, 0, load_time_ns=2_000)  # the kernel gave id 4 to a new program
    moved_to = program(2, 30, 2)
    fresh = program(5, 0, 0)
    found = changes([idle, busy, gone, reused_before], [idle, moved_to, reused_after, fresh])
    assert _answer(found) == (
        frozenset({reused_after.identity, fresh.identity}),
        frozenset({(moved_to.identity, 2)}),
        frozenset({gone.identity, reused_before.identity}),
    )
    # A new reading with the same counters is idle, not moved.
    assert _answer(changes([busy], [program(2, 10, 1)])) == (frozenset(), frozenset(), frozenset())


def _wait_until_freed(program_id: int) -> None:
    """The kernel frees a closed program a little later (after an RCU grace period)."""
    deadline = time.monotonic() + 10
    while (fd := program_fd(program_id)) is not None:
        os.close(fd)
        assert time.monotonic() < deadline, f"program {program_id} still loaded"
        time.sleep(0.001)


@pytest.mark.kernel
def test_both_readers_and_the_specification_give_one_answer() -> None:
    readers: dict[str, Callable[[], PassReader]] = {"syscalls": ProgramReader, "iterator": IteratorReader}
    opened = {name: make() for name, make in readers.items()}
    targets = [LoopbackTarget(SocketFilter(f"kstat_t_chg{index}", index)) for index in range(6)]
    newcomer: LoopbackTarget | None = None
    try:
        stats = enable_run_time_stats()
        try:
            first = {name: reader.read() for name, reader in opened.items()}
            # Between the passes: two programs run, one is unloaded, one is loaded.
            targets[1].send(3)
            targets[4].send(5)
            gone = targets.pop(2)
            gone_identity = gone.program.stats().identity
            gone.close()
            gone.program.close()
            _wait_until_freed(gone_identity.id)
            newcomer = LoopbackTarget(SocketFilter("kstat_t_chgnew"))
            second = {name: reader.read() for name, reader in opened.items()}
        finally:
            os.close(stats)
        ours = {target.program.id for target in [*targets, newcomer]} | {gone_identity.id}

        def mine(found: ProgramChanges) -> ProgramChanges:
            def keep(stats: ProgramStats) -> bool:
                return stats.id in ours

            return ProgramChanges(
                new=[p for p in found.new if keep(p)],
                moved=[(b, a) for b, a in found.moved if keep(a)],
                vanished=[p for p in found.vanished if keep(p)],
            )

        answers = []
        for name in readers:
            before, after = first[name], second[name]
            # Each reader's bookkeeping is the specification over its own two passes, for every
            # program on the host (other tenants' included).
            assert _answer(after.changes) == _answer(changes(before.programs, after.programs)), name
            answers.append(_answer(mine(after.changes)))
        # And the two readers agree on the programs this test controls.
        assert answers[0] == answers[1]
        new, moved, vanished = answers[0]
        assert new == {newcomer.program.stats().identity}
        assert {run_count for _, run_count in moved} == {3, 5}
        assert vanished == {gone_identity}
    finally:
        for target in [*targets, *([newcomer] if newcomer else [])]:
            target.close()
            target.program.close()
        for reader in opened.values():
            reader.close()
