"""`python -m bench.steady_interval`: issue 28's steady interval alone, measured cleanly.

The whole command (`kstat` with NDJSON and StatsD at 1 s) over 10,000 programs the bench loads,
200 of them busy with steady traffic, its CPU between two points of one long window (as
`bench.steady` measures it), against the C floor's single snapshot taken on the same programs
(the kernel's stats on) right before and after each window: the CPU time of a pass, as the
command's figure is CPU time (on a loaded host a pass's wall time counts the waits for a CPU
too; it is said beside). Programs loaded by others are
counted before, during (the report's count) and after each window and said with every figure:
a window that did not see exactly the programs it claims says so, and its floor is the one
measured on the same set.

`--baseline DIR` (a kstat tree with its own `.venv`) alternates windows of that tree with this
one's on the same programs, for a before/after comparison (medians, ranges and a rank test);
`--stages N` times the interval's stages in process (`bench.interval_stages`) too, and
`--profile FILE` writes their cProfile. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from attrs import asdict, frozen

from bench.go_tool import BUSY_RUNS_PER_S, BUSY_SHARE
from bench.interval_stages import STAGES, measure_interval_stages
from bench.measure import describe_machine
from bench.programs import ProgramSet, raise_open_file_limit, spread
from bench.snapshot import SnapshotFloor
from bench.steady import SteadyState, measure_steady_state
from bench.traffic import TimedTraffic
from kstat.analysis.significance import Sample, rank_test
from kstat.sources.stats_switch import runtime_stats_enabled
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import LoopbackTarget

FLOOR_PASSES: Final = 21
_SPARE_FDS: Final = 1024


@frozen
class FloorReading:
    programs_seen: int
    # A pass's CPU time (what the command's CPU per interval is set against) and wall time.
    median_ns: float
    wall_median_ns: float


@frozen
class Window:
    tree: str
    # Programs loaded by others: counted before the window, and after it.
    foreign_before: int
    foreign_after: int
    # The programs kstat's report counted (every program it saw in the window).
    programs_reported: int
    floor_before: FloorReading
    floor_after: FloorReading
    steady: SteadyState

    @property
    def interval_ms(self) -> float:
        return self.steady.steady_cpu_percent / 100 * self.steady.interval_s * 1e3

    @property
    def floor_ms(self) -> float:
        return (self.floor_before.median_ns + self.floor_after.median_ns) / 2 / 1e6

    @property
    def floor_wall_ms(self) -> float:
        return (self.floor_before.wall_median_ns + self.floor_after.wall_median_ns) / 2 / 1e6

    @property
    def clean(self) -> bool:
        """Only the bench's programs, before, during and after."""
        return self.foreign_before == 0 and self.foreign_after == 0


def _say(text: str = "") -> None:
    print(text, flush=True)


def _floor(floor: SnapshotFloor) -> FloorReading:
    with runtime_stats_enabled():
        found = floor.measure(FLOOR_PASSES)
    assert found.cpu_per_pass is not None
    return FloorReading(found.programs_seen, found.cpu_per_pass.median_ns, found.per_pass.median_ns)


def _window(
    tree: str, checkout: Path | None, scratch: Path, floor: SnapshotFloor, *, ours: int, duration_s: float
) -> Window:
    foreign_before = _loaded() - ours
    before = _floor(floor)
    steady = measure_steady_state(scratch, duration_s, 1.0, ("ndjson", "statsd"), checkout=checkout)
    after = _floor(floor)
    foreign_after = _loaded() - ours
    return Window(tree, foreign_before, foreign_after, steady.programs_seen, before, after, steady)


def _loaded() -> int:
    return sum(1 for _ in ProgramReader().program_ids())


def _describe(window: Window, ours: int) -> str:
    line = (
        f"  {window.tree:8s} {window.interval_ms:6.2f} ms an interval "
        f"(over {window.steady.steady_seconds_measured:.1f} s); floor {window.floor_ms:6.2f} ms of CPU "
        f"({window.interval_ms / window.floor_ms:.2f}x; {window.floor_wall_ms:.2f} ms wall); "
        f"report: {window.programs_reported} programs"
    )
    if window.clean and window.programs_reported == ours:
        return line
    return line + (
        f"; NOT CLEAN: {window.foreign_before} programs of others before, {window.foreign_after} after "
        f"(floor on {window.floor_before.programs_seen} / {window.floor_after.programs_seen})"
    )


