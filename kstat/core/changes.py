"""What changed between two passes over the programs: the specification.

A program is the same program in two passes while its identity (id, load time and tag) is the
same: the kernel may hand a freed id to a new program, and that program is new, while the one
that held the id before has vanished. Between two passes, a program is

- new: its identity is in the current pass and not in the previous one;
- moved: its identity is in both and its counters differ;
- vanished: its identity is in the previous pass and not in the current one;

and idle otherwise. The readers (syscalls, iterator) find the same answer faster, from what they
remember of their previous pass; a test feeds them the same passes and requires this answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from kstat.core.model import ProgramChanges, ProgramIdentity, ProgramStats


def changes(previous: Iterable[ProgramStats], current: Iterable[ProgramStats]) -> ProgramChanges:
    """New, moved and vanished programs from `previous` to `current`, each in the order of the
    pass it is taken from."""
    before: dict[ProgramIdentity, ProgramStats] = {program.identity: program for program in previous}
    new: list[ProgramStats] = []
    moved: list[tuple[ProgramStats, ProgramStats]] = []
    for program in current:
        earlier = before.pop(program.identity, None)
        if earlier is None:
            new.append(program)
        elif earlier is not program and earlier.counters != program.counters:
            moved.append((earlier, program))
    return ProgramChanges(new=new, moved=moved, vanished=list(before.values()))
