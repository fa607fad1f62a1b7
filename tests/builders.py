"""Hand-made programs, snapshots and windows for tests that need no kernel.

The values a test expects are worked out by hand in the test; these only build the inputs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence

import trio
from attrs import define, field

from kstat.core.counters import Counters
from kstat.core.delta import changes_between, interval_delta
from kstat.core.events import Event, IntervalEnded, WindowStarted
from kstat.core.model import ProgramDetails, ProgramFootprint, ProgramStats, Snapshot
from kstat.core.report import Report
from kstat.engine.sampler import Sample
from kstat.engine.summary import Summary
from kstat.sources.stats_switch import StatsMethod

ONLINE_CPUS = 2


def program(
    program_id: int,
    run_time_ns: int,
    run_count: int,
    *,
    name: str = "",
    load_time_ns: int = 1_000,
    recursion_misses: int | None = 0,
    tag: str = "00aa",
    type_name: str = "SocketFilter",
    footprint: ProgramFootprint | None = None,
    details: ProgramDetails | None = None,
) -> ProgramStats:
    return ProgramStats.described(
        id=program_id,
        type=type_name,
        name=name or f"prog{program_id}",
        tag=tag,
        load_time_ns=load_time_ns,
        counters=Counters(run_time_ns, run_count, recursion_misses),
        footprint=footprint,
        details=details,
    )


def snapshot(sequence: int, at_s: float, *programs: ProgramStats) -> Snapshot:
    at_ns = int(at_s * 1e9)
    # Boot time runs ahead of the monotonic clock here, as it does after a suspend.
    return Snapshot(
        sequence=sequence,
        monotonic_ns=5_000_000_000 + at_ns,
        boottime_at_start_ns=10_000_000_000 + at_ns,
        wall_time_ns=1_700_000_000_000_000_000 + at_ns,
        pass_duration_ns=1_000,
        programs=programs,
    )


def window_started(first: Snapshot, *, online_cpus: int = ONLINE_CPUS) -> WindowStarted:
    return WindowStarted(
        snapshot=first,
        interval_ns=1_000_000_000,
        requested_duration_ns=2_000_000_000,
        online_cpus=online_cpus,
        kernel_release="6.1.0-test",
        stats_enabled_by="bpf_enable_stats",
        program_filter=None,
    )


def interval(
    previous: Snapshot, current: Snapshot, *, first: Snapshot | None = None, online_cpus: int = ONLINE_CPUS
) -> IntervalEnded:
    """The interval event between two snapshots of a window that began with `first`, its delta
    computed the general way."""
    delta = interval_delta(
        previous,
        current,
        changes_between(previous, current),
        online_cpus=online_cpus,
        window_start_boottime_ns=(first or previous).boottime_at_start_ns,
    )
    return IntervalEnded(previous, current, delta)


def events_of(*snapshots: Snapshot, online_cpus: int = ONLINE_CPUS) -> list[Event]:
    """A window's start and intervals, as the scheduler would send them to a sink that kept up."""
    first = snapshots[0]
    events: list[Event] = [window_started(first, online_cpus=online_cpus)]
    events += [interval(a, b, first=first, online_cpus=online_cpus) for a, b in itertools.pairwise(snapshots)]
    return events


def report_of(*snapshots: Snapshot, online_cpus: int = ONLINE_CPUS) -> Report:
    """The report of a window made of these snapshots."""
    summary = Summary()
    for event in events_of(*snapshots, online_cpus=online_cpus):
        summary.observe(event)
    return summary.report(stopped_by=None)


