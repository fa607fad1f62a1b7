"""`python -m bench.run` (`make bench`, `nox -s bench`): the benchmark suite of issue 7.

Loads 100, 1,000 and 10,000 real programs and times one full snapshot of all of them by kstat,
by bpftool and by a C floor; runs the kstat command for a steady state; runs whole windows of
the kstat command with time-stamped traffic (CPU, peak RSS, launch to baseline, the report's
lateness, the rates' error), beside the Go collect-kernel-stats tool when GO_TOOL=path names a
build of it; measures what the stats cost the programs measured; prints PASS/FAIL per target
and writes everything as JSON to bench-results/. BENCH_QUICK=1 shortens it all to a smoke test.
Needs root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from attrs import frozen

from bench.breakdown import Breakdown, measure_breakdown
from bench.go_tool import (
    BUSY_RUNS_PER_S,
    BUSY_SHARE,
    KSTAT,
    Launcher,
    SideBySide,
    Tool,
    describe,
    go_tool,
    installed_kstat,
    kstat_tool,
    measure_side_by_side,
)
from bench.in_turn import InTurn, measure_in_turn
from bench.interval_work import IntervalWork, measure_interval_work
from bench.iterator_floor import IteratorFloor, measure_iterator_floor
from bench.measure import describe_machine
from bench.observer import ObserverEffect, measure_observer_effect
from bench.programs import ProgramSet, raise_open_file_limit, spread
from bench.results import (
    METHOD,
    STEADY_PROGRAMS,
    BenchResults,
    IntervalCost,
    SizeResult,
    Slope,
    Target,
    judge,
    slopes,
    write_json,
)
from bench.scrape import ScrapeResult, measure_scrape
from bench.snapshot import Bpftool, SnapshotFloor, measure_kstat
from bench.steady import SteadyState, measure_steady_state
from bench.traffic import TimedTraffic
from kstat.sources.stats_switch import runtime_stats_enabled
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import LoopbackTarget

BPFTOOL: Final = "/usr/sbin/bpftool"
BOTH_SINKS: Final = ("ndjson", "statsd")
SINK_VARIANTS: Final = ((), ("ndjson",), ("statsd",))
C_COMPILER: Final = "cc"
RESULTS_DIRECTORY: Final = Path(__file__).resolve().parent.parent / "bench-results"
# Room for the programs and for what else the process has open.
_SPARE_FDS: Final = 1024


@frozen
class Plan:
    sizes: tuple[int, ...]
    steady_duration_s: float
    steady_intervals_s: tuple[float, ...]
    interval_work_repetitions: int
    # Programs loaded for the interval cost, this tree against a baseline checkout.
    interval_cost_sizes: tuple[int, ...]
    # Each streaming sink alone (and none) at 1 s, to see what each costs; shorter windows.
    sink_variant_duration_s: float
    floor_passes: int
    # Rounds of the floor and kstat's iterator pass in turn, at the largest size.
    in_turn_rounds: int
    bpftool_trials: int
    bpftool_process_runs: int
    observer_packets: int
    observer_rounds: int
    test_run_repeat: int
    breakdown_repetitions: int
    # Whole windows of the command (and of the Go tool), at these sizes, largest first.
    window_sizes: tuple[int, ...]
    window_duration_s: float
    window_repetitions: int

    def kstat_repetitions(self, programs: int) -> int:
        # About a second of passes at each size, never fewer than 5.
        return max(5, min(21, 100_000 // programs))

    def bpftool_passes(self, programs: int) -> int:
        # Enough passes per batch that the start-up jitter is small beside them.
        return max(5, min(50, 100_000 // programs))


FULL: Final = Plan(
    sizes=(100, 1_000, 10_000),
    steady_duration_s=30.0,
    steady_intervals_s=(1.0, 0.1),
    interval_work_repetitions=11,
    interval_cost_sizes=(1_000, 10_000),
    sink_variant_duration_s=15.0,
    floor_passes=21,
    in_turn_rounds=7,
    bpftool_trials=3,
    bpftool_process_runs=5,
    observer_packets=200_000,
    observer_rounds=7,
    test_run_repeat=1_000_000,
    breakdown_repetitions=7,
    window_sizes=(10_000, 1_000, 100),
    window_duration_s=10.0,
    window_repetitions=3,
)
QUICK: Final = Plan(
    sizes=(100, 1_000),
    steady_duration_s=5.0,
    steady_intervals_s=(1.0, 0.1),
    interval_work_repetitions=5,
    interval_cost_sizes=(1_000,),
    sink_variant_duration_s=5.0,
    floor_passes=7,
    in_turn_rounds=3,
    bpftool_trials=2,
    bpftool_process_runs=3,
    observer_packets=50_000,
    observer_rounds=3,
    test_run_repeat=200_000,
    breakdown_repetitions=3,
    window_sizes=(1_000, 100),
    window_duration_s=4.0,
    window_repetitions=1,
)


# kstat's own series beside the programs' (its passes, sinks, process and endpoint), at most.
_OWN_SERIES_AT_MOST: Final = 20


def _say(text: str = "") -> None:
    print(text, flush=True)


def _ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:.2f} ms"


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds like Ctrl-C does: every `with` closes, so every program is unloaded.
    raise SystemExit(128 + signum)


def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    plan = QUICK if quick else FULL
    if os.geteuid() != 0:
        _say("bench: needs root (it loads eBPF programs and switches the kernel's stats on)")
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    raise_open_file_limit(max(plan.sizes) + _SPARE_FDS)
    go_tool_path = os.environ.get("GO_TOOL", "")
    tools = (kstat_tool(), *((go_tool(go_tool_path),) if go_tool_path else ()))
    timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    machine = describe_machine(BPFTOOL, C_COMPILER)
    foreign = len(list(ProgramReader().program_ids()))
    _say(f"kstat bench ({'quick' if quick else 'full'}) {timestamp}")
    _say(f"  {machine.cpu_model}, {machine.online_cpus} CPUs online, {machine.kernel}, {machine.python}")
    _say(f"  {machine.bpftool}; load average {machine.load_average_at_start}")
    _say(f"  programs already loaded by others: {foreign}")
    if go_tool_path:
        _say(f"  beside the Go collect-kernel-stats tool: {tools[-1].command[0]}")

    with tempfile.TemporaryDirectory(prefix="kstat-bench-") as scratch_name, ProgramSet() as programs:
        scratch = Path(scratch_name)
        tools = _installed(scratch, tools)
        observer = _observer_effect(plan)
        programs.resize(STEADY_PROGRAMS)
        steady_states = _steady_states(plan, scratch)
        floor = SnapshotFloor(scratch, C_COMPILER)
        interval_costs = _interval_costs(plan, scratch, programs, floor)
        programs.resize(STEADY_PROGRAMS)
        interval_work = _interval_work(plan, machine.online_cpus)
        bpftool = Bpftool(BPFTOOL, scratch)
        _say("\n== one full snapshot of every program (medians), the kernel's stats on ==")
        _say(f"  bpftool reads owner pids (BPF iterator over all tasks' files): {bpftool.reads_owner_pids()}")
        sizes: list[SizeResult] = []
        # On, as during every window: the kernel then times each run of kstat's iterator too.
        with runtime_stats_enabled():
            for size in plan.sizes:
                programs.resize(size)
                result = SizeResult.of(
                    size,
                    measure_kstat(
                        plan.kstat_repetitions(size), plan.bpftool_process_runs, BPFTOOL, tools[0].command
                    ),
                    floor.measure(plan.floor_passes),
                    bpftool.measure(
                        plan.bpftool_passes(size), plan.bpftool_trials, plan.bpftool_process_runs
                    ),
                )
                sizes.append(result)
                _print_size(result, foreign)
            iterator_floor = measure_iterator_floor(plan.kstat_repetitions(plan.sizes[-1]))
            _print_iterator_floor(iterator_floor, sizes[-1])
            in_turn = measure_in_turn(floor, plan.in_turn_rounds, plan.kstat_repetitions(plan.sizes[-1]))
            _print_in_turn(in_turn)
        breakdown = measure_breakdown(scratch, plan.breakdown_repetitions)
        windows = _windows(plan, scratch, programs, tools)
    _print_slopes(slopes(sizes))
    _print_breakdown(breakdown, sizes[-1])
    _print_scrape(measure_scrape())
    targets = judge(sizes, steady_states, interval_costs, windows, iterator_floor, in_turn=in_turn)
    _print_targets(targets)
    results = BenchResults(
        timestamp=timestamp,
        quick=quick,
        machine=machine,
        foreign_programs_at_start=foreign,
        method=METHOD,
        sizes=tuple(sizes),
        slopes=slopes(sizes),
        steady_states=tuple(steady_states),
        interval_costs=interval_costs,
        interval_work=interval_work,
        observer_effect=observer,
        breakdown=breakdown,
        targets=targets,
        windows=windows,
        go_tool=None if len(tools) == 1 else tools[-1].command[0],
        iterator_floor=iterator_floor,
        in_turn=in_turn,
    )
    path = write_json(results, RESULTS_DIRECTORY)
    _say(f"\nresults: {path}")
    return 0


def _print_in_turn(found: InTurn) -> None:
    _say(
        f"  kstat's iterator pass and the C floor in turn at {found.programs_seen} programs "
        f"(floor, kstat, floor; stats on), {len(found.rounds)} rounds:"
    )
    for number, one in enumerate(found.rounds, 1):
        seen = found.programs_seen
        _say(
            f"    round {number}: floor {one.floor_before.median_ns / 1e3 / seen:.2f} then "
            f"{one.floor_after.median_ns / 1e3 / seen:.2f} us/program, kstat "
            f"{one.iterator.median_ns / 1e3 / seen:.3f}: {one.ratio:.3f}x"
        )
    _say(f"    median {found.median_ratio:.3f}x [{min(found.ratios):.3f}-{max(found.ratios):.3f}]")


def _print_iterator_floor(found: IteratorFloor, largest: SizeResult) -> None:
    floor = largest.microseconds_per_program["C floor"]
    _say(f"  the iterator's walk at {found.programs_seen} programs, before any decoding (stats on):")
    for name, timing in found.walks.items():
        per_program = timing.median_ns / 1e3 / found.programs_seen
        _say(
            f"    {name:<24} {timing.median_ns / 1e6:7.2f} ms ({per_program:5.2f} us/program, "
            f"{per_program / floor:.3f}x the C floor)"
        )


def _observer_effect(plan: Plan) -> ObserverEffect:
    _say("\n== observer effect: what the stats cost the programs measured ==")
    effect = measure_observer_effect(plan.observer_packets, plan.observer_rounds, plan.test_run_repeat)
    if effect.stats_were_enabled_elsewhere:
        _say("  WARNING: another process held the stats on: the 'off' rounds were not off")
    _say(
        f"  loopback UDP through a socket filter: {effect.packets_per_s_off:,.0f} packets/s stats off, "
        f"{effect.packets_per_s_on:,.0f} on: {effect.overhead_per_packet_ns:+.0f} ns per packet"
    )
    _say(
        f"  BPF_PROG_TEST_RUN x{effect.test_run_repeat:,}: {effect.test_run_wall_off.median_ns:.1f} ns "
        f"per run off, {effect.test_run_wall_on.median_ns:.1f} on (kernel's own timing "
        f"{effect.test_run_kernel_off.median_ns:.0f} / {effect.test_run_kernel_on.median_ns:.0f}): "
        f"accounting costs {effect.accounting_overhead_per_run_ns:.1f} ns per run"
    )
    _say(
        f"  run_time_ns / run_cnt reported by the kernel while on: {effect.kernel_run_time_ns_per_run:.1f} ns"
    )
    return effect


def _installed(scratch: Path, tools: Sequence[Tool]) -> tuple[Tool, ...]:
    """kstat as `pip install .` puts it (a console script in a fresh virtualenv), not this
    checkout's editable install: that is what users launch (the whole windows and `kstat
    list` run it)."""
    try:
        return tuple(installed_kstat(scratch) if tool.name == KSTAT else tool for tool in tools)
    except (OSError, subprocess.CalledProcessError) as error:
        _say(f"  WARNING: no regular install of kstat ({error}): this tree's `python -m kstat` instead")
        return tuple(tools)


def _windows(
    plan: Plan, scratch: Path, programs: ProgramSet, tools: Sequence[Tool]
) -> tuple[SideBySide, ...]:
    names = " beside ".join(tool.name for tool in tools)
    _say(f"\n== whole windows of the command ({names}), located by time-stamped traffic ==")
    if len(tools) == 1:
        _say("  (GO_TOOL=path adds the Go collect-kernel-stats tool beside it: BENCHMARKS.md)")
    launcher = Launcher(scratch, C_COMPILER)
    _say(f"  kstat: {' '.join(tools[0].command)}")
    found = []
    for size in plan.window_sizes:
        programs.resize(size)
        side_by_side = measure_side_by_side(
            tools,
            launcher,
            programs,
            scratch,
            duration_s=plan.window_duration_s,
            repetitions=plan.window_repetitions,
            say=_say,
        )
        for line in describe(side_by_side):
            _say(line)
        found.append(side_by_side)
    return tuple(found)


def _print_size(result: SizeResult, foreign: int) -> None:
    kstat, bpftool = result.kstat, result.bpftool
    per_program = result.microseconds_per_program
    _say(f"  {result.programs_seen} programs ({result.programs_loaded} loaded by the bench):")
    if result.programs_seen != result.programs_loaded + foreign:
        # Someone else is loading or unloading programs: the machine is not quiet.
        others = result.programs_seen - result.programs_loaded
        _say(f"    WARNING: {others} programs of others loaded now, {foreign} at the start")
    for tool, time_ns in result.times_ns().items():
        _say(f"    {tool:20s} {_ms(time_ns):>10} ({per_program[tool]:5.2f} us/program)")
    _say(
        f"    kstat's first pass (attribution of every program) {_ms(kstat.first_take_blocking_ns)}; "
        f"one whole bpftool process {_ms(bpftool.process_wall.median_ns)}"
    )
    if kstat.list_process_wall is not None:
        beside = kstat.bpftool_process_wall_alongside or bpftool.process_wall
        _say(
            f"    one whole `kstat list --json` {_ms(kstat.list_process_wall.median_ns)} "
            f"({kstat.list_process_wall.median_ns / beside.median_ns:.2f}x a whole "
            f"`bpftool --json prog show`, {_ms(beside.median_ns)} in turn with it)"
        )
    _say(
        f"    kstat/C {result.kstat_over_floor:.2f}x, kstat/bpftool {result.kstat_over_bpftool:.2f}x "
        f"(against a whole bpftool process {result.kstat_over_bpftool_process:.2f}x)"
    )


def _steady_states(plan: Plan, scratch: Path) -> list[SteadyState]:
    _say(f"\n== steady state: the kstat command sampling {STEADY_PROGRAMS} programs ==")
    runs: list[tuple[float, float, tuple[str, ...]]] = [
        (plan.steady_duration_s, interval_s, BOTH_SINKS) for interval_s in plan.steady_intervals_s
    ]
    runs += [(plan.sink_variant_duration_s, 1.0, sinks) for sinks in SINK_VARIANTS]
    states = []
    for duration_s, interval_s, sinks in runs:
        state = measure_steady_state(scratch, duration_s, interval_s, sinks)
        states.append(state)
        sink_names = " + ".join(sinks) or "report only"
        _say(
            f"  {sink_names:14s} every {interval_s * 1000:4g} ms for {duration_s:g} s: "
            f"{state.steady_cpu_percent:5.2f}% of one CPU in steady state "
            f"(over {state.steady_seconds_measured:.1f} s); whole process {state.total_cpu_s:.2f} s CPU "
            f"in {state.total_wall_s:.1f} s; peak RSS {state.peak_rss_bytes / 1e6:.1f} MB; "
            f"{state.snapshots} snapshots"
        )
    return states


def _interval_costs(
    plan: Plan, scratch: Path, programs: ProgramSet, floor: SnapshotFloor
) -> tuple[IntervalCost, ...]:
    """What an interval with NDJSON and StatsD costs the command at each size; beside the same
    for a baseline checkout (BENCH_BASELINE=DIR, a kstat tree with its own .venv) when given.
    With busy programs, the C floor's pass is measured on the same programs under the same
    traffic right before and after the window (the stats on): the traffic slows every reader's
    syscalls (20-25 % here), the floor's as much as kstat's."""
    baseline_dir = os.environ.get("BENCH_BASELINE", "")
    baseline = Path(baseline_dir).resolve() if baseline_dir else None
    if baseline is not None and not (baseline / ".venv" / "bin" / "python").exists():
        raise SystemExit(f"bench: BENCH_BASELINE={baseline_dir} has no .venv/bin/python")
    label = f"against {baseline}" if baseline else "(BENCH_BASELINE=DIR adds a baseline revision)"
    _say(f"\n== one interval with NDJSON + StatsD at 1 s, {plan.steady_duration_s:g} s windows {label} ==")
    costs = []
    for size in plan.interval_cost_sizes:
        programs.resize(size)
        this = measure_steady_state(scratch, plan.steady_duration_s, 1.0, BOTH_SINKS)
        before = (
            measure_steady_state(scratch, plan.steady_duration_s, 1.0, BOTH_SINKS, checkout=baseline)
            if baseline is not None
            else None
        )
        costs.append(IntervalCost(size, this, before))
        _say(_interval_cost_line(costs[-1]))
        # Issue 28's: one in 50 of them busy (200 at 10,000), with steady traffic all along.
        busy = [LoopbackTarget(program) for program in spread(programs.loaded, size // BUSY_SHARE)]
        traffic = TimedTraffic([], busy, BUSY_RUNS_PER_S * len(busy))
        try:
            traffic.start()
            floors = [_floor_cpu_ns(floor, plan.floor_passes)]
            with_busy = measure_steady_state(scratch, plan.steady_duration_s, 1.0, BOTH_SINKS)
            floors.append(_floor_cpu_ns(floor, plan.floor_passes))
        finally:
            traffic.stop()
            for target in busy:
                target.close()
        costs.append(
            IntervalCost(size, with_busy, None, busy_programs=len(busy), floor_cpu_ns=sum(floors) / 2)
        )
        _say(_interval_cost_line(costs[-1]))
    return tuple(costs)


def _floor_cpu_ns(floor: SnapshotFloor, passes: int) -> float:
    """The C floor's CPU time for one pass (median), the stats on."""
    with runtime_stats_enabled():
        found = floor.measure(passes)
    return (found.cpu_per_pass or found.per_pass).median_ns


def _interval_cost_line(cost: IntervalCost) -> str:
    this, before, size = cost.this, cost.baseline, cost.programs
    line = (
        f"  {size:>6} programs, {cost.busy_programs:>3} busy: "
        f"this {IntervalCost.milliseconds(this):6.2f} ms per interval"
    )
    if before is not None:
        ratio = IntervalCost.milliseconds(this) / IntervalCost.milliseconds(before)
        line += f", baseline {IntervalCost.milliseconds(before):6.2f} ms ({ratio:.2f}x)"
    if cost.floor_cpu_ns is not None:
        line += f" (C floor under the same traffic {cost.floor_cpu_ns / 1e6:.2f} ms of CPU)"
    return line + f"; peak RSS {this.peak_rss_bytes / 1e6:.1f} MB"


def _interval_work(plan: Plan, online_cpus: int) -> IntervalWork:
    work = measure_interval_work(plan.interval_work_repetitions, online_cpus)
    pieces = {
        "pass, attribution and delta (take_blocking)": work.take_blocking,
        "summary.observe": work.summary_observe,
        "NDJSON interval line (dict + json.dumps)": work.ndjson_interval_line,
        "StatsD lines and datagrams": work.statsd_lines,
        "every program ran: the delta": work.busy_delta,
        "every program ran: NDJSON line": work.busy_ndjson_interval_line,
        "every program ran: StatsD lines": work.busy_statsd_lines,
    }
    _say(f"  where an interval goes, in process ({work.programs_seen} programs; per program per interval):")
    for piece, timing in pieces.items():
        _say(f"    {piece:44s} {timing.median_ns / work.programs_seen / 1e3:6.3f} us")
    _say(f"    StatsD lines in a steady interval (idle programs left out): {work.statsd_lines_per_interval}")
    return work


def _print_slopes(found: tuple[Slope, ...]) -> None:
    _say("\n== cost per added program (slope between sizes) ==")
    for slope in found:
        _say(
            f"  {slope.tool:20s} {slope.from_programs:>6} -> {slope.to_programs:<6} "
            f"{slope.microseconds_per_program:6.2f} us/program"
        )


def _print_breakdown(breakdown: Breakdown, largest: SizeResult) -> None:
    passes = {
        "C floor (the 4 syscalls)": largest.floor.per_pass,
        "same syscalls, kstat's ctypes plumbing": breakdown.kstat_plumbing_pass,
        "same, ctypes args prebuilt, no memset": breakdown.lean_plumbing_pass,
        "kstat id walk alone (program_ids)": breakdown.kstat_id_walk,
        "kstat ProgramReader.read_all": breakdown.kstat_read_all,
        "kstat Attributor.details_for (steady)": breakdown.attributor_details_for,
        "kstat SnapshotTaker.take_blocking": largest.kstat.take_blocking,
        "what-if: C pass + a ProgramStats each": breakdown.compiled_pass_with_objects,
    }
    _say(f"\n== where kstat's time per program goes ({breakdown.programs_seen} programs) ==")
    for layer, timing in passes.items():
        _say(f"  {layer:40s} {timing.median_ns / breakdown.programs_seen / 1e3:6.2f} us/program")
    _say(
        f"  per call: ctypes foreign call {breakdown.foreign_call_overhead_ns:.0f} ns over os.getpid; "
        f"a bpf(2) as kstat calls it {breakdown.bpf_call_as_kstat_ns:.0f} ns, prebuilt args "
        f"{breakdown.bpf_call_unconverted_ns:.0f} ns; memset {breakdown.memset_ns:.0f} ns, "
        f"memoryview zeroing {breakdown.memoryview_zero_ns:.0f} ns; ProgramStats() "
        f"{breakdown.program_stats_new_ns:.0f} ns; .identity {breakdown.program_identity_ns:.0f} ns"
    )


def _print_scrape(found: ScrapeResult) -> None:
    """The Prometheus endpoint at 10,000 programs (issue 30's target: under 100 ms a scrape,
    at most the documented series a program)."""
    per_program = (found.series - _OWN_SERIES_AT_MOST) / found.programs
    fast = found.scrape_max_ms < 100
    within = per_program <= found.series_per_program_budget
    _say(
        f"\n== the Prometheus endpoint at {found.programs:,} programs (OpenMetrics, gzip, like Prometheus) =="
    )
    _say(
        f"  series {found.series:,} ({per_program:.2f} a program, budget {found.series_per_program_budget}): "
        f"{'PASS' if within else 'FAIL'}"
    )
    _say(
        f"  body {found.body_bytes / 1e6:.1f} MB, {found.gzip_bytes / 1e6:.2f} MB gzipped; rendered once "
        f"per interval in {found.render_s * 1000:.0f} ms on the sink's own thread"
    )
    _say(
        f"  scrape p50 {found.scrape_p50_ms:.1f} ms, max {found.scrape_max_ms:.1f} ms (target < 100 ms): "
        f"{'PASS' if fast else 'FAIL'}"
    )


def _print_targets(targets: tuple[Target, ...]) -> None:
    for issue, title in ((7, "targets (issue 7)"), (28, "issue 28's done when (10,000 programs, stats on)")):
        _say(f"\n== {title} ==")
        for target in targets:
            if target.issue == issue:
                verdict = "met    " if target.passed else "NOT MET"
                _say(f"  {verdict}  {target.name}: {target.measured} (target {target.limit})")


def entry_point() -> None:
    try:
        status = main()
    except KeyboardInterrupt:
        # Everything is unloaded by now: the `with` blocks closed on the way out.
        _say("\nbench: interrupted")
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
