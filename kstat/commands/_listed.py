"""Every loaded program as `kstat list` writes it (`kstat.formats.listing`'s columns), read by
kstat's iterators and decoded straight into it: one walk of the listing iterator for every
program, the syscalls only for programs whose records say they use maps, have a BTF name or
are made of several functions, one walk of the task-file iterator for every owner, one scan for
the attachments.

Nothing of kstat's model is built or imported (attrs, the catalogues), nor typing or pathlib at
run time: at 10,000 programs the interpreter's start and the imports are most of a listing's
time (BENCHMARKS.md). Where either iterator cannot be built, there is nothing here to read
with: the listing's other path (`kstat.commands.list`) reads by syscalls and /proc.
"""

from __future__ import annotations

import threading
from itertools import chain, repeat

from kstat.abi.enums import program_type_name
from kstat.core.timestamps import format_timestamps
from kstat.formats.listing import ListedColumns, ProgramShape, footprint_object, owner_object
from kstat.sources.attachments import attachments_by_program
from kstat.sources.clocks import boot_to_wall_ns
from kstat.sources.descriptions import ProgramDescriber
from kstat.sources.listing_iterator import ListingIterator, RecordColumns, footprint_fields, footprint_of
from kstat.sources.task_files import ProgramHolders, TaskFileIterator
from kstat.sources.workload_fields import fields_of_process
from kstat.text import from_host_each

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kstat.formats.listing import JsonObject

    # What tells shapes apart: the processes holding the program, where it is attached, and
    # what its record says of its footprint (or, for a program the syscalls described, its id).
    ShapeKey = tuple[tuple[int, ...], tuple[str, ...], bytes | int]
    # A program the syscalls described: its full name (None without one) and its footprint's
    # object (empty where it could not be read).
    Described = tuple[str | None, JsonObject]


class Listed:
    """What the reads found: every program's record (kstat's own iterators' left out), what
    the syscalls say of those whose records need them, the owners (and where each runs) and the
    attachments. `columns()` decodes it; nothing is read then, so a listing cannot fail once
    written in part."""

    def __init__(self, host_root: str = "/") -> None:
        describer = ProgramDescriber()
        owners = _OwnerWalk()
        try:
            iterator = ListingIterator()
            try:
                own_id = describer.program_id(iterator.program_fd)
                records = iterator.records()
                self._counts_recursion_misses = iterator.counts_recursion_misses
                self._counts_verified_instructions = iterator.counts_verified_instructions
            finally:
                iterator.close()
            # While the owners' walk goes on: the records decoded (kstat's own iterators are no
            # program of the host's), the syscalls' details and the attachment scan.
            self._records = RecordColumns(records, leave_out={own_id, owners.own_id()})
            self._described = _described(describer, self._records)
            self._types = {number: program_type_name(number) for number in set(self._records.types)}
            self._attachments = {
                program_id: tuple(places)
                for program_id, places in attachments_by_program(self._types.values()).items()
                if places
            }
        finally:
            self._holders = owners.holders()
        # Each holder of a listed program, once: its command, and where it runs now.
        holding = chain.from_iterable(map(self._holders.by_program.get, self._records.ids, repeat(())))
        self._owners = {
            pid: owner_object(pid, self._holders.command(pid), fields_of_process(pid, host_root=host_root))
            for pid in set(holding)
        }
        # load_time is on the boot-time clock; the wall clock is what people read.
        self.boot_to_wall_ns = boot_to_wall_ns()

    def columns(self, boot_to_wall_ns: int | None = None) -> ListedColumns:
        """Every program's values, in id order, each with the shape its owners, attachments and
        footprint share with others (at 10,000 programs most share one), a column at a time.
        `boot_to_wall_ns`: what puts load times on the wall clock, if not the one read."""
        offset = self.boot_to_wall_ns if boot_to_wall_ns is None else boot_to_wall_ns
        records, described = self._records, self._described
        listed = ListedColumns()
        listed.ids = records.ids
        listed.types = list(map(self._types.__getitem__, records.types))
        listed.kernel_names = from_host_each(map(bytes.rstrip, records.names, repeat(b"\0")))
        listed.tags = list(map(bytes.hex, records.tags))
        listed.load_times_ns = records.load_times_ns
        listed.loaded_at = format_timestamps(map(offset.__add__, records.load_times_ns))
        listed.run_times_ns = records.run_times_ns
        listed.run_counts = records.run_counts
        # The record's zero is no count where the kernel does not count them (before 5.12).
        misses: list[int | None] = (
            list(records.recursion_misses) if self._counts_recursion_misses else [None] * len(records)
        )
        listed.recursion_misses = misses
        # Those the syscalls described: each its own footprint, its full name where it has one.
        footprints: list[bytes | int] = list(records.footprints)
        listed.names = listed.kernel_names
        for index, (name, _) in described.items():
            footprints[index] = records.ids[index]
            if name:
                if listed.names is listed.kernel_names:
                    listed.names = list(listed.kernel_names)
                listed.names[index] = name
        described_footprints = {records.ids[index]: footprint for index, (_, footprint) in described.items()}
        shapes = _Shapes(self._owners, described_footprints, self._counts_verified_instructions)
        holders = map(self._holders.by_program.get, records.ids, repeat(()))
        places = map(self._attachments.get, records.ids, repeat(()))
        listed.shapes = list(map(shapes.__getitem__, zip(holders, places, footprints, strict=True)))
        return listed


