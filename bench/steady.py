"""Steady state: the real `kstat` command sampling for a while, its CPU time and peak memory
read from the outside (/proc/<pid>/stat and status while it runs, wait4's rusage at its end)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from attrs import frozen

_CLOCK_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")
_POLL_S: Final = 0.05
# Generous: Python start-up, the first pass (with attribution) and the report come on top.
_EXTRA_WAIT_S: Final = 60.0


@frozen
class _Sample:
    monotonic_s: float
    cpu_s: float
    peak_rss_bytes: int
    # The file whose growth marks each pass: the NDJSON output, or the log when kstat is verbose.
    watched_bytes: int


@frozen
class SteadyState:
    # Streaming sinks on, besides the JSON report written at the end.
    sinks: tuple[str, ...]
    interval_s: float
    duration_s: float
    programs_seen: int
    snapshots: int
    # user+sys CPU between the first pass seen and the last one before the window's end
    # (start-up and the final report excluded), as a share of one CPU. A pass is seen by its
    # NDJSON line or, without that sink, by its debug log line (--verbose).
    steady_cpu_percent: float
    steady_seconds_measured: float
    # The whole process, start-up and report included (wait4's rusage).
    total_cpu_s: float
    total_wall_s: float
    # VmHWM (the most RSS the process ever had), polled, and wait4's ru_maxrss.
    peak_rss_bytes: int
    exit_status: int


def _cpu_ticks(pid: int) -> int:
    """The CPU time of a process (every thread) and of its children while they run, in clock
    ticks: the command line's counter clock is a process of its own (kstat.engine.clock_process),
    whose walks are kstat's cost too, and a running child's time is in no field of its parent's
    until it is reaped."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may hold spaces: utime and
    # stime are fields 14 and 15 of the line (clock ticks, every thread of the process summed).
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                ticks += _cpu_ticks(int(child))
    return ticks


def _peak_kib(pid: int) -> int:
    """VmHWM of a process and of each of its children (each its own peak: an upper bound of
    what they held at once), in KiB."""
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                peak += _peak_kib(int(child))
    return peak


def _read_sample(pid: int, watched: Path) -> _Sample | None:
    try:
        cpu_ticks = _cpu_ticks(pid)
        peak_kib = _peak_kib(pid)
    except FileNotFoundError:
        return None
    try:
        watched_bytes = watched.stat().st_size
    except FileNotFoundError:
        watched_bytes = 0
    return _Sample(time.monotonic(), cpu_ticks / _CLOCK_TICKS_PER_S, peak_kib * 1024, watched_bytes)


def _steady_cpu(samples: list[_Sample], interval_s: float, start_margin_s: float) -> tuple[float, float]:
    """CPU share between passes: each sample that saw the watched file grow follows a pass, so
    measuring between two such samples counts whole intervals of work.

    Start-up (imports, the first pass with its attribution) is left out by starting
    `start_margin_s` after the file first grew; the last pass and the report by dropping the
    file's last growth and anything in the process's last half second.
    """
    grew = [
        current
        for previous, current in itertools.pairwise(samples)
        if current.watched_bytes > previous.watched_bytes
    ]
    if not grew:
        raise RuntimeError("kstat never wrote its output; nothing to measure")
    inside = [
        sample
        for sample in grew[:-1]
        if grew[0].monotonic_s + start_margin_s <= sample.monotonic_s <= samples[-1].monotonic_s - 0.5
    ]
    if len(inside) < 2:
        raise RuntimeError("the window is too short for a steady state; use a longer duration")
    first, last = inside[0], inside[-1]
    elapsed_s = last.monotonic_s - first.monotonic_s
    return 100 * (last.cpu_s - first.cpu_s) / elapsed_s, elapsed_s


def measure_steady_state(
    directory: Path,
    duration_s: float,
    interval_s: float,
    sinks: tuple[str, ...] = ("ndjson", "statsd"),
    checkout: Path | None = None,
) -> SteadyState:
    """`checkout`: another kstat source tree with its own `.venv` (a baseline revision) to run
    instead of this one, measured the same way."""
    tag = f"{interval_s * 1000:g}ms-{'-'.join(sinks) or 'report'}-{'baseline' if checkout else 'this'}"
    ndjson, report, log = (directory / f"steady-{tag}.{suffix}" for suffix in ("ndjson", "json", "log"))
    # A receiver that never reads: the sink's usual send path, with the datagrams dropped once
    # the socket's buffer is full (no ICMP errors, as when nothing listens).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as statsd, log.open("w") as log_file:
        statsd.bind(("127.0.0.1", 0))
        port = statsd.getsockname()[1]
        python = sys.executable if checkout is None else str(checkout / ".venv" / "bin" / "python")
        command = [
            python, "-m", "kstat",
            "-duration", f"{duration_s:g}s",
            "--interval", f"{interval_s * 1000:g}ms",
            "-output", str(report),
        ]  # fmt: skip
        if "ndjson" in sinks:
            command += ["--sink", f"ndjson:{ndjson}"]
        if "statsd" in sinks:
            command += ["--sink", f"statsd://127.0.0.1:{port}"]
        watched = ndjson if "ndjson" in sinks else log
        if "ndjson" not in sinks:
            command.append("--verbose")  # a debug line per snapshot: the only sign of a pass
        started = time.monotonic()
        # Run from the checkout, so that `-m kstat` imports that tree's kstat.
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file, cwd=checkout)
        try:
            samples = _follow(process.pid, watched, deadline=started + duration_s + _EXTRA_WAIT_S)
        finally:
            if not _has_exited(process.pid):
                process.kill()
            # Reaped here, not by Popen: wait4 is what reports the child's rusage.
            _, wait_status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(wait_status)
        total_wall_s = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"kstat exited with {process.returncode}; its log: {log}")
    # NDJSON's first line already comes an interval into the window; the log's first lines come
    # before the first pass.
    start_margin_s = 0.5 if watched == ndjson else interval_s + 0.5
    steady_cpu_percent, steady_seconds = _steady_cpu(samples, interval_s, start_margin_s)
    collected = json.loads(report.read_text())
    return SteadyState(
        sinks=sinks,
        interval_s=interval_s,
        duration_s=duration_s,
        programs_seen=int(collected["num_programs"]),
        snapshots=int(collected["snapshots"]),
        steady_cpu_percent=steady_cpu_percent,
        steady_seconds_measured=steady_seconds,
        total_cpu_s=usage.ru_utime + usage.ru_stime,
        total_wall_s=total_wall_s,
        # ru_maxrss is in KiB on Linux.
        peak_rss_bytes=max([usage.ru_maxrss * 1024, *(sample.peak_rss_bytes for sample in samples)]),
        exit_status=process.returncode,
    )


def _has_exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so that wait4 still gets the rusage afterwards.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _follow(pid: int, watched: Path, deadline: float) -> list[_Sample]:
    samples: list[_Sample] = []
    while not _has_exited(pid) and time.monotonic() < deadline:
        sample = _read_sample(pid, watched)
        if sample is not None:
            samples.append(sample)
        time.sleep(_POLL_S)
    return samples
