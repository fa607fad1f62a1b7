"""One window of each tool on the same programs and traffic: kstat, and the Go
collect-kernel-stats tool beside it when `GO_TOOL=path` names a build of it (BENCHMARKS.md says
how to build one; its code is never in this repository).

Each run is the tool's own command line, `-duration D -output FILE` (both tools spell it so),
as a child process, measured from outside:

- CPU: user + system time of the whole process, start-up and report included, and its peak
  RSS: its rusage, from a small launcher (bench/launcher.c) that also says when it launched it
  and when it exited;
- launch to baseline, packets missed right after launch, the window's true span and so the
  rates' error: from the time-stamped probes (`bench.traffic`), the rate error being the true
  span over the duration the report divides by, less one (positive: rates overstated);
- window end to report written: from the final read, placed by the late probe, to the report
  file's modification time (the kernel's coarse clock: up to a tick, 4 ms, early), and to the
  process's exit.

Runs alternate between the tools, so that drift on a shared machine favours neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from bench.programs import ProgramSet, spread
from bench.snapshot import COMPILE_FLAGS
from bench.traffic import NS_PER_S, ProbePair, TimedTraffic, sent_between
from kstat.testing.loader import LoopbackTarget, SocketFilter

KSTAT: Final = "kstat"
GO_TOOL: Final = "Go tool"
# The traffic: timed packets at about 8,500 a second (a place every 0.12 ms), to the
# probes read last; the pair read first needs less (its reads' places only set its span).
PROBE_RATE_PER_S: Final = 8_500
FIRST_PROBE_RATE_PER_S: Final = 2_000
# Busy programs: one in fifty, each run 20 times a second.
BUSY_SHARE: Final = 50
BUSY_RUNS_PER_S: Final = 20
_POLL_S: Final = 0.05
# Start-up, a report of 10,000 programs and a loaded machine, on top of the window.
_EXTRA_WAIT_S: Final = 90.0
CHECKOUT: Final = Path(__file__).resolve().parent.parent


@frozen
class Tool:
    name: str
    command: tuple[str, ...]

    def argv(self, duration_s: float, output: Path) -> list[str]:
        return [*self.command, "-duration", f"{duration_s:g}s", "-output", str(output)]


def kstat_tool(checkout: Path | None = None) -> Tool:
    """This tree's kstat (or another checkout's, run by its own .venv)."""
    python = sys.executable if checkout is None else str(checkout / ".venv" / "bin" / "python")
    return Tool(KSTAT, (python, "-m", "kstat"))


def installed_kstat(directory: Path, checkout: Path = CHECKOUT) -> Tool:
    """This tree's kstat as users get it (README: `pip install .`): a regular install into a
    fresh virtualenv, run by the `kstat` console script. Not the dev tree's editable install
    run by `python -m kstat`, whose start-up is another program's: its .pth finder imports
    pathlib, urllib and more before kstat's first line, and a tree without compiled bytecode
    (PYTHONDONTWRITEBYTECODE) compiles every module at every launch. The dependencies come
    from pip's configured index (or its cache), as a user's would."""
    venv = directory / "kstat-venv"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(checkout)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Tool(KSTAT, (str(venv / "bin" / "kstat"),))


def go_tool(path: str) -> Tool:
    found = Path(path)
    if not (found.is_file() and os.access(found, os.X_OK)):
        raise SystemExit(f"bench: GO_TOOL={path} is not an executable file")
    return Tool(GO_TOOL, (str(found.resolve()),))


@frozen
class WindowRun:
    tool: str
    programs_loaded: int
    busy_programs: int
    # The report's num_programs (the Go tool's counts distinct names).
    programs_reported: int
    cpu_s: float
    # The processes' peak RSS summed (kstat: its own and its counter clock's), and the same with
    # the pages they share counted once (the clock's private peak added to kstat's own).
    peak_rss_bytes: int
    # Launch to the baseline read of the programs read last (the baseline complete), and from
    # the bench's first program's read to its last's.
    launch_to_baseline_s: float
    baseline_pass_s: float
    # How precisely the probes place each read (half the gap between two sends).
    baseline_uncertainty_s: float
    final_uncertainty_s: float
    # Packets sent to the last-read early probe after launch and before its baseline read.
    packets_missed_after_launch: int
    probe_rate_per_s: int
    # From the final read to the report file's modification time (the kernel's coarse clock,
    # up to a tick early), and to the process's exit.
    window_end_to_report_s: float
    window_end_to_exit_s: float
    # What the report divides by, the true span between the reads of the programs read last
    # and of those read first, and the rates' error over each.
    reported_duration_s: float
    true_span_s: float
    true_span_first_s: float
    rate_error_percent: float
    rate_error_first_percent: float
    wall_s: float
    peak_memory_bytes: int = 0


def _counted(report: dict[str, Any], program_id: int) -> int:
    for line in report["program_stats"].values():
        if line["id"] == program_id:
            return int(line["run_count"])
    raise RuntimeError(f"the report has no program {program_id} (a probe)")


LAUNCHER_SOURCE: Final = Path(__file__).with_name("launcher.c")


@frozen
class Launched:
    """What bench/launcher.c says of one run of a command."""

    exit_status: int
    launched_ns: int
    exited_ns: int
    cpu_s: float
    # The command's peak and its children's while they ran (each its own peak: an upper bound
    # of what they held at once).
    peak_rss_bytes: int
    children_peak_rss_bytes: int = 0
    # The children's peak private memory (what their RSS holds that no other process maps: not
    # the interpreter's and libraries' file pages, which the command's RSS counts already).
    children_peak_private_bytes: int = 0


class Launcher:
    """bench/launcher.c, compiled with `cc -O2` into a directory the caller owns: it runs a
    command as its child and says when it started and ended, its CPU time and its peak RSS."""

    def __init__(self, directory: Path, compiler: str = "cc") -> None:
        self.executable = directory / "launcher"
        self._result = directory / "launcher-result.json"
        subprocess.run(
            [compiler, *COMPILE_FLAGS, "-o", str(self.executable), str(LAUNCHER_SOURCE)], check=True
        )

    def run(self, command: list[str], log: Path, timeout_s: float) -> Launched:
        self._result.unlink(missing_ok=True)
        with log.open("w") as log_file:
            # A session of its own: on a timeout, the command goes with the launcher.
            process = subprocess.Popen(
                [str(self.executable), str(self._result), *command],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            # The command's own children's peaks, read while they run (kstat's counter clock is a
            # process of its own): the launcher's wait4 gives the largest process's peak only.
            children_peaks: dict[int, int] = {}
            children_private: dict[int, int] = {}
            deadline = time.monotonic() + timeout_s
            while process.poll() is None:
                if time.monotonic() > deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    raise RuntimeError(f"{command[0]} ran over {timeout_s:g} s; its log: {log}")
                for launched in _children(process.pid):
                    for child in _children(launched):
                        children_peaks[child] = max(children_peaks.get(child, 0), _peak_rss_bytes(child))
                        children_private[child] = max(children_private.get(child, 0), _private_bytes(child))
                time.sleep(_CHILDREN_POLL_S)
        if process.returncode != 0:
            raise RuntimeError(f"the launcher failed ({process.returncode}); its log: {log}")
        found = json.loads(self._result.read_text())
        return Launched(
            exit_status=os.waitstatus_to_exitcode(found["wait_status"]),
            launched_ns=found["launched_ns"],
            exited_ns=found["exited_ns"],
            cpu_s=(found["user_us"] + found["system_us"]) / 1e6,
            # ru_maxrss is in KiB on Linux.
            peak_rss_bytes=found["max_rss_kib"] * 1024 + sum(children_peaks.values()),
            children_peak_rss_bytes=sum(children_peaks.values()),
            children_peak_private_bytes=sum(children_private.values()),
        )


_CHILDREN_POLL_S: Final = 0.02


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for listing in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found += [int(child) for child in listing.read_text().split()]
    return found


def _peak_rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _private_bytes(pid: int) -> int:
    """The process's private pages now (smaps_rollup's Private_Clean and Private_Dirty)."""
    found = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                found += int(line.split()[1]) * 1024
    return found


def _error_percent(span_ns: int, reported_ns: int) -> float:
    """The rates' error: a report's rates divide by `reported_ns`, the counters' by `span_ns`."""
    return (span_ns / reported_ns - 1) * 100 if reported_ns else float("nan")


