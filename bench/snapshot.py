"""One full snapshot of every loaded program, taken three ways: by kstat itself, by bpftool and
by a minimal C program making the same syscalls (the floor of the approach)."""

from __future__ import annotations

import compileall
import gc
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from attrs import frozen

import kstat
from bench.measure import Timing, time_calls
from kstat.engine.sampler import SnapshotTaker
from kstat.sources.iterator import IteratorReader
from kstat.sources.syscalls import ProgramReader

FLOOR_SOURCE: Final = Path(__file__).with_name("snapshot_floor.c")
COMPILE_FLAGS: Final = ("-O2", "-Wall", "-Wextra", "-Werror")


@frozen
class KstatSnapshot:
    programs_seen: int
    # A fresh SnapshotTaker's first pass: owners (/proc) and attachments (links) for every
    # program, which later passes take from their cache.
    first_take_blocking_ns: int
    # SnapshotTaker.take_blocking in steady state: what every interval costs.
    take_blocking: Timing
    # ProgramReader.read_all alone: take_blocking less attribution and the Snapshot itself.
    read_all: Timing
    # The same by kstat's BPF iterator: one pass (read and decode), and the whole take_blocking.
    iterator_read_pass: Timing | None = None
    iterator_take_blocking: Timing | None = None
    # One whole `kstat list --json` process, as a user runs it (start-up and imports included):
    # what a whole `bpftool --json prog show` is measured against, run in turn with it.
    list_process_wall: Timing | None = None
    bpftool_process_wall_alongside: Timing | None = None


def _wall_ns(command: list[str]) -> int:
    before = time.perf_counter_ns()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter_ns() - before


# This tree's kstat, run from the checkout (the bench gives an installed one where it can).
THIS_TREE: Final = (sys.executable, "-m", "kstat")


def list_against_bpftool(
    bpftool: str, repetitions: int, kstat_command: Sequence[str] = THIS_TREE
) -> tuple[Timing, Timing]:
    """Whole `kstat list --json` and `bpftool --json prog show` processes, one of each in turn,
    so that a machine that gets busier or quieter over the runs weighs on both alike. kstat's
    bytecode is compiled first, as an installed kstat's is (an environment that sets
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run)."""
    compileall.compile_dir(Path(kstat.__file__).parent, quiet=1)
    listing: list[int] = []
    shown: list[int] = []
    for _ in range(repetitions):
        listing.append(_wall_ns([*kstat_command, "list", "--json"]))
        shown.append(_wall_ns([bpftool, "--json", "prog", "show"]))
    return Timing.of(listing), Timing.of(shown)


def measure_kstat(
    repetitions: int,
    process_repetitions: int,
    bpftool: str | None = None,
    kstat_command: Sequence[str] = THIS_TREE,
) -> KstatSnapshot:
    taker = SnapshotTaker(reader=ProgramReader())
    before = time.perf_counter_ns()
    first = taker.take_blocking()
    first_ns = time.perf_counter_ns() - before
    taker.take_blocking()  # warm-up: caches filled, allocator settled
    take_blocking = time_calls(taker.take_blocking, repetitions)
    reader = ProgramReader()
    reader.read_all()
    read_all = time_calls(reader.read_all, repetitions)
    # The iterator's passes on a heap settled as the command line's is once its window runs
    # (kstat.engine.heap: what the process holds frozen out of the collector's way); here the
    # syscall passes above leave 10,000 programs' objects behind, and collections walking them
    # doubled some passes.
    gc.collect()
    gc.freeze()
    iterator = IteratorReader()
    try:
        iterator.read_pass()
        iterator_read_pass = time_calls(iterator.read_pass, repetitions)
    finally:
        iterator.close()
    iterator_taker = SnapshotTaker(reader=IteratorReader())
    try:
        iterator_taker.take_blocking()
        iterator_taker.take_blocking()
        iterator_take_blocking = time_calls(iterator_taker.take_blocking, repetitions)
    finally:
        iterator_taker.close()
        gc.unfreeze()
    alongside: Timing | None = None
    if bpftool is None:
        list_process_wall = Timing.of(
            [_wall_ns([*kstat_command, "list", "--json"]) for _ in range(process_repetitions)]
        )
    else:
        list_process_wall, alongside = list_against_bpftool(bpftool, process_repetitions, kstat_command)
    return KstatSnapshot(
        programs_seen=len(first.snapshot.programs),
        first_take_blocking_ns=first_ns,
        take_blocking=take_blocking,
        read_all=read_all,
        iterator_read_pass=iterator_read_pass,
        iterator_take_blocking=iterator_take_blocking,
        list_process_wall=list_process_wall,
        bpftool_process_wall_alongside=alongside,
    )


