"""The iterator reader's comparison of a walk with the one before (kstat.sources.iterator), on
walks made up here: parsing only, the kernel's walks are test_iterator's. Whatever came, went,
ran or stood still between two walks, the reading is what decoding every record afresh gives,
and its changes are exactly what differs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from kstat.core.model import PassClocks, ProgramStats
from kstat.sources import program_iterator
from kstat.sources.iterator import RECORD, IteratorReader

OWN_ID = 7


class _Iterator:
    """What the reader asks of its iterator, for walks given to it (`reading_of`)."""

    record_size = RECORD.size
    cpus: ClassVar[list[int]] = []
    program_fd = -1
    per_cpu_offsets_by = program_iterator.BY_MAP_LOOKUP
    counts_recursion_misses = True
    reads_by = program_iterator.BY_LOADS_AND_CAST


class _Own:
    id = OWN_ID


class _Syscalls:
    def read_fd(self, fd: int) -> _Own:
        return _Own()


# A program in a walk: (id, load time, run count); kstat's own iterator is OWN_ID.
Program = tuple[int, int, int]


def _walk(programs: Sequence[Program]) -> bytes:
    return b"".join(
        RECORD.pack(program_id, 1, b"tagtagta", load_time, b"name", runs, runs * 10, 0)
        for program_id, load_time, runs in sorted(programs)
    )


def _key(program: ProgramStats) -> Program:
    return program.id, program.load_time_ns, program.run_count


# A first walk of up to 300 programs among 400 ids, and each later one the walk before with a
# few changes (so that long runs of records stand still, as on a host): a program that ran
# (its run count +1..3), went, came (its id reused when it is new with load time 2).
_ids = st.integers(1, 400).filter(lambda program_id: program_id != OWN_ID)
_first = st.dictionaries(_ids, st.tuples(st.integers(1, 2), st.integers(0, 2)), max_size=300)
_change = st.tuples(_ids, st.sampled_from(["ran", "went", "came", "reused"]), st.integers(1, 3))


def _changed(
    walked: dict[int, tuple[int, int]], changes: list[tuple[int, str, int]]
) -> dict[int, tuple[int, int]]:
    after = dict(walked)
    for program_id, change, amount in changes:
        if change == "ran" and program_id in after:
            load, runs = after[program_id]
            after[program_id] = (load, runs + amount)
        elif change == "went":
            after.pop(program_id, None)
        elif change == "came" and program_id not in after:
            after[program_id] = (1, amount)
        elif change == "reused":
            after[program_id] = (2 + amount, 0)
    return after


@settings(max_examples=200, deadline=None)
@given(
    first=_first,
    later=st.lists(st.tuples(st.lists(_change, max_size=8), st.booleans()), max_size=5),
    runs_of_own=st.integers(0, 3),
)
def test_each_reading_is_every_record_decoded_afresh_and_its_changes_what_differs(
    first: dict[int, tuple[int, int]], later: list[tuple[list[tuple[int, str, int]], bool]], runs_of_own: int
) -> None:
    reader = IteratorReader(_Syscalls(), iterator=_Iterator())  # type: ignore[arg-type]
    clocks = PassClocks(0, 0, 0, 0, 0)
    before: dict[int, ProgramStats] = {}
    walked = first
    # Every reading's programs as given: a later pass shares an earlier one's list where no
    # program moved, and changes none of them.
    given: list[tuple[Sequence[ProgramStats], tuple[ProgramStats, ...]]] = []
    for index in range(len(later) + 1):
        if index:
            changes_made, own_ran = later[index - 1]
            walked = _changed(walked, changes_made)
            runs_of_own += own_ran  # while the stats are off, its counters stand still too
        programs = [(program_id, load, runs) for program_id, (load, runs) in walked.items()]
        reading = reader.reading_of(_walk([*programs, (OWN_ID, 1, runs_of_own)]), clocks)
        assert [_key(program) for program in reading.programs] == sorted(programs)
        given.append((reading.programs, tuple(reading.programs)))
        now = {program.id: program for program in reading.programs}
        changes = reading.changes
        same_program = {
            program_id
            for program_id in now.keys() & before.keys()
            if now[program_id].load_time_ns == before[program_id].load_time_ns
        }
        assert sorted(_key(program) for program in changes.new) == sorted(
            _key(now[program_id]) for program_id in now.keys() - same_program
        )
        assert sorted(_key(program) for program in changes.vanished) == sorted(
            _key(before[program_id]) for program_id in before.keys() - same_program
        )
        assert sorted((_key(old), _key(new)) for old, new in changes.moved) == sorted(
            (_key(before[program_id]), _key(now[program_id]))
            for program_id in same_program
            if now[program_id].run_count != before[program_id].run_count
        )
        # An idle program is the same value as before, not a copy.
        assert all(
            now[program_id] is before[program_id]
            for program_id in same_program
            if now[program_id].run_count == before[program_id].run_count
        )
        before = now
    assert all(tuple(programs) == as_given for programs, as_given in given)