def measure_window(
    tool: Tool,
    launcher: Launcher,
    scratch: Path,
    first: tuple[SocketFilter, LoopbackTarget, SocketFilter, LoopbackTarget],
    busy: Sequence[LoopbackTarget],
    *,
    programs_loaded: int,
    duration_s: float,
    tag: str,
) -> WindowRun:
    """One `-duration` window of `tool` while the probes and the busy programs get traffic;
    `first`: the early and late probes read first (the bench's first two programs)."""
    output, log = scratch / f"window-{tag}.json", scratch / f"window-{tag}.log"
    first_early_program, first_early, first_late_program, first_late = first
    # Loaded now, after everything else: the highest ids, read last by a walk in id order.
    with (
        SocketFilter("kbench_probe_a") as early_program,
        SocketFilter("kbench_probe_b") as late_program,
        LoopbackTarget(early_program) as early,
        LoopbackTarget(late_program) as late,
    ):
        last_pair = ProbePair(early, late, PROBE_RATE_PER_S)
        first_pair = ProbePair(first_early, first_late, FIRST_PROBE_RATE_PER_S)
        traffic = TimedTraffic([last_pair, first_pair], busy, BUSY_RUNS_PER_S * len(busy))
        traffic.start()
        # The wall clock's offset, to place the report file's modification time.
        realtime_offset_ns = time.time_ns() - time.monotonic_ns()
        traffic.switch_at(time.monotonic_ns() + round(duration_s / 2 * NS_PER_S))
        try:
            launched = launcher.run(tool.argv(duration_s, output), log, duration_s + _EXTRA_WAIT_S)
        finally:
            traffic.stop()
        ids = (early_program.id, late_program.id, first_early_program.id, first_late_program.id)
    if launched.exit_status != 0:
        raise RuntimeError(f"{tool.name} exited with {launched.exit_status}; its log: {log}")
    launched_ns = launched.launched_ns
    report = json.loads(output.read_text())
    early_id, late_id, first_early_id, first_late_id = ids
    baseline = last_pair.baseline(_counted(report, early_id))
    final = last_pair.final(_counted(report, late_id))
    first_baseline = first_pair.baseline(_counted(report, first_early_id))
    first_final = first_pair.final(_counted(report, first_late_id))
    reported_ns = int(report["collection_duration_ns"])
    true_span_ns = final.at_ns - baseline.at_ns
    first_span_ns = first_final.at_ns - first_baseline.at_ns
    written_ns = output.stat().st_mtime_ns - realtime_offset_ns
    return WindowRun(
        tool=tool.name,
        programs_loaded=programs_loaded,
        busy_programs=len(busy),
        programs_reported=int(report["num_programs"]),
        cpu_s=launched.cpu_s,
        peak_rss_bytes=launched.peak_rss_bytes,
        peak_memory_bytes=(
            launched.peak_rss_bytes - launched.children_peak_rss_bytes + launched.children_peak_private_bytes
        ),
        launch_to_baseline_s=(baseline.at_ns - launched_ns) / NS_PER_S,
        baseline_pass_s=(baseline.at_ns - first_baseline.at_ns) / NS_PER_S,
        baseline_uncertainty_s=baseline.uncertainty_ns / NS_PER_S,
        final_uncertainty_s=final.uncertainty_ns / NS_PER_S,
        packets_missed_after_launch=sent_between(last_pair.early_times_ns, launched_ns, baseline.before_ns),
        probe_rate_per_s=PROBE_RATE_PER_S,
        window_end_to_report_s=(written_ns - final.at_ns) / NS_PER_S,
        window_end_to_exit_s=(launched.exited_ns - final.at_ns) / NS_PER_S,
        reported_duration_s=reported_ns / NS_PER_S,
        true_span_s=true_span_ns / NS_PER_S,
        true_span_first_s=first_span_ns / NS_PER_S,
        rate_error_percent=_error_percent(true_span_ns, reported_ns),
        rate_error_first_percent=_error_percent(first_span_ns, reported_ns),
        wall_s=(launched.exited_ns - launched_ns) / NS_PER_S,
    )


