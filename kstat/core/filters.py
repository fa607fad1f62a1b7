"""Selecting programs: by id, name, type, owner (pid, command, container, pod, unit) or where
they are attached. Every criterion given must match; several values of one are alternatives."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from attrs import field, frozen

from kstat.abi.enums import program_type_names
from kstat.core.attachments import Attachment
from kstat.core.model import ProgramDetails, ProgramOwner, ProgramStats, Workload
from kstat.errors import UsageError


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
    # Where an owner runs: a container (its id, or a prefix of it, or its name), a pod (its name
    # or uid), a Kubernetes namespace, a systemd unit (`nginx.service`, or just `nginx`).
    containers: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    # Where it is attached: a device, `device@namespace` or a cgroup path (`--attached`), and
    # how (`--attach-type`: `xdp`, `tc/ingress`, `cgroup/egress`, ...).
    attached: tuple[str, ...] = ()
    attach_types: tuple[str, ...] = ()
    # The programs of a process tree: held by this process or one of its descendants when the
    # window first meets them, or loaded by one of them during the window (`kstat run`'s
    # command, the pytest fixture's test process). Judged by the window itself, which follows
    # the tree (kstat.sources.process_tree); `selects` alone cannot tell.
    process_tree: int | None = None
    _name_pattern: re.Pattern[str] | None = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_name_pattern", _compile(self.name))

    @property
    def is_empty(self) -> bool:
        return not (
            self.ids
            or self.name is not None
            or self.types
            or self.pids
            or self.commands
            or self.containers
            or self.pods
            or self.namespaces
            or self.units
            or self.attached
            or self.attach_types
            or self.process_tree is not None
        )

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
            "containers": list(self.containers),
            "pods": list(self.pods),
            "namespaces": list(self.namespaces),
            "units": list(self.units),
            "attached": list(self.attached),
            "attach_types": list(self.attach_types),
            "process_tree": self.process_tree,
        }
        return {key: value for key, value in criteria.items() if value not in (None, [])}

    def selects(self, program: ProgramStats, details: ProgramDetails) -> bool:
        """Every criterion but `process_tree`, which needs the window's records of the tree."""
        return (
            self._selects_program(program)
            and self._selects_owners(details.owners)
            and self._selects_attachments(details.attachments)
        )

    def _selects_attachments(self, attachments: tuple[str, ...]) -> bool:
        if not (self.attached or self.attach_types):
            return True
        parsed = [Attachment.parse(text) for text in attachments]
        return all(
            (
                not self.attached or any(place.is_at(wanted) for place in parsed for wanted in self.attached),
                not self.attach_types
                or any(place.is_of(wanted) for place in parsed for wanted in self.attach_types),
            )
        )

    def _selects_program(self, program: ProgramStats) -> bool:
        if self.ids and program.id not in self.ids:
            return False
        pattern = self._name_pattern
        if pattern is not None and not (pattern.search(program.name) or pattern.search(program.kernel_name)):
            return False
        return not self.types or program.type in self.types

    def _selects_owners(self, owners: tuple[ProgramOwner, ...]) -> bool:
        workloads = [owner.workload for owner in owners]
        return all(
            (
                not self.pids or any(owner.pid in self.pids for owner in owners),
                not self.commands or any(owner.command in self.commands for owner in owners),
                not self.containers
                or any(_in_container(workload, self.containers) for workload in workloads),
                not self.pods
                or any({workload.pod, workload.pod_uid} & set(self.pods) for workload in workloads),
                not self.namespaces or any(workload.namespace in self.namespaces for workload in workloads),
                not self.units or any(_in_unit(workload, self.units) for workload in workloads),
            )
        )


def _in_unit(workload: Workload, wanted: tuple[str, ...]) -> bool:
    unit = workload.unit
    return unit is not None and (unit in wanted or unit.removesuffix(".service") in wanted)


def _in_container(workload: Workload, wanted: tuple[str, ...]) -> bool:
    container_id = workload.container_id
    return any(
        (container_id is not None and container_id.startswith(choice)) or workload.container_name == choice
        for choice in wanted
    )
