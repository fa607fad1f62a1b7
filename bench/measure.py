"""Timings as medians of repeated samples, and the machine they were taken on."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import frozen


@frozen
class Timing:
    """Repeated measurements of one thing, in nanoseconds; the median is what is compared."""

    median_ns: float
    min_ns: float
    samples_ns: tuple[float, ...]

    @classmethod
    def of(cls, samples_ns: Sequence[float]) -> Timing:
        if not samples_ns:
            raise ValueError("a timing needs at least one sample")
        return cls(
            median_ns=float(statistics.median(samples_ns)),
            min_ns=float(min(samples_ns)),
            samples_ns=tuple(float(sample) for sample in samples_ns),
        )


def time_calls(call: Callable[[], object], repetitions: int) -> Timing:
    """Wall time of `call`, `repetitions` times back to back (the caller warms it up first)."""
    samples: list[int] = []
    for _ in range(repetitions):
        before = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - before)
    return Timing.of(samples)


@frozen
class Machine:
    cpu_model: str
    logical_cpus: int
    online_cpus: int
    kernel: str
    python: str
    bpftool: str
    c_compiler: str
    load_average_at_start: str


def _output_lines(command: Sequence[str]) -> list[str]:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        return [f"unavailable ({error.strerror})"]
    return (completed.stdout or completed.stderr).splitlines() or [""]


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def describe_machine(bpftool: str, c_compiler: str) -> Machine:
    return Machine(
        cpu_model=_cpu_model(),
        logical_cpus=os.cpu_count() or 0,
        online_cpus=int(os.sysconf("SC_NPROCESSORS_ONLN")),
        kernel=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=f"{platform.python_implementation()} {platform.python_version()}",
        bpftool=" / ".join(_output_lines([bpftool, "version"])),
        c_compiler=_output_lines([c_compiler, "--version"])[0],
        load_average_at_start=Path("/proc/loadavg").read_text().strip(),
    )