def _summary(label: str, values: Sequence[float]) -> str:
    return (
        f"{label}: median {statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}] "
        f"(n={len(values)})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steady_interval", description=__doc__)
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--busy", type=int, default=None, help="default: one in 50")
    parser.add_argument("--windows", type=int, default=5, help="per tree")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds a window")
    parser.add_argument("--baseline", type=Path, default=None, help="a kstat tree with its .venv")
    parser.add_argument("--stages", type=int, default=0, help="in-process intervals to time")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile of the stages")
    parser.add_argument(
        "--replayed",
        action="store_true",
        help="the stages after the read on replayed readings: the busy programs' runs, no churn",
    )
    parser.add_argument("--no-freeze", action="store_true", help="stages without gc.freeze()")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        _say("bench: needs root (it loads eBPF programs and switches the kernel's stats on)")
        return 1
    busy_count = args.busy if args.busy is not None else args.programs // BUSY_SHARE
    raise_open_file_limit(args.programs + _SPARE_FDS)
    machine = describe_machine("/usr/sbin/bpftool", "cc")
    load = machine.load_average_at_start
    _say(f"steady interval: {args.programs} programs, {busy_count} busy; load {load}")
    foreign = _loaded()
    _say(f"  programs already loaded by others: {foreign}")
    results: dict[str, Any] = {"machine": asdict(machine), "programs": args.programs, "busy": busy_count}
    with tempfile.TemporaryDirectory(prefix="kstat-steady-") as scratch_name, ProgramSet() as programs:
        scratch = Path(scratch_name)
        programs.resize(args.programs)
        floor = SnapshotFloor(scratch)
        busy = [LoopbackTarget(program) for program in spread(programs.loaded, busy_count)]
        traffic = TimedTraffic([], busy, BUSY_RUNS_PER_S * len(busy))
        try:
            traffic.start()
            if args.stages:
                with runtime_stats_enabled():
                    stages = measure_interval_stages(
                        args.stages,
                        machine.online_cpus,
                        profile_to=args.profile,
                        replayed_busy=busy_count if args.replayed else 0,
                        freeze_heap=not args.no_freeze,
                    )
                _say(
                    f"  in process, {stages.programs_seen} programs, {stages.active_programs} active, "
                    f"{stages.statsd_lines} StatsD lines, {stages.ndjson_bytes} NDJSON bytes an interval:"
                )
                for stage in STAGES:
                    timing = stages.stages[stage]
                    _say(
                        f"    {stage:20s} {timing.median_ns / 1e6:7.2f} ms "
                        f"[{timing.min_ns / 1e6:.2f}-{max(timing.samples_ns) / 1e6:.2f}]"
                    )
                _say(f"    {'total':20s} {stages.total.median_ns / 1e6:7.2f} ms")
                _say(
                    f"    of which the garbage collector {stages.collector_ns_per_interval / 1e6:.2f} ms "
                    f"({stages.collections_per_interval:.1f} collections) an interval"
                )
                results["stages"] = asdict(stages)
            trees: list[tuple[str, Path | None]] = [("this", None)]
            if args.baseline is not None:
                trees.insert(0, ("baseline", args.baseline.resolve()))
            windows: list[Window] = []
            for _ in range(args.windows):
                for tree, checkout in trees:
                    window = _window(
                        tree, checkout, scratch, floor, ours=args.programs, duration_s=args.duration
                    )
                    windows.append(window)
                    _say(_describe(window, args.programs))
        finally:
            traffic.stop()
            for target in busy:
                target.close()
    results["windows"] = [
        {**asdict(window), "interval_ms": window.interval_ms, "floor_ms": window.floor_ms}
        for window in windows
    ]
    for tree, _ in trees:
        mine = [window for window in windows if window.tree == tree]
        if not mine:
            continue
        clean = [window for window in mine if window.clean and window.programs_reported == args.programs]
        _say(f"  {tree}: {len(clean)} of {len(mine)} windows saw exactly the bench's {args.programs}")
        _say("    " + _summary("ms an interval", [window.interval_ms for window in mine]))
        _say("    " + _summary("floor ms of CPU", [window.floor_ms for window in mine]))
        _say("    " + _summary("floor ms wall", [window.floor_wall_ms for window in mine]))
        _say("    " + _summary("ratio", [window.interval_ms / window.floor_ms for window in mine]))
    if args.baseline is not None and windows:
        before = [window.interval_ms for window in windows if window.tree == "baseline"]
        after = [window.interval_ms for window in windows if window.tree == "this"]
        verdict = rank_test(Sample(tuple(before)), Sample(tuple(after)))
        change = statistics.median(after) / statistics.median(before) - 1
        _say(
            f"  this against the baseline: {change * 100:+.1f} % (medians), two-sided Mann-Whitney U "
            f"p = {verdict.p_value if verdict.p_value is not None else 'untestable'}: "
            f"{'significant' if verdict.significant else 'not significant'} at {verdict.alpha}"
        )
        results["verdict"] = {
            "change": change,
            "p_value": verdict.p_value,
            "significant": verdict.significant,
        }
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
