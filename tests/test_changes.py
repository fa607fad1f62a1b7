"""One specification of change: `kstat.core.changes`. Both readers' own bookkeeping (the syscall
reader's table, the iterator's record comparison) must give its answer for the same passes."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from kstat.abi.bpf import enable_run_time_stats
from kstat.core.changes import changes
from kstat.core.model import PassClocks, ProgramChanges, ProgramIdentity, ProgramStats, Reading
from kstat.engine.sampler import CounterTaker, PassReader
from kstat.sources.iterator import IteratorReader
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.builders import program
from tests.names import KT
from tests.windows import wait_until_freed

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


@pytest.mark.kernel
def test_both_readers_and_the_specification_give_one_answer() -> None:
    readers: dict[str, Callable[[], PassReader]] = {"syscalls": ProgramReader, "iterator": IteratorReader}
    opened = {name: make() for name, make in readers.items()}
    targets = [LoopbackTarget(SocketFilter(f"{KT}chg{index}", index)) for index in range(6)]
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
            wait_until_freed(gone_identity.id)
            newcomer = LoopbackTarget(SocketFilter(f"{KT}chgnew"))
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


class _ScriptedReader:
    """Passes given in advance; changes by the specification (as a reader's bookkeeping is held
    to it above); kstat's own program left out, as the iterator leaves its own."""

    def __init__(self, passes: list[list[ProgramStats]], own_id: int) -> None:
        self.passes, self.own_id, self.previous = list(passes), own_id, list[ProgramStats]()

    def read(self) -> Reading:
        listed = [found for found in self.passes.pop(0) if found.id != self.own_id]
        found, self.previous = changes(self.previous, listed), listed
        return Reading(listed, found, PassClocks(0, 1, 0, 0, 1))

    def close(self) -> None:
        pass

    @property
    def own_program_ids(self) -> frozenset[int]:
        return frozenset({self.own_id})


@pytest.mark.parametrize("in_id_order", [True, False])
def test_programs_ignored_are_in_no_reading_as_they_come_go_and_their_ids_return(in_id_order: bool) -> None:
    """kstat's other programs (ignored ids 7 and 9) are left out of every reading, found from
    the changes where the reading lists the programs in id order, and by a walk otherwise."""
    others = [program(pid, 0, 0) for pid in (1, 2, 3, 12)]
    seven, nine = program(7, 0, 0), program(9, 0, 0)
    seven_again = program(7, 0, 0, load_time_ns=5_000)  # a new program given id 7 again
    passes = [
        [*others, seven],
        [*others, seven, nine],
        [*others, nine],
        [*others, seven_again, nine, program(8, 0, 0)],
        [*others, seven_again, program(8, 5, 1)],
    ]
    if not in_id_order:
        passes = [list(reversed(found)) for found in passes]
    else:
        passes = [sorted(found, key=lambda found: found.id) for found in passes]
    taker = CounterTaker(_ScriptedReader(passes, own_id=8), ignored_ids=frozenset({7, 9}))
    for expected in passes:
        reading = taker.read()
        wanted = [found for found in expected if found.id not in {7, 8, 9}]
        assert [found.identity for found in reading.programs] == [found.identity for found in wanted]
        listed = [*reading.changes.new, *reading.changes.vanished, *(b for _, b in reading.changes.moved)]
        assert not {found.id for found in listed} & {7, 8, 9}
