"""What one bench run found, the targets of issue 7 judged against it, and the JSON record.

Pure: everything here is computed from measurements already taken.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import cattrs
from attrs import frozen

from bench.breakdown import Breakdown
from bench.go_tool import KSTAT, SideBySide
from bench.in_turn import InTurn
from bench.interval_work import IntervalWork
from bench.iterator_floor import IteratorFloor
from bench.measure import Machine
from bench.observer import ObserverEffect
from bench.snapshot import BpftoolSnapshot, FloorSnapshot, KstatSnapshot
from bench.steady import SteadyState

FLOOR_RATIO_LIMIT: Final = 1.3
# Issue 16: one snapshot by the BPF iterator, decoded, within a quarter of the C syscall floor.
ITERATOR_FLOOR_RATIO_LIMIT: Final = 0.25
BPFTOOL_SPEED_UP_LIMIT: Final = 2.0
STEADY_CPU_PERCENT_LIMIT: Final = 1.0
STEADY_PROGRAMS: Final = 1000
PEAK_RSS_LIMIT_BYTES: Final = 80_000_000
# Per-program cost at the largest size over that at the next smaller one: linear within 25 %.
LINEARITY_LIMIT: Final = 1.25
# Issue 28, from whole windows of the command: the baseline read this soon after launch (at each
# size), the report this soon after the window's end, the rates this close to the true span's,
# and the peak RSS, at 10,000 programs.
BASELINE_LIMITS_S: Final = {100: 0.05, 10_000: 0.3}
REPORT_LIMIT_S: Final = 0.3
RATE_ERROR_LIMIT_PERCENT: Final = 0.2
WINDOW_PEAK_RSS_LIMIT_BYTES: Final = 50_000_000
WINDOW_TARGETS_AT: Final = 10_000

METHOD: Final = {
    "kstat": "in process: SnapshotTaker().take_blocking() after one cold pass and one warm-up, "
    "then N back-to-back passes timed with perf_counter_ns (median); read_all the same on a fresh "
    "ProgramReader",
    "c_floor": "bench/snapshot_floor.c, cc -O2: N+1 passes in one process, each timed inside it "
    "(CLOCK_MONOTONIC), the first dropped; median. Its CPU time too (CLOCK_THREAD_CPUTIME_ID): "
    "what a steady interval's CPU is set against",
    "bpftool": "per pass: wall time of `bpftool --json batch file` with 1+P `prog show` lines less "
    "that with 1 line, over P (start-up cancels out); median over trials. Output to /dev/null. "
    "process: the wall time of one whole `bpftool --json prog show`, start-up included",
    "kstat_list": "the wall time of one whole `python -m kstat list --json` (output to /dev/null), "
    "start-up included, as many times as the whole bpftool process; median",
    "steady_state": "the `python -m kstat` CLI as a child with NDJSON (file) and StatsD (UDP to "
    "127.0.0.1, a socket that never reads) sinks; user+sys from /proc/<pid>/stat polled every 50 ms, "
    "between the first interval line written and the last before the window's end; peak RSS is "
    "VmHWM and wait4's ru_maxrss",
    "windows": "`python -m kstat -duration D -output F` (and GO_TOOL's `-duration D -output F`) as a "
    "child, runs alternating between the tools; CPU and peak RSS from wait4's rusage; two probe "
    "programs loaded last get packets at 8,500/s, each send time-stamped (CLOCK_MONOTONIC): the "
    "early probe from before launch to half the window (its count places the baseline read), the "
    "late one from half the window until exit (its count places the final read); the rate error "
    "is the true span between those reads over the report's collection_duration_ns, less 1; the "
    "report's lateness is its file's mtime less the final read; one program in 50 gets 20 "
    "packets/s",
    "observer_effect": "one attached socket filter on loopback: fixed packet counts sent by "
    "LoopbackTarget.send, timed, with a BPF_ENABLE_STATS fd held or not, alternating; and "
    "BPF_PROG_TEST_RUN with repeat, its kernel-measured ns per run and its wall time per run",
}


@frozen
class SizeResult:
    programs_loaded: int
    programs_seen: int
    kstat: KstatSnapshot
    floor: FloorSnapshot
    bpftool: BpftoolSnapshot
    # Median pass of each tool over the programs seen.
    microseconds_per_program: dict[str, float]
    kstat_over_floor: float
    kstat_over_bpftool: float
    kstat_over_bpftool_process: float

    @classmethod
    def of(
        cls, programs_loaded: int, kstat: KstatSnapshot, floor: FloorSnapshot, bpftool: BpftoolSnapshot
    ) -> SizeResult:
        take_ns = kstat.take_blocking.median_ns
        times_ns = {
            "kstat take_blocking": take_ns,
            "kstat read_all": kstat.read_all.median_ns,
            "C floor": floor.per_pass.median_ns,
            "bpftool (per pass)": bpftool.per_pass.median_ns,
        }
        if kstat.iterator_read_pass is not None and kstat.iterator_take_blocking is not None:
            times_ns["iterator read_pass"] = kstat.iterator_read_pass.median_ns
            times_ns["iterator take_blocking"] = kstat.iterator_take_blocking.median_ns
        return cls(
            programs_loaded=programs_loaded,
            programs_seen=kstat.programs_seen,
            kstat=kstat,
            floor=floor,
            bpftool=bpftool,
            microseconds_per_program={
                tool: time_ns / kstat.programs_seen / 1e3 for tool, time_ns in times_ns.items()
            },
            kstat_over_floor=take_ns / floor.per_pass.median_ns,
            kstat_over_bpftool=take_ns / bpftool.per_pass.median_ns,
            kstat_over_bpftool_process=take_ns / bpftool.process_wall.median_ns,
        )

    def times_ns(self) -> dict[str, float]:
        """The median pass of each way of taking a snapshot, by name."""
        return {
            tool: micros * self.programs_seen * 1e3 for tool, micros in self.microseconds_per_program.items()
        }


@frozen
class Slope:
    """Cost per program between two sizes, in microseconds: (t2 - t1) / (n2 - n1)."""

    tool: str
    from_programs: int
    to_programs: int
    microseconds_per_program: float


@frozen
class Target:
    name: str
    measured: str
    limit: str
    passed: bool
    # The issue whose "done when" it is (7: the first targets; 28: lean and exact at 10,000).
    issue: int = 7


@frozen
class IntervalCost:
    """The kstat command with NDJSON and StatsD at 1 s, this tree and (when given) a baseline
    revision, on the same programs in the same run."""

    programs: int
    this: SteadyState
    baseline: SteadyState | None
    # Programs that ran all along the window (steady traffic), beside the idle ones.
    busy_programs: int = 0
    # The C floor's CPU time for a pass on the same programs under the same traffic (before
    # and after the window, averaged); None where measured apart (idle programs).
    floor_cpu_ns: float | None = None

    @staticmethod
    def milliseconds(state: SteadyState) -> float:
        """CPU time per interval: the steady share of one CPU times the interval."""
        return state.steady_cpu_percent / 100 * state.interval_s * 1e3


@frozen
class BenchResults:
    timestamp: str
    quick: bool
    machine: Machine
    foreign_programs_at_start: int
    method: dict[str, str]
    sizes: tuple[SizeResult, ...]
    slopes: tuple[Slope, ...]
    steady_states: tuple[SteadyState, ...]
    interval_costs: tuple[IntervalCost, ...]
    interval_work: IntervalWork
    observer_effect: ObserverEffect
    breakdown: Breakdown
    targets: tuple[Target, ...]
    windows: tuple[SideBySide, ...] = ()
    # The Go collect-kernel-stats build the windows ran beside kstat (GO_TOOL), if any.
    go_tool: str | None = None
    # The iterator's walks at the largest size, the stats on (bench.iterator_floor).
    iterator_floor: IteratorFloor | None = None
    # The iterator's pass and the floor's in turn, at the largest size (bench.in_turn).
    in_turn: InTurn | None = None


def slopes(sizes: Sequence[SizeResult]) -> tuple[Slope, ...]:
    found: list[Slope] = []
    for smaller, larger in itertools.pairwise(sizes):
        added = larger.programs_seen - smaller.programs_seen
        smaller_times_ns = smaller.times_ns()
        for tool, larger_ns in larger.times_ns().items():
            smaller_ns = smaller_times_ns[tool]
            found.append(
                Slope(
                    tool, smaller.programs_seen, larger.programs_seen, (larger_ns - smaller_ns) / added / 1e3
                )
            )
    return tuple(found)


def judge(
    sizes: Sequence[SizeResult],
    steady_states: Sequence[SteadyState],
    interval_costs: Sequence[IntervalCost] = (),
    windows: Sequence[SideBySide] = (),
    iterator_floor: IteratorFloor | None = None,
    *,
    in_turn: InTurn | None = None,
) -> tuple[Target, ...]:
    largest = sizes[-1]
    targets = [
        Target(
            f"snapshot of {largest.programs_seen} programs within {FLOOR_RATIO_LIMIT}x the C floor",
            f"{largest.kstat_over_floor:.2f}x",
            f"<= {FLOOR_RATIO_LIMIT}x",
            largest.kstat_over_floor <= FLOOR_RATIO_LIMIT,
        ),
        Target(
            f"snapshot of {largest.programs_seen} programs at least "
            f"{BPFTOOL_SPEED_UP_LIMIT:g}x faster than bpftool",
            f"{1 / largest.kstat_over_bpftool:.2f}x faster (per pass; "
            f"{1 / largest.kstat_over_bpftool_process:.2f}x against a whole bpftool process)",
            f">= {BPFTOOL_SPEED_UP_LIMIT:g}x",
            1 / largest.kstat_over_bpftool >= BPFTOOL_SPEED_UP_LIMIT,
        ),
    ]
    at_one_second = [
        state
        for state in steady_states
        if state.interval_s == 1.0 and set(state.sinks) == {"ndjson", "statsd"}
    ]
    for state in at_one_second:
        targets.append(
            Target(
                f"steady state at 1 s with {STEADY_PROGRAMS} programs "
                f"under {STEADY_CPU_PERCENT_LIMIT:g}% of one CPU",
                f"{state.steady_cpu_percent:.2f}%",
                f"< {STEADY_CPU_PERCENT_LIMIT:g}%",
                state.steady_cpu_percent < STEADY_CPU_PERCENT_LIMIT,
            )
        )
    if steady_states:
        peak = max(state.peak_rss_bytes for state in steady_states)
        targets.append(
            Target(
                f"peak RSS of the kstat CLI under {PEAK_RSS_LIMIT_BYTES / 1e6:g} MB",
                f"{peak / 1e6:.1f} MB",
                f"< {PEAK_RSS_LIMIT_BYTES / 1e6:g} MB",
                peak < PEAK_RSS_LIMIT_BYTES,
            )
        )
    listing = largest.kstat.list_process_wall
    if listing is not None:
        # The bpftool processes run in turn with kstat's where the bench ran them so.
        bpftool_ns = (largest.kstat.bpftool_process_wall_alongside or largest.bpftool.process_wall).median_ns
        ratio = listing.median_ns / bpftool_ns
        targets.append(
            Target(
                f"`kstat list --json` of {largest.programs_seen} programs no slower than "
                "`bpftool --json prog show`",
                f"{listing.median_ns / 1e9:.2f} s against {bpftool_ns / 1e9:.2f} s ({ratio:.2f}x)",
                "<= 1x",
                ratio <= 1.0,
                issue=28,
            )
        )
    iterator = largest.microseconds_per_program.get("iterator read_pass")
    if iterator is not None:
        floor = largest.microseconds_per_program["C floor"]
        walks = ""
        if iterator_floor is not None:
            # What the kernel's walk costs before kstat decodes a byte (bench.iterator_floor).
            per_program = {
                name: timing.median_ns / 1e3 / iterator_floor.programs_seen
                for name, timing in iterator_floor.walks.items()
            }
            walks = "; the kernel's walk alone: " + ", ".join(
                f"{name} {value / floor:.3f}x" for name, value in per_program.items()
            )
        ratio = iterator / floor
        measured = f"{ratio:.3f}x the floor ({iterator:.2f} vs {floor:.2f} us/program, stats on)"
        if in_turn is not None:
            # The verdict goes by the rounds in turn: the floor moves with the host (bench.in_turn).
            ratio = in_turn.median_ratio
            kstat_us, floor_us = in_turn.per_program_us()
            measured = (
                f"{ratio:.3f}x the floor, median of {len(in_turn.rounds)} rounds in turn "
                f"[{min(in_turn.ratios):.3f}-{max(in_turn.ratios):.3f}] ({kstat_us:.2f} vs "
                f"{floor_us:.2f} us/program, stats on; measured apart: {iterator / floor:.3f}x)"
            )
        targets.append(
            Target(
                f"snapshot of {largest.programs_seen} programs by iterator within a quarter of the C floor",
                measured + walks,
                "<= 0.25x",
                ratio <= ITERATOR_FLOOR_RATIO_LIMIT,
                issue=28,
            )
        )
    for cost in interval_costs:
        same_size = [size for size in sizes if size.programs_loaded == cost.programs]
        if not same_size:
            continue
        # CPU against CPU: a loaded host stretches the floor's wall time, not its CPU time.
        found = same_size[0].floor
        floor_ms = (found.cpu_per_pass or found.per_pass).median_ns / 1e6
        under = ""
        if cost.floor_cpu_ns is not None:
            floor_ms, under = cost.floor_cpu_ns / 1e6, " (the floor under the same traffic)"
        interval_ms = IntervalCost.milliseconds(cost.this)
        targets.append(
            Target(
                f"a steady interval with NDJSON and StatsD at {cost.programs} programs "
                f"({cost.busy_programs} busy) within one C-floor snapshot",
                f"{interval_ms:.2f} ms of CPU per interval vs {floor_ms:.2f} ms "
                f"({interval_ms / floor_ms:.2f}x){under}",
                "<= 1x",
                interval_ms <= floor_ms,
                issue=28 if cost.busy_programs else 7,
            )
        )
    if len(sizes) >= 2:
        smaller = sizes[-2]
        before = smaller.microseconds_per_program["kstat take_blocking"]
        after = largest.microseconds_per_program["kstat take_blocking"]
        growth = after / before
        targets.append(
            Target(
                f"cost linear in programs ({smaller.programs_seen} -> {largest.programs_seen})",
                f"{before:.2f} -> {after:.2f} us/program ({growth:.2f}x)",
                f"<= {LINEARITY_LIMIT}x",
                growth <= LINEARITY_LIMIT,
            )
        )
    return (*targets, *_window_targets(windows))


def _window_targets(windows: Sequence[SideBySide]) -> list[Target]:
    """Issue 28's, from kstat's whole windows: the median run for the times, the worst for the
    rates and the memory."""
    targets = []
    for found in windows:
        runs = found.runs.get(KSTAT, ())
        if not runs:
            continue
        size = found.programs_loaded
        limit_s = BASELINE_LIMITS_S.get(size)
        if limit_s is not None:
            baseline = found.spread(KSTAT, lambda run: run.launch_to_baseline_s)
            baseline_s = baseline.median
            targets.append(
                Target(
                    f"baseline read within {limit_s * 1000:g} ms of launch at {size:,} programs",
                    f"{baseline_s * 1000:.0f} ms (median of {len(runs)} "
                    f"[{baseline.low * 1000:.0f}-{baseline.high * 1000:.0f}])",
                    f"<= {limit_s * 1000:g} ms",
                    baseline_s <= limit_s,
                    issue=28,
                )
            )
        if size != WINDOW_TARGETS_AT:
            continue
        report = found.spread(KSTAT, lambda run: run.window_end_to_report_s)
        report_s = report.median
        worst_rate = max(abs(run.rate_error_percent) for run in runs)
        peak_rss = found.spread(KSTAT, lambda run: run.peak_rss_bytes / 1e6)
        peak = max(run.peak_rss_bytes for run in runs)
        memory = found.spread(KSTAT, lambda run: run.peak_memory_bytes / 1e6)
        peak_memory = max(run.peak_memory_bytes for run in runs)
        targets += [
            Target(
                f"report written within {REPORT_LIMIT_S:g} s of the window's end at {size:,} programs",
                f"{report_s:.3f} s (median of {len(runs)} [{report.low:.3f}-{report.high:.3f}])",
                f"<= {REPORT_LIMIT_S:g} s",
                report_s <= REPORT_LIMIT_S,
                issue=28,
            ),
            Target(
                f"rates within {RATE_ERROR_LIMIT_PERCENT:g} % of the true span at {size:,} programs",
                f"{worst_rate:.2f} % at worst of {len(runs)}",
                f"<= {RATE_ERROR_LIMIT_PERCENT:g} %",
                worst_rate <= RATE_ERROR_LIMIT_PERCENT,
                issue=28,
            ),
            Target(
                f"peak RSS of a whole window at {size:,} programs",
                f"{peak / 1e6:.1f} MB at most of {len(runs)} (median {peak_rss.median:.1f} "
                f"[{peak_rss.low:.1f}-{peak_rss.high:.1f}]), summed over kstat's two processes",
                f"<= {WINDOW_PEAK_RSS_LIMIT_BYTES / 1e6:g} MB",
                peak <= WINDOW_PEAK_RSS_LIMIT_BYTES,
                issue=28,
            ),
            Target(
                f"peak memory of a whole window at {size:,} programs, the pages kstat's two "
                "processes share counted once",
                f"{peak_memory / 1e6:.1f} MB at most of {len(runs)} (median {memory.median:.1f} "
                f"[{memory.low:.1f}-{memory.high:.1f}]): kstat's peak RSS and its counter clock's "
                "private peak",
                f"<= {WINDOW_PEAK_RSS_LIMIT_BYTES / 1e6:g} MB",
                peak_memory <= WINDOW_PEAK_RSS_LIMIT_BYTES,
                issue=28,
            ),
        ]
    return targets


def write_json(results: BenchResults, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{results.timestamp}.json"
    data: dict[str, Any] = cattrs.Converter().unstructure(results)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