@define
class FakeSource:
    """A snapshot source that plays back scripted snapshots (the last one repeats), each taking
    `pass_s` of trio's clock: with `MockClock`, windows run in microseconds without root."""

    snapshots: Sequence[Snapshot]
    pass_s: float = 0.0
    taken: int = 0
    _previous: Snapshot | None = field(default=None, init=False)
    _first: Snapshot | None = field(default=None, init=False)

    async def take(self) -> Sample:
        if self.pass_s:
            await trio.sleep(self.pass_s)
        else:
            await trio.lowlevel.checkpoint()
        index = min(self.taken, len(self.snapshots) - 1)
        base = self.snapshots[index]
        # Renumbered and re-timed by trio's clock: the window's sequence and clocks are its own.
        now_ns = int(trio.current_time() * 1e9)
        current = Snapshot(
            sequence=self.taken,
            monotonic_ns=now_ns,
            boottime_at_start_ns=10_000_000_000 + now_ns,
            wall_time_ns=1_700_000_000_000_000_000 + now_ns,
            pass_duration_ns=int(self.pass_s * 1e9),
            programs=base.programs,
        )
        self.taken += 1
        previous, self._previous = self._previous, current
        if previous is None:
            self._first = current
            return Sample(current, None)
        assert self._first is not None
        return Sample(current, interval(previous, current, first=self._first).delta)


@contextlib.contextmanager
def stats_left_alone() -> Iterator[StatsMethod]:
    """A stats switch that switches nothing: the source is not the kernel."""
    yield StatsMethod.BPF_ENABLE_STATS


def fleet_report(
    count: int,
    *,
    heavier: float = 1.0,
    with_maps: bool = False,
    intervals: int = 3,
    seed: int = 7,
    code_growth: int = 1,
) -> Report:
    """A report of `count` programs as a busy host has them: a few costly, most cheap, some
    idle, one burst (a program whose one interval's CPU share is ten times its average) and long
    agent-style names; each with a footprint (and maps when asked). `heavier` scales every
    program's runtime per run (a slower build); `code_growth` multiplies program 0's code size
    and verified instructions (a build whose code grew)."""
    import random  # noqa: PLC0415 - only here

    from kstat.core.model import MapFootprint, ProgramFootprint  # noqa: PLC0415

    chooser = random.Random(seed)
    agents = ("kux_flow_exporter", "cilium_lb", "tetragon_sensor", "falco_probe", "pixie_trace")
    programs: list[tuple[str, int, int, ProgramFootprint]] = []
    for index in range(count):
        name = f"{agents[index % len(agents)]}_parse_{('ipv4', 'ipv6', 'tcp', 'udp')[index % 4]}_{index}"
        # A long tail: runs per interval fall off with the index, a tenth of them never run.
        runs = 0 if index % 10 == 9 else int(20_000 / (1 + index) ** 0.8) + chooser.randrange(5)
        per_run_ns = int((60 + chooser.randrange(400)) * heavier)
        maps = (MapFootprint(index + 1, 4096 * (1 + index % 5)),) if with_maps else ()
        growth = code_growth if index == 0 else 1
        footprint = ProgramFootprint(
            jited_size_bytes=(80 + 8 * (index % 50)) * growth,
            xlated_size_bytes=(120 + 8 * (index % 50)) * growth,
            verified_instructions=(10 + index % 300) * growth,
            memlock_bytes=4096,
            maps=maps,
        )
        programs.append((name, runs, per_run_ns, footprint))
    snapshots = []
    totals = [(0, 0)] * count
    for sequence in range(intervals + 1):
        lines = []
        for index, (name, runs, per_run_ns, footprint) in enumerate(programs):
            # Program 1 bursts in the second interval: ten times its runs there.
            this_runs = 0 if sequence == 0 else runs * (10 if index == 1 and sequence == 2 else 1)
            run_time, run_count = totals[index]
            totals[index] = (run_time + this_runs * per_run_ns, run_count + this_runs)
            lines.append(
                program(
                    index + 1,
                    *totals[index],
                    name=name,
                    type_name=("XDP", "SchedCLS")[index % 2],
                    footprint=footprint,
                )
            )
        snapshots.append(snapshot(sequence, float(sequence), *lines))
    return report_of(*snapshots)
