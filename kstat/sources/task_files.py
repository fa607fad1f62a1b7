"""Every BPF program and link held open by every process, in one read: a BPF iterator over task
files (`iter/task_file`, Linux 5.8+), assembled by kstat like its program iterator.

The kernel runs kstat's program once for each open fd of each process. For a file that is a BPF
program or a BPF link, it writes a 32-byte record: the id of the program (a link's: the program
the link holds) and the process (its tgid, the pid /proc names) as one 64-bit pair, the fd,
whether through a link, and the process's comm. Every other file costs the program a
comparison and nothing more.

How it is built on the running kernel:

- Every offset (the iterator's context, `file`, `bpf_link`, `bpf_prog`, `bpf_prog_aux`,
  `task_struct`) and the attach target's type id come from its BTF.
- A program's or a link's file is told by its `f_op`, compared with the kernel's
  `bpf_prog_fops` and `bpf_link_fops`. Their addresses are found without kallsyms (which hides
  addresses from a process without CAP_SYSLOG and, without CONFIG_KALLSYMS_ALL, lists no data
  symbol at all): the program starts in a discovery mode where it writes the `f_op` of every fd
  of kstat's own process. kstat holds one of each kind, the iterator's own program fd and link
  fd, so their `f_op` are the two addresses. They go into a one-element array map that the
  program reads on every call; from then on it writes owners. One program, loaded once: a
  discovery program of its own would be one more short-lived program in a window's report.
- The walk visits a thread only when its fd table is not its process's (the kernel skips the
  others), and reports it under the process's tgid and the process's comm, as /proc/PID/fd
  and /proc/PID/comm do.

`kstat list` reads owners through it on its lean path, so it imports nothing but kstat's bpf(2)
layer and the iterator's builder (no attrs, typing or pathlib at run time).
"""

from __future__ import annotations

import contextlib
import operator
import os
import struct
from collections import defaultdict
from itertools import repeat

from kstat._values import PlainValue
from kstat.abi import assembler as asm
from kstat.abi.assembler import Goto, Label
from kstat.abi.bpf import create_map, map_update_value
from kstat.abi.enums import MapType
from kstat.errors import FeatureMissing, KstatError
from kstat.sources import offsets_cache
from kstat.sources.program_iterator import VMLINUX_BTF, LinkedIterator, kernel_layout
from kstat.text import from_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from typing import Final

    from kstat.abi.structs import Instruction
    from kstat.sources.program_iterator import FilePath

ITERATOR_NAME: Final = "kstat_file_iter"
# (tgid << 32 | program id), fd, through a link (0 or 1), comm; in the kernel's byte order. The
# pair is one plain int to Python: owners are counted without a tuple per fd.
RECORD: Final = struct.Struct("=QII16s")
# In discovery mode (program id 0) the comm's place holds the file's f_op.
DISCOVERY_RECORD: Final = struct.Struct("=QIIQ8x")
# The program's settings (its map's one value): bpf_prog_fops, bpf_link_fops (0 and 0 for
# discovery), and kstat's own tgid (whose fds discovery writes).
SETTINGS: Final = struct.Struct("<QQI4x")
# TASK_COMM_LEN: the kernel has kept comm at 16 bytes, NUL included, since it had one.
COMM_SIZE: Final = 16
ITER_TASK_FILE_SINCE: Final = "5.8"
# A record's pair: the program id in its low 32 bits, the process under them.
_LOW_32: Final = (1 << 32) - 1
# Where a record's comm starts (after tgid, fd, program id and the link flag).
_COMM_OFFSET: Final = RECORD.size - COMM_SIZE

# The record on the program's stack; then the pair's halves, pointers read from the kernel, and
# the map's key.
_PAIR, _FD, _VIA_LINK, _COMM = -32, -24, -20, -16
_PROGRAM_ID, _TGID = -40, -36
_PROGRAM = -48
_AUX = -56
_KEY = -60


