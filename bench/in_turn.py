"""kstat's iterator pass and the C floor's pass, measured in turn on the same programs: the
ratio issue 28 sets (a quarter of the floor), round by round.

The floor's pass moves far more than kstat's on these VMs: 2.1, 3.5 and 6 µs a program on the
same set of 10,000 programs within a day, while kstat's iterator pass stayed within 0.7-0.9 µs
(a pass of syscalls pays for each of its four syscalls per program whatever slows syscalls on
the host; the iterator makes one read). A ratio of two figures taken minutes apart then says
more about the host than about kstat. Here each round times the floor, then kstat's pass, then
the floor again, and the round's ratio is kstat's over the mean of the two floors around it;
the verdict is the median round, and the spread of the rounds is shown beside it.

The kernel's stats are the caller's to turn on (they are on during every window, and the
kernel then times each run of kstat's own iterator program too).
"""

from __future__ import annotations

import gc
import statistics

from attrs import frozen

from bench.measure import Timing, time_calls
from bench.snapshot import SnapshotFloor
from kstat.sources.iterator import IteratorReader


@frozen
class Round:
    floor_before: Timing
    iterator: Timing
    floor_after: Timing

    @property
    def ratio(self) -> float:
        """kstat's pass over the floor's, the floor's being the mean of its two medians."""
        floor_ns = (self.floor_before.median_ns + self.floor_after.median_ns) / 2
        return self.iterator.median_ns / floor_ns


@frozen
class InTurn:
    programs_seen: int
    rounds: tuple[Round, ...]

    @property
    def ratios(self) -> list[float]:
        return [one.ratio for one in self.rounds]

    @property
    def median_ratio(self) -> float:
        return float(statistics.median(self.ratios))

    def per_program_us(self) -> tuple[float, float]:
        """The median round's (kstat's, the floor's) µs a program, over all rounds' samples."""
        iterator = statistics.median(one.iterator.median_ns for one in self.rounds)
        floor = statistics.median(
            (one.floor_before.median_ns + one.floor_after.median_ns) / 2 for one in self.rounds
        )
        return iterator / self.programs_seen / 1e3, floor / self.programs_seen / 1e3


def measure_in_turn(floor: SnapshotFloor, rounds: int, passes: int) -> InTurn:
    """`rounds` rounds of floor, kstat's iterator `read_pass`, floor: `passes` passes each."""
    found = []
    programs_seen = 0
    for _ in range(rounds):
        before = floor.measure(passes)
        # The heap as a window's is (kstat.engine.heap: frozen out of the collector's way),
        # as `measure_kstat` measures it.
        gc.collect()
        gc.freeze()
        reader = IteratorReader()
        try:
            reader.read_pass()  # warm: the walk's buffers sized, its first decoding done
            iterator = time_calls(reader.read_pass, passes)
        finally:
            reader.close()
            gc.unfreeze()
        after = floor.measure(passes)
        programs_seen = before.programs_seen
        found.append(Round(before.per_pass, iterator, after.per_pass))
    return InTurn(programs_seen, tuple(found))
