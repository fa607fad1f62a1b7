"""What one interval costs the kstat process beyond the snapshot, piece by piece, in process:
the summary's bookkeeping and each streaming sink's work on the same two snapshots.

The steady-state numbers say how much CPU the command uses; these say where it goes.
"""

from __future__ import annotations

from attrs import evolve, frozen

from bench.measure import Timing, time_calls
from kstat.sampler import SnapshotTaker
from kstat.summary import Summary, interval_report
from sinks.ndjson import encode_line, interval_line
from sinks.statsd import batch_datagrams, metric_lines, parse_statsd_url

# Any address: nothing is sent, only the lines and datagrams are built.
_STATSD_URL = "statsd://127.0.0.1:8125"


@frozen
class IntervalWork:
    programs_seen: int
    take_blocking: Timing
    summary_observe: Timing
    # The delta report of one interval: each sink builds its own.
    interval_report: Timing
    # NDJSON: interval_line (the report, as a dict, with absolute counters), then json.dumps.
    ndjson_interval_line: Timing
    ndjson_encode_line: Timing
    # StatsD: the report, its metric lines, the datagrams (the sends are not included).
    statsd_metric_lines: Timing
    statsd_batch_datagrams: Timing
    statsd_lines_per_interval: int
    statsd_datagrams_per_interval: int


def measure_interval_work(repetitions: int, online_cpus: int) -> IntervalWork:
    taker = SnapshotTaker()
    previous = taker.take_blocking()
    current = taker.take_blocking()
    summary = Summary()
    summary.observe(previous)
    report = interval_report(previous, current, online_cpus)
    line = interval_line(previous, current, 0, online_cpus)
    settings = parse_statsd_url(_STATSD_URL)
    lines = metric_lines(report, settings)
    for warm_up in (taker.take_blocking, lambda: summary.observe(current)):
        warm_up()
    return IntervalWork(
        programs_seen=len(current.programs),
        take_blocking=time_calls(taker.take_blocking, repetitions),
        summary_observe=time_calls(lambda: summary.observe(current), repetitions),
        # A copy of `current` each time: the sinks share one report per interval through a small
        # cache keyed by the snapshots, which would otherwise make every call after the first free.
        interval_report=time_calls(
            lambda: interval_report(previous, evolve(current), online_cpus), repetitions
        ),
        ndjson_interval_line=time_calls(
            lambda: interval_line(previous, current, 0, online_cpus), repetitions
        ),
        ndjson_encode_line=time_calls(lambda: encode_line(line), repetitions),
        statsd_metric_lines=time_calls(lambda: metric_lines(report, settings), repetitions),
        statsd_batch_datagrams=time_calls(lambda: list(batch_datagrams(lines, settings.mtu)), repetitions),
        statsd_lines_per_interval=len(lines),
        statsd_datagrams_per_interval=len(list(batch_datagrams(lines, settings.mtu))),
    )