class TaskFileOffsets(PlainValue):
    """Where the task-file iterator finds what it reads, on this kernel."""

    __slots__ = (
        "attach_btf_id",
        "aux_id",
        "context_fd",
        "context_file",
        "context_meta",
        "context_task",
        "file_operations",
        "file_private_data",
        "link_program",
        "meta_seq",
        "program_aux",
        "task_comm",
        "task_group_leader",
        "task_tgid",
    )

    attach_btf_id: int
    context_meta: int
    context_task: int
    context_fd: int
    context_file: int
    meta_seq: int
    file_operations: int
    file_private_data: int
    link_program: int
    program_aux: int
    aux_id: int
    task_tgid: int
    task_group_leader: int
    task_comm: int

    def __init__(
        self,
        *,
        attach_btf_id: int,
        context_meta: int,
        context_task: int,
        context_fd: int,
        context_file: int,
        meta_seq: int,
        file_operations: int,
        file_private_data: int,
        link_program: int,
        program_aux: int,
        aux_id: int,
        task_tgid: int,
        task_group_leader: int,
        task_comm: int,
    ) -> None:
        self.attach_btf_id = attach_btf_id
        self.context_meta = context_meta
        self.context_task = context_task
        self.context_fd = context_fd
        self.context_file = context_file
        self.meta_seq = meta_seq
        self.file_operations = file_operations
        self.file_private_data = file_private_data
        self.link_program = link_program
        self.program_aux = program_aux
        self.aux_id = aux_id
        self.task_tgid = task_tgid
        self.task_group_leader = task_group_leader
        self.task_comm = task_comm

    @staticmethod
    def of_running_kernel(btf: FilePath = VMLINUX_BTF) -> TaskFileOffsets:
        """FeatureMissing when this kernel lacks one of them (before 5.8, or laid out
        otherwise) or has no BTF to read them from."""
        try:
            layout = kernel_layout(btf)
        except FileNotFoundError:
            raise FeatureMissing(f"BTF of the kernel ({btf}, CONFIG_DEBUG_INFO_BTF)", None) from None

        def offset(struct_name: str, member: str) -> int:
            return layout.offset(struct_name, member)  # FeatureMissing, naming the field

        if not layout.has_function("bpf_iter_task_file"):
            raise FeatureMissing("iter/task_file", ITER_TASK_FILE_SINCE)
        attach_btf_id = layout.function_id("bpf_iter_task_file", since=ITER_TASK_FILE_SINCE)
        return TaskFileOffsets(
            attach_btf_id=attach_btf_id,
            context_meta=offset("bpf_iter__task_file", "meta"),
            context_task=offset("bpf_iter__task_file", "task"),
            context_fd=offset("bpf_iter__task_file", "fd"),
            context_file=offset("bpf_iter__task_file", "file"),
            meta_seq=offset("bpf_iter_meta", "seq"),
            file_operations=offset("file", "f_op"),
            file_private_data=offset("file", "private_data"),
            link_program=offset("bpf_link", "prog"),
            program_aux=offset("bpf_prog", "aux"),
            aux_id=offset("bpf_prog_aux", "id"),
            task_tgid=offset("task_struct", "tgid"),
            task_group_leader=offset("task_struct", "group_leader"),
            task_comm=offset("task_struct", "comm"),
        )