class _OwnerWalk:
    """The task-file iterator built and walked once, on a thread of its own while the listing
    iterator is: both are the kernel's work (the verifier, a walk of every program or of every
    fd of every process), done with the interpreter's lock released. `own_id()` is the
    iterator's own program's id, once it is loaded; `holders()` every holder of every program
    (the listing's are all of them but kstat's own), once walked."""

    def __init__(self) -> None:
        self._own_id = 0
        self._holders: ProgramHolders | None = None
        self._error: BaseException | None = None
        self._loaded = threading.Event()
        self._thread = threading.Thread(target=self._walk, name="kstat-owners", daemon=True)
        self._thread.start()

    def _walk(self) -> None:
        try:
            iterator = TaskFileIterator()
            try:
                self._own_id = ProgramDescriber().program_id(iterator.program_fd)
            except BaseException:
                iterator.close()
                raise
        except BaseException as error:  # noqa: BLE001 - raised again on the caller's thread
            self._error = error
            return
        finally:
            self._loaded.set()
        try:
            self._holders = iterator.holders()
        except BaseException as error:  # noqa: BLE001 - raised again on the caller's thread
            self._error = error
        finally:
            iterator.close()

    def own_id(self) -> int:
        self._loaded.wait()
        self._raise_any()
        return self._own_id

    def holders(self) -> ProgramHolders:
        self._thread.join()
        self._raise_any()
        assert self._holders is not None
        return self._holders

    def _raise_any(self) -> None:
        if self._error is not None:
            raise self._error


def _described(describer: ProgramDescriber, records: RecordColumns) -> dict[int, Described]:
    """The full name and footprint of each program whose record needs the syscalls, by its
    record's index, in id order (as the syscall reader describes them); none for one gone before
    it could be read (its record's kernel name, no footprint)."""
    found: dict[int, Described] = {}
    try:
        for index in records.needing_syscalls:
            description = describer.describe_id(records.ids[index], records.load_times_ns[index])
            found[index] = (
                (None, {})
                if description is None
                else (
                    description.name,
                    footprint_object(
                        jited_size_bytes=description.jited_size_bytes,
                        xlated_size_bytes=description.xlated_size_bytes,
                        verified_instructions=description.verified_instructions,
                        memlock_bytes=description.memlock_bytes,
                        maps=description.maps,
                    ),
                )
            )
    finally:
        describer.forget_batch()
    return found


class _Shapes(dict["ShapeKey", ProgramShape]):
    """The listing's shapes, each made at its first look-up (a look-up at C speed, `map` over
    the columns): its owners' objects (one list per set of processes), its attachments, its
    footprint's object."""

    def __init__(
        self,
        owners: dict[int, JsonObject],
        described_footprints: dict[int, JsonObject],
        counts_verified_instructions: bool,
    ) -> None:
        super().__init__()
        self._owners = owners
        # The footprints the syscalls read, by program id.
        self._described_footprints = described_footprints
        self._counts_verified_instructions = counts_verified_instructions
        self._owner_lists: dict[tuple[int, ...], list[JsonObject]] = {}

    def __missing__(self, key: ShapeKey) -> ProgramShape:
        pids, places, footprint = key
        owners = self._owner_lists.get(pids)
        if owners is None:
            owners = self._owner_lists[pids] = [self._owners[pid] for pid in pids]
        shape = self[key] = ProgramShape(owners, list(places), self._footprint(footprint))
        return shape

    def _footprint(self, key: bytes | int) -> JsonObject:
        if isinstance(key, int):
            return self._described_footprints[key]
        jited, xlated, verified, memlock = footprint_of(
            *footprint_fields(key), counts_verified_instructions=self._counts_verified_instructions
        )
        return footprint_object(
            jited_size_bytes=jited,
            xlated_size_bytes=xlated,
            verified_instructions=verified,
            memlock_bytes=memlock,
            maps=(),
        )
