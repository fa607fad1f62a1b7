"""Where each program is attached, as people say it (`xdp/native:eth0`, `tcx/ingress:eth0`,
`cgroup/egress:/sys/fs/cgroup/app`): its bpf links; for programs of the types they can place,
netlink (tc and XDP attached the legacy way, in every network namespace) and BPF_PROG_QUERY on
the cgroup v2 tree (cgroup programs attached without a link) and on network namespaces (flow
dissectors), as bpftool finds them.

Plain strings by program id, with nothing imported but kstat's bpf(2) layer (no attrs, typing
or pathlib at run time; netlink's module and sockets only where a program could be a tc or XDP
one): `kstat list` writes them as they are, `kstat.sources.attribution` keeps them per program.
"""

from __future__ import annotations

import os
from collections import defaultdict

from kstat._logging import get_logger
from kstat.abi.bpf import query_programs
from kstat.abi.enums import CGROUP_ATTACH_TYPES, AttachType, attach_type_name
from kstat.abi.links import read_links
from kstat.errors import BpfError
from kstat.text import from_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable
    from typing import Final

    from kstat.abi.links import LinkInfo
    from kstat.sources.netlink import NetAttachment

    # A directory's path: a string too (pathlib is slow to import).
    DirectoryPath = str | os.PathLike[str]

log = get_logger(__name__)

CGROUP2_ROOT: Final = "/sys/fs/cgroup"
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
    # Imported here: only a link on a device needs sockets (a start's milliseconds otherwise).
    import socket  # noqa: PLC0415

    try:
        return from_host(socket.if_indextoname(ifindex))
    except OSError:
        return f"ifindex {ifindex}"  # another network namespace, or gone


def cgroup2_mount(mountinfo: DirectoryPath = "/proc/self/mountinfo") -> str:
    """Where the cgroup v2 tree is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
    host that still mounts cgroup v1 controllers (a "hybrid" one)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as file:
            lines = file.read().splitlines()
    except OSError:
        return CGROUP2_ROOT
    for line in lines:
        # ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS
        fields, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            return fields.split(" ")[4]
    return CGROUP2_ROOT


def cgroup_paths(wanted: Iterable[int], root: DirectoryPath | None = None) -> dict[int, str]:
    """cgroup v2 ids to paths (as names, for a report): a cgroup's id is its directory's inode
    number. Walked by directory fd, so that a tree deeper than PATH_MAX is walked whole."""
    root = cgroup2_mount() if root is None else root
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


def cgroup_attachments(root: DirectoryPath | None = None) -> list[tuple[int, str]]:
    """(program id, `cgroup/egress:/sys/fs/cgroup/app`) for every program attached directly to
    a cgroup of the v2 tree, link or not, as `bpftool cgroup tree` lists them."""
    root = cgroup2_mount() if root is None else root
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


def flow_dissector_attachments(proc: DirectoryPath = "/proc") -> list[tuple[int, str]]:
    """(program id, `netns/flow_dissector:INODE`) for flow dissectors attached to a network
    namespace, the same place a netns link's description gives."""
    from kstat.sources.netlink import other_namespaces  # noqa: PLC0415 - only for flow dissectors

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


def attachments_by_program(types: Collection[str], proc: DirectoryPath = "/proc") -> dict[int, list[str]]:
    """Where each program is attached, by program id: every link's program, and where programs
    of `types` (their type names) could be attached otherwise, netlink's and the cgroup tree's.
    Places are a nicety: a host that refuses netlink or a query still gets the rest."""
    try:
        links = read_links()
    except BpfError as error:
        log.debug("cannot list bpf links", error=str(error))
        links = []
    paths = cgroup_paths(link.cgroup_id for link in links if link.cgroup_id is not None)
    attachments: dict[int, list[str]] = defaultdict(list)
    for link in links:
        attachments[link.program_id].append(describe_link(link, paths))
    try:
        if not _NETLINK_TYPES.isdisjoint(types):
            # Imported here: netlink's module (sockets, threads) only where it can place one.
            from kstat.sources.netlink import net_attachments  # noqa: PLC0415

            _add_net_attachments(attachments, net_attachments(proc))
        found: list[tuple[int, str]] = []
        if not _CGROUP_TYPES.isdisjoint(types):
            found += cgroup_attachments()
        if "FlowDissector" in types:
            found += flow_dissector_attachments(proc)
    except (OSError, BpfError) as error:
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