@frozen
class Spread:
    """A figure over the runs: median, lowest and highest."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(float(statistics.median(values)), float(min(values)), float(max(values)))


@frozen
class SideBySide:
    """Every run at one size, by tool; kstat's first."""

    programs_loaded: int
    busy_programs: int
    duration_s: float
    runs: dict[str, tuple[WindowRun, ...]]

    def spread(self, tool: str, figure: Callable[[WindowRun], float]) -> Spread:
        return Spread.of([figure(run) for run in self.runs[tool]])


def measure_side_by_side(
    tools: Sequence[Tool],
    launcher: Launcher,
    programs: ProgramSet,
    scratch: Path,
    *,
    duration_s: float,
    repetitions: int,
    say: Callable[[str], None],
) -> SideBySide:
    """`repetitions` windows of each tool at the programs loaded now, alternating tools."""
    loaded = len(programs)
    if loaded < 3:
        raise ValueError("the windows need at least 3 programs loaded (2 probes and a busy one)")
    first_early, first_late, *others = programs.loaded
    first = (first_early, LoopbackTarget(first_early), first_late, LoopbackTarget(first_late))
    busy = [LoopbackTarget(program) for program in spread(others, max(1, loaded // BUSY_SHARE))]
    runs: dict[str, list[WindowRun]] = {tool.name: [] for tool in tools}
    try:
        for repetition in range(repetitions):
            # Which tool goes first alternates too.
            order = tools if repetition % 2 == 0 else tuple(reversed(tools))
            for tool in order:
                tag = f"{loaded}-{tool.name.replace(' ', '-')}-{repetition}"
                run = measure_window(
                    tool,
                    launcher,
                    scratch,
                    first,
                    busy,
                    programs_loaded=loaded,
                    duration_s=duration_s,
                    tag=tag,
                )
                runs[tool.name].append(run)
                say(
                    f"    {tool.name} run {repetition + 1}: CPU {run.cpu_s:.2f} s, "
                    f"RSS {run.peak_rss_bytes / 2**20:.0f} MiB, baseline {run.launch_to_baseline_s:.3f} s, "
                    f"report {run.window_end_to_report_s:+.3f} s, rates {run.rate_error_first_percent:+.2f} "
                    f"to {run.rate_error_percent:+.2f} %"
                )
    finally:
        for target in (first[1], first[3], *busy):
            target.close()
    return SideBySide(loaded, len(busy), duration_s, {name: tuple(found) for name, found in runs.items()})


# (what, the figure, its number's format, its unit, whether kstat's over the Go tool's means much)
_FIGURES: Final[tuple[tuple[str, Callable[[WindowRun], float], str, str, bool], ...]] = (
    ("CPU for the whole window", lambda run: run.cpu_s, "{:.3f}", "s", True),
    ("peak RSS", lambda run: run.peak_rss_bytes / 2**20, "{:.1f}", "MiB", True),
    ("peak memory, shared pages once", lambda run: run.peak_memory_bytes / 2**20, "{:.1f}", "MiB", True),
    ("launch to baseline read", lambda run: run.launch_to_baseline_s, "{:.3f}", "s", True),
    ("baseline, first to last read", lambda run: run.baseline_pass_s, "{:.3f}", "s", True),
    ("packets missed after launch", lambda run: run.packets_missed_after_launch, "{:,.0f}", "", True),
    ("window end to report written", lambda run: run.window_end_to_report_s, "{:.3f}", "s", False),
    ("window end to exit", lambda run: run.window_end_to_exit_s, "{:.3f}", "s", False),
    ("rate error, programs read first", lambda run: run.rate_error_first_percent, "{:+.2f}", "%", False),
    ("rate error, programs read last", lambda run: run.rate_error_percent, "{:+.2f}", "%", False),
)


def describe(found: SideBySide) -> list[str]:
    """The figures as lines: each tool's median [lowest-highest], and kstat's over the Go tool's."""
    tools = list(found.runs)
    repetitions = len(found.runs[tools[0]])
    beside = "  kstat/Go" if len(tools) > 1 else ""
    # Every program on the host, as kstat's reports count them: others' programs change the
    # figures, and the machine is shared.
    reported = sorted(run.programs_reported for run in found.runs.get(KSTAT, ()))
    on_host = f"; {reported[0]:,}-{reported[-1]:,} on the host" if reported else ""
    lines = [
        f"  {found.programs_loaded:,} programs loaded by the bench ({found.busy_programs} busy{on_host}), "
        f"{found.duration_s:g} s windows, {repetitions} run{'s' if repetitions > 1 else ''} each: "
        "median [lowest-highest]",
        f"    {'':30s}" + "".join(f"{tool:>28s}" for tool in tools) + beside,
    ]
    for what, figure, number, unit, ratio in _FIGURES:
        cells = []
        for tool in tools:
            values = found.spread(tool, figure)
            low, high = number.format(values.low), number.format(values.high)
            cells.append(f"{number.format(values.median)} [{low}-{high}] {unit}".rstrip())
        line = f"    {what:30s}" + "".join(f"{cell:>28s}" for cell in cells)
        if len(tools) > 1 and ratio:
            go = found.spread(GO_TOOL, figure).median
            line += f"  {found.spread(KSTAT, figure).median / go:7.2f}x" if go else "        -"
        lines.append(line)
    return lines