@frozen
class FloorSnapshot:
    programs_seen: int
    # Each pass timed inside the C process (CLOCK_MONOTONIC around the pass), first pass dropped.
    per_pass: Timing
    # The CPU time of each (CLOCK_THREAD_CPUTIME_ID): what a pass costs, whatever else runs.
    cpu_per_pass: Timing | None = None


class SnapshotFloor:
    """bench/snapshot_floor.c, compiled with `cc -O2` into a directory the caller owns."""

    def __init__(self, directory: Path, compiler: str = "cc") -> None:
        self.executable = directory / "snapshot_floor"
        subprocess.run(
            [compiler, *COMPILE_FLAGS, "-o", str(self.executable), str(FLOOR_SOURCE)],
            check=True,
        )

    def measure(self, passes: int) -> FloorSnapshot:
        # One pass more than asked: the first one warms caches and is not counted.
        completed = subprocess.run(
            [str(self.executable), str(passes + 1)], capture_output=True, text=True, check=True
        )
        result = json.loads(completed.stdout)
        return FloorSnapshot(
            programs_seen=int(result["programs"]),
            per_pass=Timing.of(result["ns_per_pass"][1:]),
            cpu_per_pass=Timing.of(result["cpu_ns_per_pass"][1:]),
        )


@frozen
class BpftoolSnapshot:
    programs_seen: int
    # `prog show` inside one `bpftool batch` process: (wall(1 + P passes) - wall(1 pass)) / P,
    # the median over the trials, so that exec, dynamic linking and libbpf set-up drop out.
    per_pass: Timing
    passes_per_trial: int
    # One whole `bpftool --json prog show` process, as a user runs it (start-up included).
    process_wall: Timing


class Bpftool:
    """Debian's bpftool, its output thrown away (to /dev/null: no reader's cost is counted)."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory

    def reads_owner_pids(self) -> bool:
        """Whether this build shows owner pids: only built with skeletons, it loads a BPF
        iterator over every task's files for each `prog show` (as kstat's /proc walk does once)."""
        version = subprocess.run([self.executable, "version"], capture_output=True, text=True, check=True)
        return "skeletons" in version.stdout

    def count_programs(self) -> int:
        shown = subprocess.run(
            [self.executable, "--json", "prog", "show"], capture_output=True, text=True, check=True
        )
        return len(json.loads(shown.stdout))

    def _batch_wall_ns(self, passes: int) -> int:
        commands = self.directory / f"bpftool-batch-{passes}"
        if not commands.exists():
            commands.write_text("prog show\n" * passes)
        return _wall_ns([self.executable, "--json", "batch", "file", str(commands)])

    def measure(self, passes: int, trials: int, process_repetitions: int) -> BpftoolSnapshot:
        programs_seen = self.count_programs()
        per_pass: list[float] = []
        for _ in range(trials):
            single = self._batch_wall_ns(1)
            many = self._batch_wall_ns(1 + passes)
            per_pass.append((many - single) / passes)
        process_wall = Timing.of(
            [_wall_ns([self.executable, "--json", "prog", "show"]) for _ in range(process_repetitions)]
        )
        return BpftoolSnapshot(
            programs_seen=programs_seen,
            per_pass=Timing.of(per_pass),
            passes_per_trial=passes,
            process_wall=process_wall,
        )
