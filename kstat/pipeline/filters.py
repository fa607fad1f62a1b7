"""Selecting programs: by id, name, type, owner pid or command. Every criterion given must
match; several values of one criterion are alternatives."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from attrs import field, frozen

from kstat.errors import UsageError
from kstat.kernel.bpf import program_type_names
from kstat.pipeline.model import ProgramDetails, ProgramStats


def _normalise_type(name: str) -> str:
    # "SchedCLS", "schedcls" and the kernel's "sched_cls" all name BPF_PROG_TYPE_SCHED_CLS.
    return name.replace("_", "").lower()


_KNOWN_TYPES: Final = {_normalise_type(name): name for name in program_type_names()}


def program_type(text: str) -> str:
    """A program type as kstat names it, from any usual spelling; UsageError if unknown."""
    try:
        return _KNOWN_TYPES[_normalise_type(text)]
    except KeyError:
        known = ", ".join(sorted(_KNOWN_TYPES.values()))
        raise UsageError(f"unknown program type {text!r}; known types: {known}") from None


def _program_types(spellings: Iterable[str]) -> tuple[str, ...]:
    return tuple(program_type(spelling) for spelling in spellings)


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise UsageError(f"bad name pattern {pattern!r}: {error}") from None


@frozen
class ProgramFilter:
    """What a window reports on; the empty filter selects every program."""

    ids: tuple[int, ...] = ()
    # A regular expression searched in the full name and in the kernel's 15-character name.
    name: str | None = None
    types: tuple[str, ...] = field(default=(), converter=_program_types)
    pids: tuple[int, ...] = ()
    commands: tuple[str, ...] = ()
    _name_pattern: re.Pattern[str] | None = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_name_pattern", _compile(self.name))

    @property
    def is_empty(self) -> bool:
        return not (self.ids or self.name is not None or self.types or self.pids or self.commands)

    def describe(self) -> dict[str, Any] | None:
        """The criteria given, for the report to say what it covers (None: everything)."""
        if self.is_empty:
            return None
        criteria: dict[str, Any] = {
            "ids": list(self.ids),
            "name": self.name,
            "types": list(self.types),
            "pids": list(self.pids),
            "commands": list(self.commands),
        }
        return {key: value for key, value in criteria.items() if value not in (None, [])}

    def selects(self, program: ProgramStats, details: ProgramDetails) -> bool:
        if self.ids and program.id not in self.ids:
            return False
        pattern = self._name_pattern
        if pattern is not None and not (pattern.search(program.name) or pattern.search(program.kernel_name)):
            return False
        if self.types and program.type not in self.types:
            return False
        if self.pids and not any(owner.pid in self.pids for owner in details.owners):
            return False
        return not self.commands or any(owner.command in self.commands for owner in details.owners)
