"""eBPF programs kstat loads itself, for the demo workload and the tests: socket filters on
loopback UDP sockets, so that the number of runs is exactly the number of packets sent."""

from __future__ import annotations

import errno
import functools
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from kstat.abi import assembler as asm
from kstat.abi import bpf
from kstat.abi.btf import KernelLayout
from kstat.abi.enums import SO_ATTACH_BPF, AttachType, MapType, ProgramType
from kstat.abi.structs import Instruction
from kstat.core.model import ProgramStats
from kstat.errors import KstatError
from kstat.sources.iterator import VMLINUX_BTF, LinkedIterator
from kstat.sources.syscalls import ProgramReader

# A socket filter is charged to its socket's option memory: one larger than this sysctl is
# refused with ENOMEM (20480 bytes by default on 6.1 and before, 131072 on later kernels).
OPTMEM_MAX: Final = Path("/proc/sys/net/core/optmem_max")

# enum xdp_action
_XDP_PASS = 2
# A packet per datagram; the payload's size does not matter to a filter that looks at nothing.
_PAYLOAD = b"kstat"


class BpfMap:
    """A map of kstat's own, for programs that use maps; freed when closed and no program
    holds it any more."""

    def __init__(self, name: str, map_type: int, key_size: int, value_size: int, max_entries: int) -> None:
        self.name = name
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        self.fd = bpf.create_map(map_type, key_size, value_size, max_entries, name)

    @classmethod
    def hash(cls, name: str, value_size: int, max_entries: int) -> BpfMap:
        """A hash map with 4-byte keys (preallocated: its memory is fixed from the start)."""
        return cls(name, MapType.HASH, 4, value_size, max_entries)

    @classmethod
    def array(cls, name: str, value_size: int, max_entries: int) -> BpfMap:
        return cls(name, MapType.ARRAY, 4, value_size, max_entries)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> BpfMap:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def socket_filter_instructions(work_instructions: int, maps: Sequence[BpfMap] = ()) -> list[Instruction]:
    """A filter that looks up key 0 in each of `maps`, does `work_instructions` ALU operations,
    then drops the packet (returns 0).

    Dropping keeps the receive queue empty however many packets arrive, and the extra ALU work
    gives programs of different, known weight.
    """
    instructions = [instruction for bpf_map in maps for instruction in asm.map_lookup(bpf_map.fd)]
    instructions.append(asm.mov_imm(asm.R2, 1))
    for step in range(work_instructions):
        instructions.append(asm.alu_imm("+" if step % 2 else "^", asm.R2, step))
    instructions += [asm.mov_imm(asm.R0, 0), asm.exit_()]
    return instructions


class SocketFilter:
    """A loaded socket-filter program; unloaded when closed (and no socket holds it any more)."""

    def __init__(
        self,
        name: str,
        work_instructions: int = 0,
        *,
        function_name: str | None = None,
        maps: Sequence[BpfMap] = (),
    ) -> None:
        """`name` is the kernel's (15 characters at most); `function_name` goes into the
        program's BTF as its full name, as a compiler puts a C function's name there; the
        program uses each of `maps` (and holds them while it is loaded)."""
        self.name = name
        instructions = socket_filter_instructions(work_instructions, maps)
        self.instruction_count = len(instructions)
        self.fd = bpf.load_program(ProgramType.SOCKET_FILTER, instructions, name, function_name=function_name)

    def stats(self) -> ProgramStats:
        """The program's counters right now, read through its own fd."""
        return ProgramReader().read_fd(self.fd)

    @property
    def id(self) -> int:
        return self.stats().id

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SocketFilter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class LoopbackTarget:
    """A UDP socket on 127.0.0.1 with a filter attached, and a socket to send it packets.

    Each datagram sent runs the filter exactly once, on this machine, before `send` returns
    control to the caller's next step (loopback delivers in the sender's softirq).
    """

    def __init__(self, program: SocketFilter) -> None:
        self.program = program
        self._receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._receiver.bind(("127.0.0.1", 0))
        try:
            self._receiver.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, program.fd)
        except OSError as error:
            self._receiver.close()
            if error.errno == errno.ENOMEM:
                raise _too_large_for_a_socket(program) from None
            raise
        self._sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sender.connect(self._receiver.getsockname())

    @property
    def port(self) -> int:
        """The receiving socket's UDP port on 127.0.0.1: where another process's packets run
        the filter too (on the CPU that process sends from)."""
        port: int = self._receiver.getsockname()[1]
        return port

    def send(self, count: int) -> None:
        send = self._sender.send
        for _ in range(count):
            send(_PAYLOAD)

    def close(self) -> None:
        self._sender.close()
        self._receiver.close()

    def __enter__(self) -> LoopbackTarget:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _too_large_for_a_socket(program: SocketFilter) -> KstatError:
    try:
        limit = f"net.core.optmem_max ({int(OPTMEM_MAX.read_text())} bytes here)"
    except (OSError, ValueError):
        limit = "net.core.optmem_max"
    return KstatError(
        f"{program.name}: a socket filter of {program.instruction_count} instructions (8 bytes each) "
        f"does not fit a socket's option memory, {limit}: make its work smaller "
        "(kstat demo --work-scale), or raise net.core.optmem_max"
    )


class XdpPass:
    """An XDP program that passes every packet, attached to an interface through a bpf_link."""

    def __init__(self, name: str, interface: str) -> None:
        self.program_fd = bpf.load_program(
            ProgramType.XDP,
            [asm.mov_imm(asm.R0, _XDP_PASS), asm.exit_()],
            name,
            expected_attach_type=AttachType.XDP,
        )
        try:
            self.link_fd = bpf.create_xdp_link(self.program_fd, socket.if_nametoindex(interface))
        except BaseException:
            os.close(self.program_fd)
            raise

    def stats(self) -> ProgramStats:
        return ProgramReader().read_fd(self.program_fd)

    def close(self) -> None:
        for fd in (self.link_fd, self.program_fd):
            if fd >= 0:
                os.close(fd)
        self.link_fd = self.program_fd = -1

    def __enter__(self) -> XdpPass:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@functools.cache
def _map_iterator_btf_id() -> int:
    """What an iterator over maps attaches to (the kernel's BTF is parsed once)."""
    return KernelLayout(VMLINUX_BTF.read_bytes()).function_id("bpf_iter_bpf_map")


class HeldByLink:
    """A program that only a link holds, its own fd closed once linked (as an agent that
    attaches by a link keeps just the link): an iterator over maps that writes nothing. The
    program is unloaded when the link is closed."""

    def __init__(self, name: str) -> None:
        linked = LinkedIterator([asm.mov_imm(asm.R0, 0), asm.exit_()], name, _map_iterator_btf_id())
        try:
            self.id = ProgramReader().read_fd(linked.program_fd).id
        except BaseException:
            linked.close()
            raise
        os.close(linked.program_fd)
        self.link_fd = linked.link_fd

    def close(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
