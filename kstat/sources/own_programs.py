"""kstat's own programs (its program iterator, the per-CPU probe that comes before it, its
task-file iterator for owners) as another kstat instance on the host loads them: recognised by
their kernel name and their tag, so that every kstat leaves them out of its report's programs
and totals and counts them apart (the report's `kstat_programs`).

A name alone proves nothing: any tenant can call a program `kstat_prog_iter` to hide it. The
tag is the kernel's hash of the program's instructions, and a kstat of the same version on the
same kernel assembles exactly the same instructions (every offset comes from the kernel's BTF,
every per-CPU offset is the same for every process of one boot, and map fds, which differ, are
left out of the hash by the kernel). So each kstat works out the tags its own programs would
have here, without loading them where it can, and a program must match a name and its tag.
A kstat of another version builds other instructions: its programs are ordinary programs to
this one.

The tag is the first 8 bytes of SHA-256 over the instructions since Linux 6.18, SHA-1 before;
both are accepted (a collision of either with a same-named program is not a practical worry).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from kstat._logging import get_logger
from kstat.abi.structs import Instruction
from kstat.core.model import ProgramStats
from kstat.errors import FeatureMissing, KstatError
from kstat.sources import offsets_cache
from kstat.sources.iterator import (
    ITERATOR_NAME,
    PER_CPU_METHODS,
    PROBE_NAME,
    VMLINUX_BTF,
    KernelOffsets,
    iterator_program,
    possible_cpus,
    probe_program,
    running_kernel_offsets,
)
from kstat.sources.task_files import ITERATOR_NAME as TASK_FILE_ITERATOR_NAME
from kstat.sources.task_files import TaskFileOffsets, task_file_program

log = get_logger(__name__)

# BPF_LD | BPF_IMM | BPF_DW, and the pseudo sources whose immediate is a map fd.
_LD_IMM64: Final = 0x18
_PSEUDO_MAP_FD: Final = 1
_PSEUDO_MAP_VALUE: Final = 2


def program_tags(instructions: Sequence[Instruction]) -> frozenset[str]:
    """The tags the kernel gives these instructions (SHA-256 since 6.18, SHA-1 before), with
    map fds zeroed as the kernel zeroes them before hashing."""
    raw = bytearray()
    after_map_load = False
    for instruction in instructions:
        encoded = bytearray(bytes(instruction))
        code, registers = encoded[0], encoded[1]
        if not after_map_load and code == _LD_IMM64 and registers >> 4 in (_PSEUDO_MAP_FD, _PSEUDO_MAP_VALUE):
            after_map_load = True
            encoded[4:8] = bytes(4)
        elif after_map_load and code == 0 and registers == 0 and encoded[2:4] == b"\0\0":
            after_map_load = False
            encoded[4:8] = bytes(4)
        else:
            after_map_load = False
        raw += encoded
    sha256, sha1 = _digests()
    return frozenset({sha256(bytes(raw)).digest()[:8].hex(), sha1(bytes(raw)).digest()[:8].hex()})


def _digests() -> tuple[Callable[[bytes], Any], Callable[[bytes], Any]]:
    """SHA-256 and SHA-1 by CPython's own modules where it has them: hashlib loads OpenSSL's
    libcrypto (3.7 MB of every window's memory) for two digests of a few hundred bytes."""
    found = []
    for modules, name in ((("_sha256", "_sha2"), "sha256"), (("_sha1",), "sha1")):
        for module in (*modules, "hashlib"):
            with contextlib.suppress(ImportError):
                found.append(getattr(importlib.import_module(module), name))
                break
    sha256, sha1 = found
    return sha256, sha1


def _probe_instructions() -> list[list[Instruction]]:
    """The probe, as each way of finding per-CPU offsets builds it (another kstat took the first
    its kernel allowed, which need not be this one's: it may have been refused something)."""
    offsets = offsets_cache.offsets(KernelOffsets, KernelOffsets.of_running_kernel, VMLINUX_BTF)
    built = []
    for method in PER_CPU_METHODS:
        with contextlib.suppress(FeatureMissing):
            # Map fds are not hashed: any fd gives the same tag.
            built.append(probe_program(method, offsets, 0, 0, possible_cpus()))
    return built


def _iterator_instructions() -> list[list[Instruction]]:
    # The per-CPU offsets are found by running the probe once per process (a program of an
    # instant, which other kstats recognise as this one's), the iterator's own if it has one.
    offsets, cpu_offsets, _ = running_kernel_offsets()
    # With per-CPU counters (`--per-cpu`) or without, reading by plain loads or (where its
    # kernel refused those) by probe reads: each is another kstat's iterator. Map fds are not
    # hashed: the scratch map's fd may be any.
    return [
        iterator_program(offsets, cpu_offsets, per_cpu=per_cpu, scratch_map=scratch_map)
        for per_cpu in (False, True)
        for scratch_map in (0, None)
    ]


def _task_file_instructions() -> list[list[Instruction]]:
    # Its settings (the f_op addresses, kstat's pid) are in its map, not its code.
    return [
        task_file_program(
            offsets_cache.offsets(TaskFileOffsets, TaskFileOffsets.of_running_kernel, VMLINUX_BTF), 0
        )
    ]


# Each of kstat's programs by kernel name, and how it may be assembled here.
_BUILDERS: Final[dict[str, Callable[[], list[list[Instruction]]]]] = {
    PROBE_NAME: _probe_instructions,
    ITERATOR_NAME: _iterator_instructions,
    TASK_FILE_ITERATOR_NAME: _task_file_instructions,
}
NAMES: Final = frozenset(_BUILDERS)


class OwnPrograms:
    """Tells kstat's programs from others'; each name's tags are worked out once, when a
    program of that name is first met (most windows never meet one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: dict[str, frozenset[str]] = {}

    def recognises(self, program: ProgramStats) -> bool:
        name = program.kernel_name
        if name not in NAMES:
            return False
        return program.tag in self._tags_of(name)

    def _tags_of(self, name: str) -> frozenset[str]:
        with self._lock:
            tags = self._tags.get(name)
            if tags is None:
                tags = self._tags[name] = self._work_out(name)
            return tags

    def _work_out(self, name: str) -> frozenset[str]:
        try:
            return frozenset(tag for code in _BUILDERS[name]() for tag in program_tags(code))
        except (KeyError, OSError, KstatError) as error:
            # No BTF, or a kernel laid out otherwise: no kstat of this version runs its
            # iterator here either, so a program of that name is nobody's but its loader's.
            log.debug("cannot work out the tags of kstat's own program", program=name, error=str(error))
            return frozenset()
