"""What one interval costs the kstat process, piece by piece, in process: the sampler's pass
and delta, the summary's bookkeeping, and each streaming sink's work on the same interval.

The steady-state numbers say how much CPU the command uses; these say where it goes. Two
intervals are measured: the bench's own, where every program is idle (the common case on a
host with many programs), and a synthetic one in which every program ran (the worst case).
"""

from __future__ import annotations

from attrs import evolve, frozen

from bench.measure import Timing, time_calls
from kstat._datagrams import batch_datagrams
from kstat.core.delta import changes_between, interval_delta
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.engine.sampler import SnapshotTaker
from kstat.engine.summary import Summary
from kstat.formats.ndjson import interval_to_dict, json_line
from kstat.formats.statsd import IntervalLines
from kstat.sinks.statsd import parse_statsd_url

# Any address: nothing is sent, only the lines and datagrams are built.
_STATSD_URL = "statsd://127.0.0.1:8125"


@frozen
class IntervalWork:
    programs_seen: int
    # The pass, its attribution and the interval's delta (the sampler's worker thread).
    take_blocking: Timing
    # The summary taking one interval event (on the event loop).
    summary_observe: Timing
    # NDJSON: the interval's line as a dict, then json.dumps.
    ndjson_interval_line: Timing
    # StatsD: the interval's lines (idle programs left out), then the datagrams.
    statsd_lines: Timing
    statsd_lines_per_interval: int
    # The worst case: every program ran in the interval (computed on two synthetic snapshots).
    busy_delta: Timing
    busy_ndjson_interval_line: Timing
    busy_statsd_lines: Timing


def measure_interval_work(repetitions: int, online_cpus: int) -> IntervalWork:
    taker = SnapshotTaker(online_cpus=online_cpus)
    first = taker.take_blocking().snapshot
    sample = taker.take_blocking()
    assert sample.delta is not None
    idle = IntervalEnded(first, sample.snapshot, sample.delta)
    started = WindowStarted(first, 1_000_000_000, None, online_cpus, "", "bench", None)
    summary = Summary()
    summary.observe(started)
    statsd = IntervalLines(parse_statsd_url(_STATSD_URL))
    statsd.start(started)
    statsd.lines_for(idle.delta)  # the first interval sends everything; time the steady ones
    # Every program one run further: the delta has a line for each.
    busy_programs = tuple(
        evolve(
            program,
            counters=program.counters._replace(
                run_count=program.run_count + 1, run_time_ns=program.run_time_ns + 100
            ),
        )
        for program in sample.snapshot.programs
    )
    busy_snapshot = evolve(
        sample.snapshot,
        sequence=sample.snapshot.sequence + 1,
        monotonic_ns=sample.snapshot.monotonic_ns + 1_000_000_000,
        programs=busy_programs,
    )
    busy_changes = changes_between(sample.snapshot, busy_snapshot)

    def busy_delta() -> object:
        return interval_delta(sample.snapshot, busy_snapshot, busy_changes, online_cpus=online_cpus)

    busy = IntervalEnded(
        sample.snapshot,
        busy_snapshot,
        interval_delta(sample.snapshot, busy_snapshot, busy_changes, online_cpus=online_cpus),
    )
    busy_statsd = IntervalLines(parse_statsd_url(_STATSD_URL))
    busy_statsd.start(started)
    settings = parse_statsd_url(_STATSD_URL)
    return IntervalWork(
        programs_seen=len(sample.snapshot.programs),
        take_blocking=time_calls(taker.take_blocking, repetitions),
        summary_observe=time_calls(lambda: summary.observe(idle), repetitions),
        ndjson_interval_line=time_calls(lambda: json_line(interval_to_dict(idle)), repetitions),
        statsd_lines=time_calls(
            lambda: list(batch_datagrams(statsd.lines_for(idle.delta), settings.mtu)), repetitions
        ),
        statsd_lines_per_interval=len(statsd.lines_for(idle.delta)),
        busy_delta=time_calls(busy_delta, repetitions),
        busy_ndjson_interval_line=time_calls(lambda: json_line(interval_to_dict(busy)), repetitions),
        busy_statsd_lines=time_calls(
            lambda: list(batch_datagrams(busy_statsd.lines_for(busy.delta), settings.mtu)), repetitions
        ),
    )
