"""Who holds each program and where it is attached: owners from `kstat.sources.owners` (kstat's
task-file iterator, or /proc); for places, bpf links, netlink (tc and XDP attached the legacy
way, in every network namespace) and BPF_PROG_QUERY on the cgroup v2 tree (cgroup programs
attached without a link), as bpftool finds them.

All of it is looked up only when programs kstat has not met before appear, off the event loop,
and cached per program, so a steady set of programs costs nothing after the first pass; netlink
is asked only when a new program could be a tc or XDP one, the cgroup tree only when one could
be a cgroup program.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from attrs import Factory, define, field

from kstat._logging import get_logger
from kstat.abi.bpf import query_programs
from kstat.abi.enums import CGROUP_ATTACH_TYPES, AttachType, attach_type_name
from kstat.abi.links import LinkInfo, read_links
from kstat.core.model import (
    NO_WORKLOAD,
    ProgramChanges,
    ProgramDetails,
    ProgramIdentity,
    ProgramOwner,
    ProgramStats,
    Workload,
)
from kstat.errors import BpfError
from kstat.sources.netlink import NetAttachment, net_attachments, other_namespaces
from kstat.sources.owners import PROC, OwnerSource, ProcWalk
from kstat.sources.workloads import KubeletLogs, workload_of_cgroup_file
from kstat.text import from_host

log = get_logger(__name__)

CGROUP2_ROOT: Final = Path("/sys/fs/cgroup")
# Program types netlink can place, and those the cgroup tree can.
_NETLINK_TYPES: Final = frozenset({"SchedCLS", "SchedACT", "XDP"})
_CGROUP_TYPES: Final = frozenset(
    {
        "CGroupSKB",
        "CGroupSock",
        "SockOps",
        "CGroupDevice",
        "CGroupSockAddr",
        "CGroupSysctl",
        "CGroupSockopt",
        "LSM",
    }
)


def describe_link(link: LinkInfo, cgroup_paths: dict[int, str]) -> str:
    """Where a link attaches its program, as people say it: `xdp:eth0`, `tcx/ingress:eth0`, ..."""
    if link.ifindex is not None:
        place = _interface_name(link.ifindex)
        if link.attach_type is None:
            return f"{link.type}:{place}"
        return f"{link.type}/{attach_type_name(link.attach_type)}:{place}"
    if link.cgroup_id is not None:
        place = cgroup_paths.get(link.cgroup_id, f"cgroup id {link.cgroup_id}")
        return f"cgroup/{attach_type_name(link.attach_type or 0)}:{place}"
    if link.netns_inode is not None:
        return f"netns/{attach_type_name(link.attach_type or 0)}:{link.netns_inode}"
    return link.type


def _interface_name(ifindex: int) -> str:
    try:
        return from_host(socket.if_indextoname(ifindex))
    except OSError:
        return f"ifindex {ifindex}"  # another network namespace, or gone


def cgroup2_root(mountinfo: Path = Path("/proc/self/mountinfo")) -> Path:
    """Where the cgroup v2 tree is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
    host that still mounts cgroup v1 controllers (a "hybrid" one)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return CGROUP2_ROOT
    for line in lines:
        # ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS
        fields, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            return Path(fields.split(" ")[4])
    return CGROUP2_ROOT


def cgroup_paths(wanted: Iterable[int], root: Path | None = None) -> dict[int, str]:
    """cgroup v2 ids to paths (as names, for a report): a cgroup's id is its directory's inode
    number. Walked by directory fd, so that a tree deeper than PATH_MAX is walked whole."""
    root = cgroup2_root() if root is None else root
    remaining = set(wanted)
    found: dict[int, str] = {}
    if not remaining:
        return found
    for directory, _, _, directory_fd in os.fwalk(root):
        try:
            inode = os.fstat(directory_fd).st_ino
        except OSError:
            continue
        if inode in remaining:
            found[inode] = from_host(directory)
            remaining.discard(inode)
            if not remaining:
                break
    return found


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
        try:
            with open(f"{self.proc}/{pid}/cgroup", "rb") as cgroup:
                found = workload_of_cgroup_file(from_host(cgroup.read()))
        except OSError:
            return NO_WORKLOAD
        if found.container_id is not None or found.pod_uid is not None:
            found = KubeletLogs(self.host_root).complete(found)
        return found

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
        try:
            links = read_links()
        except BpfError as error:
            log.debug("cannot list bpf links", error=str(error))
            links = []
        paths = cgroup_paths(link.cgroup_id for link in links if link.cgroup_id is not None)
        attachments: dict[int, list[str]] = defaultdict(list)
        for link in links:
            attachments[link.program_id].append(describe_link(link, paths))
        types = {program.type for program in new}
        try:
            if types & _NETLINK_TYPES:
                _add_net_attachments(attachments, net_attachments(self.proc))
            found = []
            if types & _CGROUP_TYPES:
                found += cgroup_attachments()
            if "FlowDissector" in types:
                found += flow_dissector_attachments(self.proc)
        except (OSError, BpfError) as error:
            # Places are a nicety: a host that refuses netlink or a query still gets its counts.
            log.debug("cannot look up attachments", error=str(error))
            return attachments
        for program_id, place in found:
            if place not in attachments[program_id]:
                attachments[program_id].append(place)
        return attachments


def _add_net_attachments(attachments: dict[int, list[str]], found: Iterable[NetAttachment]) -> None:
    """netlink's places, in place of a link's `xdp:eth0` for the same program and device (the
    link does not say the mode; netlink does)."""
    for attachment in found:
        places = attachments[attachment.program_id]
        if attachment.hook.startswith("xdp/") and attachment.namespace is None:
            bare = f"xdp:{attachment.device}"
            if bare in places:
                places.remove(bare)
        if attachment.text not in places:
            places.append(attachment.text)


def cgroup_attachments(root: Path | None = None) -> list[tuple[int, str]]:
    """(program id, `cgroup/egress:/sys/fs/cgroup/app`) for every program attached directly to
    a cgroup of the v2 tree, link or not, as `bpftool cgroup tree` lists them."""
    root = cgroup2_root() if root is None else root
    found: list[tuple[int, str]] = []
    # By directory fd: no path is opened again (a tenant renaming its delegated cgroups cannot
    # swap one for another), and a tree deeper than PATH_MAX is walked whole.
    for directory, _, _, directory_fd in os.fwalk(root):
        place = from_host(directory)
        for attach_type, name in CGROUP_ATTACH_TYPES.items():
            try:
                ids = query_programs(directory_fd, attach_type)
            except BpfError:
                continue
            found += [(program_id, f"cgroup/{name}:{place}") for program_id in ids]
    return found


def flow_dissector_attachments(proc: Path = PROC) -> list[tuple[int, str]]:
    """(program id, `netns/flow_dissector:INODE`) for flow dissectors attached to a network
    namespace, the same place a netns link's description gives."""
    paths = {os.stat(f"{proc}/self/ns/net").st_ino: f"{proc}/self/ns/net", **other_namespaces(proc)}
    found: list[tuple[int, str]] = []
    for inode, path in paths.items():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            found += [
                (program_id, f"netns/{attach_type_name(AttachType.FLOW_DISSECTOR)}:{inode}")
                for program_id in query_programs(fd, AttachType.FLOW_DISSECTOR)
            ]
        except BpfError:
            continue
        finally:
            os.close(fd)
    return found
