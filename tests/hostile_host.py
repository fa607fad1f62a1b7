"""A host a hostile tenant has shaped, made for real: processes holding programs whose comm is
not UTF-8 and holds escape sequences, cgroups named with such bytes, a kubelet log tree whose
file names carry them, a cgroup path of 10 kB with a program attached, and a network device
named with them. Everything is undone at the end."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from kstat.abi import assembler as asm
from kstat.abi import bpf
from kstat.abi.enums import AttachType, ProgramType
from kstat.sources.attribution import cgroup2_root
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import XdpPass
from tests.holders import HolderProcess, program_holder
from tests.names import KT, TOKEN, host_name

# A comm the kernel cut in the middle of `é`, with a title change (OSC 0 ... BEL) after it.
TITLE_COMM = b"kpr-\xc3\x1b]0;pw\x07"
# A comm that clears the screen, with a byte that is never UTF-8 and Markdown's worst.
CLEAR_COMM = b"\x1b[2J\xff|<!--"
# A systemd unit's cgroup (its name is what kstat reports as the unit).
UNIT_CGROUP = f"kt{TOKEN}-".encode() + b"\xff\x1b]0;unit\x07.service"
# The kubelet's log file name parts: pod, namespace, container.
POD = b"web-\xc3\x1b[2J"
NAMESPACE = b"team\x1b]0;ns\x07"
CONTAINER = b"c|`x`<!--\n**"
# A network device (15 bytes at most).
DEVICE = b"kt" + TOKEN.encode() + b"\x1b[2J\xff"
# One level of the deep cgroup: 244 bytes; 42 of them make a path of 10 kB.
DEEP_LEVEL = b"\xff\x1b[2J" + b"d" * 240
DEEP_LEVELS = 42
DEEP_TOP = host_name("deep").encode()
# The veth pair's other end.
PEER = host_name("hpeer").encode()


class HostileHost:
    def __init__(self, root: Path) -> None:
        self.cgroups = cgroup2_root()
        self.host_root = root / "host"
        self.container_id = uuid.uuid4().hex * 2
        self.pod_uid = str(uuid.uuid4())
        self._stack = contextlib.ExitStack()
        self._made: list[bytes] = []
        self.holders: list[HolderProcess] = []

    # --- cgroups ---------------------------------------------------------------------------

    def _cgroup(self, relative: bytes) -> bytes:
        path = os.fsencode(self.cgroups)
        for part in relative.split(b"/"):
            path += b"/" + part
            if not os.path.exists(path):
                os.mkdir(path)
                self._made.append(path)
        return path

    def _place(self, pid: int, relative: bytes) -> None:
        with open(self._cgroup(relative) + b"/cgroup.procs", "w") as procs:
            procs.write(str(pid))

    def _deep_cgroup(self) -> int:
        """A cgroup 10 kB below DEEP_TOP (longer than PATH_MAX: made level by level, by
        directory fd), and an fd of it."""
        top = self._cgroup(DEEP_TOP)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        self._deep_fds = [fd]
        for _ in range(DEEP_LEVELS):
            os.mkdir(DEEP_LEVEL, dir_fd=fd)
            fd = os.open(DEEP_LEVEL, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            self._deep_fds.append(fd)
        return fd

    def _remove_deep_cgroup(self) -> None:
        fds = getattr(self, "_deep_fds", [])
        for parent in reversed(fds[:-1]):
            with contextlib.suppress(OSError):
                os.rmdir(DEEP_LEVEL, dir_fd=parent)
        for fd in fds:
            os.close(fd)

    @property
    def deep_path(self) -> str:
        """The deep cgroup's path as kstat must report it (each byte not UTF-8 as U+FFFD)."""
        level = "\ufffd\x1b[2J" + "d" * 240
        return f"{self.cgroups}/{os.fsdecode(DEEP_TOP)}/" + "/".join([level] * DEEP_LEVELS)

    # --- the whole host --------------------------------------------------------------------

    def __enter__(self) -> HostileHost:
        try:
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self) -> None:
        # A service whose comm retitles the terminal.
        titled = program_holder(f"{KT}hunit", comm=TITLE_COMM)
        self.holders.append(titled)
        self._place(titled.pid, UNIT_CGROUP)
        # A container of a pod (cgroupfs driver), its names in the kubelet's log file name.
        podded = program_holder(f"{KT}hpod", comm=CLEAR_COMM)
        self.holders.append(podded)
        self._place(podded.pid, f"kubepods/besteffort/pod{self.pod_uid}/{self.container_id}".encode())
        logs = os.fsencode(self.host_root / "var" / "log" / "containers")
        os.makedirs(logs)
        name = POD + b"_" + NAMESPACE + b"_" + CONTAINER + b"-" + self.container_id.encode() + b".log"
        with open(logs + b"/" + name, "wb"):
            pass
        # A program attached to a cgroup 10 kB deep, by a link (held by this process).
        program_fd = bpf.load_program(
            ProgramType.CGROUP_SKB,
            [asm.mov_imm(asm.R0, 1), asm.exit_()],
            f"{KT}hdeep",
            expected_attach_type=AttachType.CGROUP_INET_EGRESS,
        )
        self._stack.callback(os.close, program_fd)
        link_fd = bpf.create_link(program_fd, self._deep_cgroup(), AttachType.CGROUP_INET_EGRESS)
        self._stack.callback(os.close, link_fd)
        self.deep_program_id = ProgramReader().read_fd(program_fd).id
        # XDP on a device whose name clears the screen.
        subprocess.run(
            [b"ip", b"link", b"add", b"name", DEVICE, b"type", b"veth", b"peer", b"name", PEER],
            check=True,
        )
        self._stack.callback(subprocess.run, [b"ip", b"link", b"del", PEER], check=False)
        xdp = self._stack.enter_context(XdpPass(f"{KT}hxdp", os.fsdecode(DEVICE)))
        self.xdp_program_id = xdp.stats().id
        self.device_index = socket.if_nametoindex(os.fsdecode(DEVICE))

    def __exit__(self, *_: object) -> None:
        for holder in self.holders:
            holder.close()
        self._stack.close()
        self._remove_deep_cgroup()
        for path in reversed(self._made):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def hostile_host(root: Path) -> Iterator[HostileHost]:
    with HostileHost(root) as host:
        yield host
