"""Values that flow from the sampler to the sinks: one program's counters and a whole snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Final, NamedTuple

from attrs import define, field, frozen

from kstat._moments import midpoint_ns
from kstat.core.counters import Counters

if TYPE_CHECKING:
    from kstat.core.owner_cost import ProcessUsage


class ProgramIdentity(NamedTuple):
    """What makes a program the same program across snapshots.

    The kernel may hand a freed id to a new program, so the id alone is not enough: a program
    is the same one only while its id, load time and tag all match. A NamedTuple rather than an
    attrs class: it is the dict key of every program in every snapshot, and tuples hash and
    compare in C.
    """

    id: int
    load_time_ns: int
    tag: str


@frozen
class MapFootprint:
    """One map a program uses, and the memory the kernel charges for it (its fdinfo's memlock)."""

    id: int
    memlock_bytes: int | None


# Its hash kept: a report's lines key their shared figures by it, 10,000 times a report.
@frozen(cache_hash=True)
class ProgramFootprint:
    """What a program costs besides CPU: code, verifier work, memory, maps. Read once, when the
    program is first met: none of it changes while it is loaded."""

    jited_size_bytes: int
    xlated_size_bytes: int
    # bpf_prog_info.verified_insns (Linux 5.16+); None on older kernels.
    verified_instructions: int | None
    # The program's own memlock (its fdinfo); None when it could not be read.
    memlock_bytes: int | None
    maps: tuple[MapFootprint, ...] = ()

    @property
    def map_ids(self) -> tuple[int, ...]:
        # Asked for every line of a report; a program without maps (often most) makes nothing.
        return tuple(entry.id for entry in self.maps) if self.maps else ()

    @property
    def maps_memlock_bytes(self) -> int | None:
        """The sum over the program's maps (a map shared with another program counts for each)."""
        sizes = [entry.memlock_bytes for entry in self.maps]
        return None if None in sizes else sum(size for size in sizes if size is not None)

    @staticmethod
    def combined(footprints: Iterable[ProgramFootprint]) -> ProgramFootprint:
        """Several programs' footprint as one: sums, but a map shared by several counts once."""
        jited = xlated = verified = memlock = 0
        verified_known = memlock_known = True
        maps: dict[int, MapFootprint] = {}
        for footprint in footprints:
            jited += footprint.jited_size_bytes
            xlated += footprint.xlated_size_bytes
            if footprint.verified_instructions is None:
                verified_known = False
            else:
                verified += footprint.verified_instructions
            if footprint.memlock_bytes is None:
                memlock_known = False
            else:
                memlock += footprint.memlock_bytes
            for entry in footprint.maps:
                maps[entry.id] = entry
        return ProgramFootprint(
            jited_size_bytes=jited,
            xlated_size_bytes=xlated,
            verified_instructions=verified if verified_known else None,
            memlock_bytes=memlock if memlock_known else None,
            maps=tuple(maps[map_id] for map_id in sorted(maps)),
        )


@frozen
class Workload:
    """Where a process runs: its container and pod, or its systemd unit (what is known)."""

    container_id: str | None = None
    # containerd, cri-o, docker or podman, from how the cgroup is named.
    container_runtime: str | None = None
    container_name: str | None = None
    pod_uid: str | None = None
    pod: str | None = None
    namespace: str | None = None
    # Guaranteed, Burstable or BestEffort, from the kubepods cgroup.
    qos_class: str | None = None
    # nginx.service, user@1000.service: for processes outside containers.
    unit: str | None = None


NO_WORKLOAD: Final = Workload()


@frozen
class ProgramOwner:
    """A process holding the program open (an fd to it or to one of its links)."""

    pid: int
    command: str
    # Seen when the program was first met: a process that moves cgroups later keeps this.
    workload: Workload = NO_WORKLOAD

    @property
    def label(self) -> str:
        """`pid/comm`: how every output shows an owner (list, top, Prometheus' `owners`)."""
        return f"{self.pid}/{self.command}"


@frozen
class ProgramDetails:
    """Who holds a program and where it is attached, learnt once when it is first seen."""

    owners: tuple[ProgramOwner, ...] = ()
    # "xdp:eth0", "tcx/ingress:eth0", "cgroup/egress:/sys/fs/cgroup/app", ...
    attachments: tuple[str, ...] = ()


NO_DETAILS: Final = ProgramDetails()


@define
class ProgramFacts:
    """What is learnt about a program after its counters are first read: its full name (from
    BTF), its footprint, its owners and attachments. Shared by every reading of one program and
    filled once, by the sampler's details stage, before any snapshot holding the program is
    published: the counter read never waits for these."""

    name: str | None = None
    footprint: ProgramFootprint | None = None
    details: ProgramDetails = NO_DETAILS
    # Name and footprint looked up (False: not yet, or the program was gone by then).
    described: bool = False
    # Owners and attachments looked up.
    attributed: bool = False

    def learn(self, other: ProgramFacts) -> None:
        """Take what another reading's facts about the same program know."""
        self.name, self.footprint, self.details = other.name, other.footprint, other.details
        self.described, self.attributed = other.described, other.attributed


@frozen
class ProgramStats:
    """One program's identity and cumulative counters, as the kernel reported them at one moment.

    A reader builds it from the counter read alone; what takes longer to learn (the full name,
    the footprint, owners and attachments) is in its `facts`, shared by every reading of the
    program and filled in before any snapshot holding it is published.
    """

    id: int
    type: str
    tag: str
    # Nanoseconds since boot (CLOCK_BOOTTIME), as bpf_prog_info.load_time gives it.
    load_time_ns: int
    # The kernel's cumulative counters at this reading (the counter catalogue's).
    counters: Counters
    # bpf_prog_info.name: at most 15 characters of what the loader called it.
    kernel_name: str
    facts: ProgramFacts = field(factory=ProgramFacts, hash=False)

    @staticmethod
    def described(
        *,
        id: int,
        type: str,
        name: str,
        tag: str,
        load_time_ns: int,
        counters: Counters,
        kernel_name: str | None = None,
        footprint: ProgramFootprint | None = None,
        details: ProgramDetails | None = None,
    ) -> ProgramStats:
        """A program whose facts are known (tests, tools replaying recorded passes)."""
        return ProgramStats(
            id=id,
            type=type,
            tag=tag,
            load_time_ns=load_time_ns,
            counters=counters,
            kernel_name=name if kernel_name is None else kernel_name,
            facts=ProgramFacts(name=name, footprint=footprint, details=details or NO_DETAILS, described=True),
        )

    @cached_property
    def identity(self) -> ProgramIdentity:
        return ProgramIdentity(self.id, self.load_time_ns, self.tag)

    @property
    def name(self) -> str:
        """The full function name from the program's BTF where it has one, else the kernel's."""
        return self.facts.name or self.kernel_name

    @property
    def footprint(self) -> ProgramFootprint | None:
        """Code size, verifier work, memory and maps (None until looked up, or unreadable)."""
        return self.facts.footprint

    @property
    def details(self) -> ProgramDetails:
        """Its owners and attachments (none known until looked up)."""
        return self.facts.details

    # The library's names for the counters since kstat 0.1.
    @property
    def run_time_ns(self) -> int:
        return self.counters.run_time_ns

    @property
    def run_count(self) -> int:
        return self.counters.run_count

    @property
    def recursion_misses(self) -> int | None:
        """None on a kernel that does not count them (before 5.12)."""
        return self.counters.recursion_misses


@frozen
class PassClocks:
    """The clocks around one counter read: the kernel walk itself, never what is done with its
    result afterwards (decoding, names, owners), so that a snapshot's moment is its counters'."""

    monotonic_start_ns: int
    monotonic_end_ns: int
    # CLOCK_BOOTTIME when the read began: the clock of bpf_prog_info.load_time.
    boottime_start_ns: int
    wall_start_ns: int
    wall_end_ns: int

    @property
    def monotonic_ns(self) -> int:
        """The read's midpoint: the best single estimate for every program in it."""
        return midpoint_ns(self.monotonic_start_ns, self.monotonic_end_ns)

    @property
    def wall_time_ns(self) -> int:
        return midpoint_ns(self.wall_start_ns, self.wall_end_ns)

    @property
    def duration_ns(self) -> int:
        return self.monotonic_end_ns - self.monotonic_start_ns


@frozen
class Snapshot:
    """Every loaded program's counters, read in one pass, with the clocks around that pass.

    The pass over thousands of programs takes a while; the snapshot's moment (monotonic and
    wall time) is the midpoint of the pass, the best single estimate for every program in it.
    """

    sequence: int
    monotonic_ns: int
    # CLOCK_BOOTTIME when the pass began (not its midpoint): a program whose load_time is later
    # was loaded after the pass started, so all of its runs happened after that moment.
    boottime_at_start_ns: int
    wall_time_ns: int
    # How long the pass over all programs took (monotonic clock): the sampler's own cost.
    pass_duration_ns: int
    programs: tuple[ProgramStats, ...]
    # Other kstat instances' own programs (their iterators, recognised by name and tag): not
    # among `programs`, never in a total, counted apart by the report (`kstat_programs`).
    kstat_programs: tuple[ProgramStats, ...] = ()
    # What the processes holding `programs` had used (CPU time, memory) when the details stage
    # read /proc for this snapshot, in pid order: the owners' side of their whole cost.
    processes: tuple[ProcessUsage, ...] = ()

    @staticmethod
    def details_of(program: ProgramStats) -> ProgramDetails:
        """A program's owners and attachments (kept for sinks written against kstat 0.2)."""
        return program.details


@frozen
class Reading:
    """One counter read of every program, as a reader returns it: the programs (their facts
    not yet looked up for new ones), what changed since the reader's previous read, and the
    clocks around the read itself."""

    programs: Sequence[ProgramStats]
    changes: ProgramChanges
    clocks: PassClocks
    # The first read of a reader that took over from another (the syscalls' baseline, then the
    # iterator): its `changes` know nothing of the previous reader's reads, so they are worked
    # out again from the readings themselves, and its programs' facts taken from what is known.
    fresh_reader: bool = False


@frozen
class ProgramChanges:
    """What a pass found different from the pass before it (the reader's own bookkeeping)."""

    # First met in this pass.
    new: Sequence[ProgramStats] = ()
    # (previous reading, this reading) of programs whose counters moved.
    moved: Sequence[tuple[ProgramStats, ProgramStats]] = ()
    # The previous pass's readings of programs this pass no longer found.
    vanished: Sequence[ProgramStats] = ()
