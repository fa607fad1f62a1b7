"""Who holds each program and where it is attached, as kstat's values: owners from
`kstat.sources.owners` (kstat's task-file iterator, or /proc) with where each runs
(`kstat.sources.workload_fields`); places from `kstat.sources.attachments` (bpf links, netlink
for tc and XDP attached the legacy way, in every network namespace, and BPF_PROG_QUERY on the
cgroup v2 tree for cgroup programs attached without a link), as bpftool finds them.

All of it is looked up only when programs kstat has not met before appear, off the event loop,
and cached per program, so a steady set of programs costs nothing after the first pass; netlink
is asked only when a new program could be a tc or XDP one, the cgroup tree only when one could
be a cgroup program.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import Factory, define, field

from kstat.core.model import (
    ProgramChanges,
    ProgramDetails,
    ProgramIdentity,
    ProgramOwner,
    ProgramStats,
    Workload,
)
from kstat.sources.attachments import (
    attachments_by_program,
    cgroup2_mount,
    cgroup_attachments,
    cgroup_paths,
    describe_link,
    flow_dissector_attachments,
)
from kstat.sources.owners import PROC, OwnerSource, ProcWalk
from kstat.sources.workload_fields import fields_of_process
from kstat.sources.workloads import workload_of

__all__ = [
    "Attributor",
    "cgroup2_root",
    "cgroup_attachments",
    "cgroup_paths",
    "describe_link",
    "flow_dissector_attachments",
]


def cgroup2_root(mountinfo: Path = Path("/proc/self/mountinfo")) -> Path:
    """Where the cgroup v2 tree is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
    host that still mounts cgroup v1 controllers (a "hybrid" one)."""
    return Path(cgroup2_mount(mountinfo))


@define
class Attributor:
    """Details for the programs of each pass, learnt once per program: owners, where they run
    (container, pod, unit: once per owner process) and attachments."""

    proc: Path = PROC
    _known: dict[ProgramIdentity, ProgramDetails] = field(factory=dict)
    # Where the host's filesystem is (`/`, or `/host` for kstat in a container): its kubelet
    # log tree names pods.
    host_root: Path = Path("/")
    # Where owners come from: `open_owner_source()` for kstat's task-file iterator (or the
    # incremental walk where it cannot load); by default every fd of every process in `proc`.
    owner_source: OwnerSource = field(
        default=Factory(lambda self: ProcWalk(self.proc, incremental=False), takes_self=True)
    )

    def _workload_of(self, pid: int) -> Workload:
        """Read when a new program is met, once per owner process of that scan: a process
        that moved to another cgroup since is seen as it is now."""
        return workload_of(fields_of_process(pid, os.fspath(self.proc), os.fspath(self.host_root)))

    def details_for(
        self, programs: Sequence[ProgramStats], changes: ProgramChanges
    ) -> Mapping[ProgramIdentity, ProgramDetails]:
        """Details of every program of a pass, given what the pass found new and gone. The
        mapping returned is never changed afterwards (snapshots share it), so a pass that found
        nothing new or gone costs nothing here."""
        known = self._known
        new = [program for program in changes.new if program.identity not in known]
        if not new and not changes.vanished and len(known) == len(programs):
            return known
        if new:
            owners = self.owner_source.owners(self._workload_of, wanted={program.id for program in new})
            attachments = self._attachments(new)
            learnt = {
                program.identity: ProgramDetails(
                    owners=owners.get(program.id, ()),
                    attachments=tuple(attachments.get(program.id, ())),
                )
                for program in new
            }
            known = {**known, **learnt}
        # A new mapping holding only what is loaded now: churn cannot grow it.
        self._known = {program.identity: known[program.identity] for program in programs}
        return self._known

    def details_of_new(self, programs: Sequence[ProgramStats]) -> dict[ProgramIdentity, ProgramDetails]:
        """Owners and attachments of programs met for the first time, looked up now (one owner
        walk and one attachment scan for all of them); the caller keeps them."""
        by_id = self.details_by_id(programs)
        return {program.identity: by_id[program.id] for program in programs}

    def details_by_id(self, programs: Sequence[ProgramStats]) -> dict[int, ProgramDetails]:
        """`details_of_new`, by program id (a single pass, where ids cannot be reused)."""
        if not programs:
            return {}
        owners = self.owner_source.owners(self._workload_of, wanted={program.id for program in programs})
        attachments = self._attachments(programs)
        # Programs with the same owners and attachments (an agent's thousands, one loader's
        # unattached ones) share one value: at 10,000 programs, a megabyte less kept. The owner
        # source shares one tuple among a process's programs: told apart by identity, not
        # hashed program by program.
        shared: dict[tuple[int, tuple[str, ...]], ProgramDetails] = {}
        found: dict[int, ProgramDetails] = {}
        no_owners: tuple[ProgramOwner, ...] = ()
        for program in programs:
            owned = owners.get(program.id, no_owners)
            attached = tuple(attachments.get(program.id, ()))
            key = (id(owned), attached)
            details = shared.get(key)
            if details is None:
                details = shared[key] = ProgramDetails(owners=owned, attachments=attached)
            found[program.id] = details
        return found

    def _attachments(self, new: Sequence[ProgramStats]) -> dict[int, list[str]]:
        """Where each program is attached, by program id: its links, and for new programs of
        the types they can place, netlink and the cgroup tree."""
        return attachments_by_program({program.type for program in new}, self.proc)