def task_file_program(offsets: TaskFileOffsets, settings_map: int) -> list[Instruction]:
    """The iterator: for each fd, a record if it is a program or a link (discovery mode: for
    each fd of kstat's own process, a record with its f_op in place of the comm).

    r6 the context, r7 the file, r8 the task, r9 the settings (the map's value)."""
    end, discovery, program, held, emit, write = "end", "discovery", "program", "held", "emit", "write"
    items: list[Instruction | Label | Goto] = [
        asm.mov(asm.R6, asm.R1),
        *asm.load(8, asm.R7, asm.R6, offsets.context_file),
        asm.goto_if("==", asm.R7, 0, end),  # the walk's last call has no file
        *asm.load(8, asm.R8, asm.R6, offsets.context_task),
        asm.goto_if("==", asm.R8, 0, end),
        asm.store_imm(4, asm.FP, _KEY, 0),
        *asm.load_map(asm.R1, settings_map),
        *asm.stack_address(asm.R2, _KEY),
        asm.call(asm.MAP_LOOKUP_ELEM),
        asm.goto_if("==", asm.R0, 0, end),
        asm.mov(asm.R9, asm.R0),
        *[asm.store_imm(8, asm.FP, offset, 0) for offset in range(_PROGRAM_ID, 0, 8)],
        *asm.load(4, asm.R1, asm.R8, offsets.task_tgid),
        asm.store(4, asm.FP, _TGID, asm.R1),
        *asm.load(4, asm.R1, asm.R6, offsets.context_fd),
        asm.store(4, asm.FP, _FD, asm.R1),
        *asm.load(8, asm.R2, asm.R9, 0),  # bpf_prog_fops; 0 in discovery mode
        asm.goto_if("==", asm.R2, 0, discovery),
        # Owners: a program's file holds the program in private_data; a link's, the link.
        *asm.load(8, asm.R1, asm.R7, offsets.file_operations),
        asm.goto_if_register("==", asm.R1, asm.R2, program),
        *asm.load(8, asm.R2, asm.R9, 8),  # bpf_link_fops
        asm.goto_if_register("!=", asm.R1, asm.R2, end),
        asm.store_imm(4, asm.FP, _VIA_LINK, 1),
        *asm.load(8, asm.R3, asm.R7, offsets.file_private_data),
        *asm.probe_read(_PROGRAM, 8, asm.R3, offsets.link_program),
        Goto(held),
        Label(program),
        *asm.load(8, asm.R3, asm.R7, offsets.file_private_data),
        asm.store(8, asm.FP, _PROGRAM, asm.R3),
        Label(held),
        *asm.load(8, asm.R3, asm.FP, _PROGRAM),
        *asm.probe_read(_AUX, 8, asm.R3, offsets.program_aux),
        *asm.load(8, asm.R3, asm.FP, _AUX),
        *asm.probe_read(_PROGRAM_ID, 4, asm.R3, offsets.aux_id),
        *asm.load(4, asm.R1, asm.FP, _PROGRAM_ID),
        # No program (a struct_ops link holds a map), or one the read could not reach.
        asm.goto_if("==", asm.R1, 0, end),
        Goto(emit),
        Label(discovery),
        *asm.load(4, asm.R1, asm.R9, 16),  # kstat's own tgid
        *asm.load(4, asm.R2, asm.FP, _TGID),
        asm.goto_if_register("!=", asm.R1, asm.R2, end),
        *asm.probe_read(_COMM, 8, asm.R7, offsets.file_operations),
        Goto(write),
        Label(emit),
        *asm.load(8, asm.R3, asm.R8, offsets.task_group_leader),
        *asm.probe_read(_COMM, COMM_SIZE, asm.R3, offsets.task_comm),
        Label(write),
        *asm.load(4, asm.R1, asm.FP, _TGID),
        asm.alu_imm("<<", asm.R1, 32),
        *asm.load(4, asm.R2, asm.FP, _PROGRAM_ID),
        asm.alu("|", asm.R1, asm.R2),
        asm.store(8, asm.FP, _PAIR, asm.R1),
        *asm.load(8, asm.R1, asm.R6, offsets.context_meta),
        *asm.load(8, asm.R1, asm.R1, offsets.meta_seq),
        *asm.stack_address(asm.R2, _PAIR),
        asm.mov_imm(asm.R3, RECORD.size),
        asm.call(asm.SEQ_WRITE),
        Label(end),
        asm.mov_imm(asm.R0, 0),
        asm.exit_(),
    ]
    return asm.assemble(items)


class HeldFile(PlainValue):
    """An fd of a process that holds a program, directly or through a link."""

    __slots__ = ("comm", "fd", "pid", "program_id", "via_link")

    def __init__(self, pid: int, fd: int, program_id: int, via_link: bool, comm: bytes) -> None:
        self.pid = pid
        self.fd = fd
        self.program_id = program_id
        self.via_link = via_link
        # The process's comm as the kernel keeps it: up to 15 bytes, whatever they are.
        self.comm = comm


def command_text(comm: bytes) -> str:
    """A process's comm as text: any bytes the process chose, never an exception (kstat's one
    rule for host bytes, `kstat.text.from_host`)."""
    return from_host(comm)


