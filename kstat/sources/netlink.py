"""Where tc and XDP programs attached through netlink run: rtnetlink dumps, in every network
namespace kstat can see.

Programs attached the legacy way (`tc filter add ... bpf`, `ip link set ... xdp`, what agents do
on kernels without tcx) have no bpf_link, so only the network stack knows where they are: the
link dump's IFLA_XDP says each device's XDP program and mode, and a filter dump per device and
clsact direction says its tc programs (TCA_BPF_ID, with priority, handle and direct-action).

The two dumps are packed by hand, beside the bpf(2) layer, rather than through pyroute2: its
cls_bpf options (0.9.7) stop at TCA_BPF_FLAGS, so the one fact needed, the program's id
(TCA_BPF_ID), comes back undecoded. What is asked is two requests and a few attributes.

Other network namespaces are entered on a short-lived thread (setns(2) moves only the calling
thread), whose netlink socket then stays in that namespace: the caller's never moves.

`kstat list` asks it on a path that imports no attrs, typing or pathlib at run time.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

from kstat._logging import get_logger
from kstat._values import PlainValue
from kstat.text import from_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Final

    # A directory's path: a string too (pathlib is slow to import).
    DirectoryPath = str | os.PathLike[str]

log = get_logger(__name__)

_RTM_GETLINK: Final = 18
_RTM_GETTFILTER: Final = 46
_NLM_F_REQUEST: Final = 0x1
_NLM_F_DUMP: Final = 0x300
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
_NLMSG_HEADER: Final = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG: Final = struct.Struct("=BxHiII")  # family, type, index, flags, change
_TCMSG: Final = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
_NLA_HEADER: Final = struct.Struct("=HH")
_NLA_TYPE_MASK: Final = 0x3FFF

_IFLA_IFNAME: Final = 3
_IFLA_XDP: Final = 43
_IFLA_XDP_ATTACHED: Final = 2
_IFLA_XDP_PROG_ID: Final = 4
_IFLA_XDP_DRV_PROG_ID: Final = 5
_IFLA_XDP_SKB_PROG_ID: Final = 6
_IFLA_XDP_HW_PROG_ID: Final = 7
# The modes an XDP program runs in, by the attribute that names its program.
_XDP_MODES: Final = {
    _IFLA_XDP_DRV_PROG_ID: "native",
    _IFLA_XDP_SKB_PROG_ID: "generic",
    _IFLA_XDP_HW_PROG_ID: "offload",
}
# IFLA_XDP_ATTACHED when one program is attached: its mode.
_XDP_ATTACHED_MODES: Final = {1: "native", 2: "generic", 3: "offload"}

_TCA_KIND: Final = 1
_TCA_OPTIONS: Final = 2
_TCA_BPF_NAME: Final = 7
_TCA_BPF_FLAGS: Final = 8
_TCA_BPF_ID: Final = 11
_TCA_BPF_FLAG_ACT_DIRECT: Final = 1
# Where tc's BPF filters hang: clsact's ingress and egress, and the older ingress qdisc.
_TC_PARENTS: Final = {0xFFFFFFF2: "ingress", 0xFFFFFFF3: "egress", 0xFFFF0000: "ingress"}

_CLONE_NEWNET: Final = 0x40000000
_RECEIVE_SIZE: Final = 1 << 16


class NetAttachment(PlainValue):
    """One program attached to a network device through netlink."""

    __slots__ = ("device", "direct_action", "handle", "hook", "name", "namespace", "priority", "program_id")

    def __init__(
        self,
        program_id: int,
        hook: str,
        device: str,
        namespace: str | None = None,
        *,
        priority: int | None = None,
        handle: int | None = None,
        direct_action: bool | None = None,
        name: str | None = None,
    ) -> None:
        self.program_id = program_id
        # "xdp/generic", "tc/ingress", ...
        self.hook = hook
        self.device = device
        # The network namespace's name (`ip netns` name, else `netns:<inode>`); None for kstat's own.
        self.namespace = namespace
        # tc only: the filter's priority and handle, and whether it runs in direct-action mode.
        self.priority = priority
        self.handle = handle
        self.direct_action = direct_action
        # tc only: the name iproute2 gave the filter (`flow.o:[tc]`).
        self.name = name

    @property
    def text(self) -> str:
        """`tc/ingress:eth0@blue prio=1 handle=0x1 da`: hook, device, namespace, details."""
        place = self.device if self.namespace is None else f"{self.device}@{self.namespace}"
        details = []
        if self.priority is not None:
            details.append(f"prio={self.priority}")
        if self.handle is not None:
            details.append(f"handle={self.handle:#x}")
        if self.direct_action:
            details.append("da")
        return " ".join([f"{self.hook}:{place}", *details])


def _attributes(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + _NLA_HEADER.size <= end:
        length, kind = _NLA_HEADER.unpack_from(data, offset)
        if length < _NLA_HEADER.size:
            return
        yield kind & _NLA_TYPE_MASK, data[offset + _NLA_HEADER.size : offset + length]
        offset += (length + 3) & ~3


def _u32(value: bytes) -> int:
    return int(struct.unpack_from("=I", value)[0])


class _Rtnetlink:
    """A NETLINK_ROUTE socket in whichever network namespace the creating thread was in."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._socket.bind((0, 0))
        self._sequence = 0

    def close(self) -> None:
        self._socket.close()

    def dump(self, message_type: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        """Every message of a dump: (type, message bytes after the netlink header)."""
        self._sequence += 1
        header = _NLMSG_HEADER.pack(
            _NLMSG_HEADER.size + len(body), message_type, _NLM_F_REQUEST | _NLM_F_DUMP, self._sequence, 0
        )
        self._socket.send(header + body)
        while True:
            data = self._socket.recv(_RECEIVE_SIZE)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(data):
                length, kind, _, sequence, _ = _NLMSG_HEADER.unpack_from(data, offset)
                if length < _NLMSG_HEADER.size:
                    return
                payload = data[offset + _NLMSG_HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if sequence != self._sequence:
                    continue
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    error = -int(struct.unpack_from("=i", payload)[0])
                    if error:
                        raise OSError(error, os.strerror(error))
                    return
                yield kind, payload

    def devices(self) -> dict[int, tuple[str, list[tuple[str, int]]]]:
        """Every device by index: its name and its XDP programs as (mode, program id)."""
        found: dict[int, tuple[str, list[tuple[str, int]]]] = {}
        for _, message in self.dump(_RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            _, _, index, _, _ = _IFINFOMSG.unpack_from(message)
            name, xdp = f"ifindex {index}", []
            for kind, value in _attributes(message, _IFINFOMSG.size, len(message)):
                if kind == _IFLA_IFNAME:
                    name = from_host(value.split(b"\0", 1)[0])
                elif kind == _IFLA_XDP:
                    xdp = _xdp_programs(value)
            found[index] = (name, xdp)
        return found

    def tc_programs(self, index: int) -> Iterator[tuple[str, int, int, int, bool, str | None]]:
        """(direction, program id, priority, handle, direct-action, name) of each BPF filter."""
        for parent, direction in _TC_PARENTS.items():
            try:
                messages = list(
                    self.dump(_RTM_GETTFILTER, _TCMSG.pack(socket.AF_UNSPEC, index, 0, parent, 0))
                )
            except OSError:
                continue  # no such qdisc on the device (EINVAL), the usual case
            for _, message in messages:
                _, _, handle, _, info = _TCMSG.unpack_from(message)
                kind_name, program_id, flags, name = None, None, 0, None
                for kind, value in _attributes(message, _TCMSG.size, len(message)):
                    if kind == _TCA_KIND:
                        kind_name = from_host(value.split(b"\0", 1)[0])
                    elif kind == _TCA_OPTIONS:
                        for option, option_value in _attributes(value, 0, len(value)):
                            if option == _TCA_BPF_ID:
                                program_id = _u32(option_value)
                            elif option == _TCA_BPF_FLAGS:
                                flags = _u32(option_value)
                            elif option == _TCA_BPF_NAME:
                                name = from_host(option_value.split(b"\0", 1)[0])
                if kind_name == "bpf" and program_id is not None:
                    yield (
                        direction,
                        program_id,
                        info >> 16,
                        handle,
                        bool(flags & _TCA_BPF_FLAG_ACT_DIRECT),
                        name,
                    )


def _xdp_programs(nested: bytes) -> list[tuple[str, int]]:
    attached_mode, program_id, by_mode = 0, None, []
    for kind, value in _attributes(nested, 0, len(nested)):
        if kind == _IFLA_XDP_ATTACHED:
            attached_mode = value[0]
        elif kind == _IFLA_XDP_PROG_ID:
            program_id = _u32(value)
        elif kind in _XDP_MODES:
            by_mode.append((_XDP_MODES[kind], _u32(value)))
    if by_mode:
        return by_mode
    if program_id is not None and attached_mode in _XDP_ATTACHED_MODES:
        return [(_XDP_ATTACHED_MODES[attached_mode], program_id)]
    return []


def _attachments_here(namespace: str | None) -> list[NetAttachment]:
    """What the calling thread's network namespace has attached."""
    netlink = _Rtnetlink()
    try:
        found: list[NetAttachment] = []
        for index, (device, xdp) in netlink.devices().items():
            found += [NetAttachment(program_id, f"xdp/{mode}", device, namespace) for mode, program_id in xdp]
            for direction, program_id, priority, handle, direct, name in netlink.tc_programs(index):
                found.append(
                    NetAttachment(
                        program_id,
                        f"tc/{direction}",
                        device,
                        namespace,
                        priority=priority,
                        handle=handle,
                        direct_action=direct,
                        name=name,
                    )
                )
        return found
    finally:
        netlink.close()


def _namespace_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _namespace_names(run_netns: DirectoryPath = "/run/netns") -> dict[int, str]:
    """`ip netns add NAME` namespaces by inode."""
    try:
        names = os.listdir(run_netns)
    except OSError:
        return {}
    directory = os.fspath(run_netns)
    return {
        inode: name
        for name in names
        if (inode := _namespace_inode(os.path.join(directory, name))) is not None
    }


def other_namespaces(proc: DirectoryPath = "/proc") -> dict[int, str]:
    """Every network namespace other than kstat's own that a process or `ip netns` holds: its
    inode -> a path that opens it."""
    own = _namespace_inode(f"{proc}/self/ns/net")
    found: dict[int, str] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        path = f"{proc}/{entry}/ns/net"
        inode = _namespace_inode(path)
        if inode is not None and inode != own and inode not in found:
            found[inode] = path
    for inode, name in _namespace_names().items():
        if inode != own and inode not in found:
            found[inode] = f"/run/netns/{name}"
    return found


_libc = ctypes.CDLL(None, use_errno=True)


def _in_namespace(path: str, namespace: str) -> list[NetAttachment]:
    """The attachments of another network namespace, read on a thread of its own that enters it
    (and then ends: a thread that moved never runs anything else)."""
    result: list[NetAttachment] = []
    failure: list[OSError] = []

    def enter_and_read() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, os.strerror(error))
            finally:
                os.close(fd)
            result.extend(_attachments_here(namespace))
        except OSError as error:
            failure.append(error)

    thread = threading.Thread(target=enter_and_read, name="kstat-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        log.debug("cannot read a network namespace", path=path, error=str(failure[0]))
    return result


def net_attachments(proc: DirectoryPath = "/proc") -> list[NetAttachment]:
    """Every tc and XDP program attached through netlink, in kstat's network namespace and in
    every other one a process holds or `ip netns` names."""
    found = _attachments_here(None)
    names = _namespace_names()
    for inode, path in other_namespaces(proc).items():
        found += _in_namespace(path, from_host(names.get(inode, f"netns:{inode}")))
    return found
