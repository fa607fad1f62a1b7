"""Owners of programs held by other processes: the /proc walk against kstat's task-file iterator.

    sudo .venv/bin/python -m bench.owners [--programs 10000] [--holders 4] [--rounds 7]

Holder processes (this module again, `--hold`) load the programs and keep them: socket filters
held by their fds, one in ten of the programs an iterator program held only through its link,
and one more fd (a dup) for one program in five, so 10,000 programs make 12,000 bpf fds. Then,
round after round, each way of finding owners is timed on the same host:

- `walk (every fd)`: /proc, every fd of every process (what kstat did on every new program);
- `walk (incremental, unchanged)`: /proc, only processes new or changed since the last walk,
  when none of the holders changed;
- `walk (incremental, one holder changed)`: the same after one holder loaded a program;
- `iterator (every program)`: kstat's task-file iterator, every owner of every program;
- `iterator (one program)`: the same walk, only one new program's owners decoded;
- `iterator (kernel read only)`: the read alone, no decoding.

The shared machine is noisy (other engineers' tests and benches): each round's own ratio is
printed, with the median and the spread over rounds, and the load average before and after.
Owners are compared (exactly) before the timings. Workloads are not looked up: that costs both
ways the same, once per owner process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.programs import raise_open_file_limit
from kstat.sources.owners import IteratorOwners, ProcWalk, program_owners
from kstat.sources.task_files import TaskFileIterator
from kstat.testing.loader import HeldByLink, SocketFilter

REPO = Path(__file__).parents[1]
_LINKED_EVERY = 10
_DUPLICATED_EVERY = 5


def _hold(programs: int) -> None:
    """Holder mode: load and hold `programs` programs, answer `load` with a new program's id,
    end at end of input."""
    raise_open_file_limit(programs * 2 + 100)
    kept: list[SocketFilter | HeldByLink | int] = []
    ids: list[int] = []
    for index in range(programs):
        if index % _LINKED_EVERY == _LINKED_EVERY - 1:
            linked = HeldByLink("kbench_own_l")
            kept.append(linked)
            ids.append(linked.id)
            continue
        program = SocketFilter("kbench_own")
        kept.append(program)
        ids.append(program.id)
        if index % _DUPLICATED_EVERY == 0:
            kept.append(os.dup(program.fd))
    print(json.dumps({"pid": os.getpid(), "ids": ids}), flush=True)
    for line in sys.stdin:
        if line.strip() == "load":
            program = SocketFilter("kbench_own_new")
            kept.append(program)
            print(program.id, flush=True)


class Holder:
    def __init__(self, programs: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.owners", "--hold", str(programs)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        held = json.loads(self.process.stdout.readline())
        self.pid: int = held["pid"]
        self.ids: list[int] = held["ids"]

    def load(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("load\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


def _seconds(call: Callable[[], object], repetitions: int) -> float:
    """The median wall time of `repetitions` calls, in seconds."""
    samples = []
    for _ in range(repetitions):
        before = time.perf_counter()
        call()
        samples.append(time.perf_counter() - before)
    return statistics.median(samples)


def _time_walks(
    incremental: ProcWalk, _: IteratorOwners, __: TaskFileIterator, loader: Holder, new: int, repetitions: int
) -> dict[str, float]:
    walked = {"walk (every fd)": _seconds(program_owners, repetitions)}
    # The first call after the load walks the changed holder again; later ones do not.
    before = time.perf_counter()
    found = incremental.owners(wanted={new})
    walked["walk (incremental, one holder changed)"] = time.perf_counter() - before
    assert loader.pid in {owner.pid for owner in found.get(new, ())}, "the incremental walk missed it"
    walked["walk (incremental, unchanged)"] = _seconds(lambda: incremental.owners(wanted={new}), repetitions)
    return walked


def _time_iterator(
    _: ProcWalk, iterator: IteratorOwners, raw: TaskFileIterator, __: Holder, new: int, repetitions: int
) -> dict[str, float]:
    return {
        "iterator (every program)": _seconds(iterator.owners, repetitions),
        "iterator (one program)": _seconds(lambda: iterator.owners(wanted={new}), repetitions),
        "iterator (kernel read only)": _seconds(raw.read, repetitions),
    }


def _bpf_fds() -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in ("anon_inode:bpf-prog", "anon_inode:bpf_link"):
                    count += 1
            except OSError:
                continue
    return count


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _spread(values: Sequence[float]) -> str:
    return f"median {statistics.median(values):.4g}, min {min(values):.4g}, max {max(values):.4g}"


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.owners", description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=10_000, help="programs held by other processes")
    parser.add_argument("--holders", type=int, default=4, help="processes holding them")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repetitions", type=int, default=3, help="timed calls a round (median)")
    parser.add_argument("--hold", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args(arguments)
    if options.hold is not None:
        _hold(options.hold)
        return 0
    if os.geteuid() != 0:
        print("bench.owners: needs root (it loads eBPF programs)")
        return 1
    started = time.monotonic()
    load_before = _load_average()
    per_holder = options.programs // options.holders
    holders = [Holder(per_holder) for _ in range(options.holders)]
    iterator = IteratorOwners()
    raw = TaskFileIterator()
    try:
        held = {program_id for holder in holders for program_id in holder.ids}
        # Exactly the same owners both ways, before anything is timed (in one of a few tries:
        # another kstat on the host opens each program it meets first by id, for an instant).
        for _ in range(10):
            by_walk, by_iterator = program_owners(wanted=held), iterator.owners(wanted=held)
            if by_walk == by_iterator:
                break
        differing = {
            program_id: (by_walk.get(program_id), by_iterator.get(program_id))
            for program_id in held
            if by_walk.get(program_id) != by_iterator.get(program_id)
        }
        assert not differing, f"the iterator and the walk disagree: {list(differing.items())[:5]}"
        assert set(by_walk) == held
        processes = sum(name.isdigit() for name in os.listdir("/proc"))
        print(f"bench.owners {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.uname().release}")
        print(
            f"  {len(held)} programs held by {len(holders)} processes; on the host: {_bpf_fds()} bpf fds, "
            f"{processes} processes; load average {load_before} (setup {time.monotonic() - started:.0f} s)"
        )
        print(f"  owners identical both ways for all {len(held)} programs")
        names = (
            "walk (every fd)",
            "walk (incremental, unchanged)",
            "walk (incremental, one holder changed)",
            "iterator (every program)",
            "iterator (one program)",
            "iterator (kernel read only)",
        )
        timings: dict[str, list[float]] = {name: [] for name in names}
        incremental = ProcWalk()
        incremental.owners()
        for round_number in range(options.rounds):
            loader = holders[round_number % len(holders)]
            new = loader.load()
            # Alternate which goes first, so that a slow stretch of the machine hits both.
            first, second = (
                (_time_walks, _time_iterator) if round_number % 2 == 0 else (_time_iterator, _time_walks)
            )
            walked = {
                **first(incremental, iterator, raw, loader, new, options.repetitions),
                **second(incremental, iterator, raw, loader, new, options.repetitions),
            }
            for name in names:
                timings[name].append(walked[name])
            walk, every, one = (walked[name] for name in (names[0], names[3], names[4]))
            print(
                f"  round {round_number + 1}: walk {walk * 1e3:.1f} ms, iterator {every * 1e3:.2f} ms "
                f"({walk / every:.1f}x), one program's {one * 1e3:.2f} ms ({walk / one:.1f}x)"
            )
        print("\n  milliseconds over rounds (each round the median of its calls):")
        for name in names:
            print(f"    {name:40} {_spread([value * 1e3 for value in timings[name]])}")
        print()
        for iterated in ("iterator (every program)", "iterator (one program)"):
            ratios = [
                walk / each for walk, each in zip(timings["walk (every fd)"], timings[iterated], strict=True)
            ]
            print(f"  walk (every fd) / {iterated}, per round: {_spread(ratios)}")
        print(f"  load average after: {_load_average()}")
    finally:
        raw.close()
        iterator.close()
        for holder in holders:
            holder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