class ProgramHolders:
    """Who holds each program, from one walk: by program id, the pids of the processes holding
    it, ascending (one tuple shared by every program a process holds alone: most of them), and
    each holder's command."""

    __slots__ = ("_data", "_first_words", "_record_of", "by_program", "pids")

    def __init__(self, data: bytes, wanted: Collection[int] | None) -> None:
        # A record's first u64 is its (program, process) pair: tgid << 32 | program id. Plain
        # ints, read out and split at C speed (`map` over a column), counted without a tuple
        # each (nor the collections of the garbage collector they would bring about): this
        # sees every bpf fd of the host.
        self._first_words = memoryview(data).cast("Q")[:: RECORD.size // 8].tolist()
        pairs = set(self._first_words)
        if wanted is not None:
            pairs = {pair for pair in pairs if pair & _LOW_32 in wanted}
        programs = list(map(operator.and_, pairs, repeat(_LOW_32)))
        processes = list(map(operator.rshift, pairs, repeat(32)))
        holder = dict(zip(programs, processes, strict=True))  # the only process of most
        self.pids = frozenset(processes)
        alone = {pid: (pid,) for pid in self.pids}
        self.by_program: dict[int, tuple[int, ...]] = dict(
            zip(holder, map(alone.__getitem__, holder.values()), strict=True)
        )
        if len(pairs) > len(holder):  # and programs held by several
            others: dict[int, list[int]] = defaultdict(list)
            for program_id, pid in zip(programs, processes, strict=True):
                if holder[program_id] != pid:
                    others[program_id].append(pid)
            for program_id, pids_too in others.items():
                self.by_program[program_id] = tuple(sorted({holder[program_id], *pids_too}))
        self._data = data
        self._record_of: dict[int, int] | None = None

    def command(self, pid: int) -> str:
        """The comm of a holder, as the walk read it."""
        if self._record_of is None:
            # A record of each process, for its comm (asked of a listing's owners alone).
            self._record_of = dict(
                zip(
                    map(operator.rshift, self._first_words, repeat(32)),
                    range(len(self._first_words)),
                    strict=True,
                )
            )
        start = self._record_of[pid] * RECORD.size + _COMM_OFFSET
        return command_text(self._data[start : start + COMM_SIZE].split(b"\0", 1)[0])


class OwnFilesNotSeen(KstatError):
    """The iterator's discovery walk did not meet kstat's own program and link fds, so it cannot
    tell bpf files from others (kstat in a pid namespace of its own walks tasks by pids that are
    not the kernel's)."""


class TaskFileIterator:
    """kstat's task-file iterator, loaded, linked and set up; each `read()` is one walk of every
    fd of every process, a record per program or link file."""

    def __init__(self, btf: FilePath = VMLINUX_BTF) -> None:
        offsets = offsets_cache.offsets(TaskFileOffsets, TaskFileOffsets.of_running_kernel, btf)
        self._settings = create_map(MapType.ARRAY, 4, SETTINGS.size, 1, "kstat_file_set")
        try:
            self._iterator = LinkedIterator(
                task_file_program(offsets, self._settings), ITERATOR_NAME, offsets.attach_btf_id
            )
            try:
                self.program_operations, self.link_operations = self._discover()
                map_update_value(
                    self._settings, 0, SETTINGS.pack(self.program_operations, self.link_operations, 0)
                )
            except BaseException:
                self._iterator.close()
                raise
        except BaseException:
            os.close(self._settings)
            raise

    def _discover(self) -> tuple[int, int]:
        """The kernel's bpf_prog_fops and bpf_link_fops: the f_op of kstat's own program and
        link fds, as one walk in discovery mode finds them."""
        own = os.getpid()
        map_update_value(self._settings, 0, SETTINGS.pack(0, 0, own))
        operations = {
            fd: file_operations
            for pair, fd, _, file_operations in DISCOVERY_RECORD.iter_unpack(self._whole_records())
            if pair >> 32 == own
        }
        program = operations.get(self._iterator.program_fd)
        link = operations.get(self._iterator.link_fd)
        if not program or not link or program == link:
            raise OwnFilesNotSeen(
                "the task-file iterator did not find kstat's own program and link fds "
                f"(pid {own}: in a pid namespace of its own?)"
            )
        return program, link

    @property
    def program_fd(self) -> int:
        return self._iterator.program_fd

    def _whole_records(self) -> bytes:
        data = self._iterator.read()
        return data[: len(data) - len(data) % RECORD.size]

    def read(self) -> bytes:
        """One walk's records (RECORD each), in the kernel's order: processes by pid, fds by
        number."""
        return self._whole_records()

    def holders(self, wanted: Collection[int] | None = None) -> ProgramHolders:
        """One walk: the processes holding each program (of `wanted`, or every one held)."""
        return ProgramHolders(self.read(), wanted)

    def held_files(self) -> Iterator[HeldFile]:
        """One walk, decoded."""
        for pair, fd, via_link, comm in RECORD.iter_unpack(self.read()):
            yield HeldFile(pair >> 32, fd, pair & 0xFFFFFFFF, bool(via_link), comm.split(b"\0", 1)[0])

    def close(self) -> None:
        self._iterator.close()
        with contextlib.suppress(OSError):
            os.close(self._settings)
