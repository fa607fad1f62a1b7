"""bpf_link(s) through bpf(2): every link on the system and where its program is attached (kept
apart from `kstat.abi.bpf`, which the launch's baseline read imports). No attrs: `kstat list`
reads the links on a path that imports none."""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from kstat._values import PlainValue
from kstat.abi.bpf import bpf, fd_by_id, walk_ids
from kstat.abi.enums import Command, link_type_name
from kstat.abi.structs import GetIdAttr, InfoByFdAttr, LinkInfoStruct
from kstat.errors import BpfError


class LinkInfo(PlainValue):
    """What a bpf_link says about where its program is attached."""

    __slots__ = ("attach_type", "cgroup_id", "id", "ifindex", "netns_inode", "program_id", "type")

    def __init__(
        self,
        *,
        id: int,
        type: str,
        program_id: int,
        attach_type: int | None = None,
        ifindex: int | None = None,
        cgroup_id: int | None = None,
        netns_inode: int | None = None,
    ) -> None:
        self.id = id
        self.type = type
        self.program_id = program_id
        self.attach_type = attach_type
        self.ifindex = ifindex
        self.cgroup_id = cgroup_id
        self.netns_inode = netns_inode


def read_links() -> list[LinkInfo]:
    """Every bpf_link on the system (Linux 5.8+; none on older kernels)."""
    id_attr = GetIdAttr()
    try:
        link_ids = list(walk_ids(Command.LINK_GET_NEXT_ID, id_attr))
    except BpfError as error:
        if error.errno == errno.EINVAL:  # no links before 5.8
            return []
        raise
    links: list[LinkInfo] = []
    info = LinkInfoStruct()
    attr = InfoByFdAttr(info=ctypes.addressof(info))
    for link_id in link_ids:
        fd = fd_by_id(Command.LINK_GET_FD_BY_ID, link_id, id_attr)
        if fd is None:
            continue
        try:
            ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info))
            attr.bpf_fd = fd
            attr.info_len = ctypes.sizeof(info)
            bpf(Command.OBJ_GET_INFO_BY_FD, attr)
        finally:
            os.close(fd)
        links.append(_link_from_info(info))
    return links


def _link_from_info(info: LinkInfoStruct) -> LinkInfo:
    union = bytes(info.union)
    kind = link_type_name(info.type)
    first_u32, second_u32 = struct.unpack_from("<II", union)
    # Where it is attached, as each type of link says it.
    place: dict[str, int] = {}
    if kind == "xdp":
        place = {"ifindex": first_u32}
    elif kind in ("tcx", "netkit"):
        place = {"ifindex": first_u32, "attach_type": second_u32}
    elif kind == "cgroup":
        cgroup_id, attach_type = struct.unpack_from("<QI", union)
        place = {"cgroup_id": cgroup_id, "attach_type": attach_type}
    elif kind == "netns":
        place = {"netns_inode": first_u32, "attach_type": second_u32}
    return LinkInfo(id=info.id, type=kind, program_id=info.prog_id, **place)
