"""Per-CPU cost (`--per-cpu`): each program's run time and runs on each CPU, read by kstat's
BPF iterator, exact to the packets sent from senders pinned to each CPU (a socket filter on a
loopback UDP socket runs on the sending CPU, in its softirq)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest

from kstat.abi.bpf import enable_run_time_stats
from kstat.errors import FeatureMissing
from kstat.sources.iterator import IteratorReader, possible_cpus
from kstat.testing.loader import LoopbackTarget
from tests.windows import LoadFilter

pytestmark = pytest.mark.kernel


def online_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def send_pinned(target: LoopbackTarget, cpu: int, count: int) -> None:
    """`count` packets sent by a thread pinned to `cpu` (its own affinity, not the process's)."""
    failure: list[BaseException] = []

    def sender() -> None:
        try:
            os.sched_setaffinity(0, {cpu})  # 0: this thread
            target.send(count)
        except BaseException as error:  # handed to the test's thread
            failure.append(error)

    thread = threading.Thread(target=sender)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@pytest.fixture
def per_cpu_reader() -> Iterator[Callable[[], IteratorReader]]:
    """IteratorReader(per_cpu=True) makers; skips where this kernel lacks the iterator."""
    made: list[IteratorReader] = []

    def make() -> IteratorReader:
        try:
            reader = IteratorReader(per_cpu=True)
        except FeatureMissing as missing:
            pytest.skip(f"kstat snapshots by syscalls here: {missing}")
        made.append(reader)
        return reader

    yield make
    for reader in made:
        reader.close()


def test_runs_per_cpu_are_the_packets_sent_on_each_cpu(
    load_filter: LoadFilter, per_cpu_reader: Callable[[], IteratorReader]
) -> None:
    cpus = online_cpus()
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to tell apart")
    target = load_filter("kstat_t_percpu")
    sent = {cpus[0]: 300, cpus[1]: 1_200}
    stats = enable_run_time_stats()
    try:
        for cpu, count in sent.items():
            send_pinned(target, cpu, count)
    finally:
        os.close(stats)
    reader = per_cpu_reader()
    (program,) = [found for found in reader.read().programs if found.id == target.program.id]
    counters = program.counters
    assert counters.per_cpu_run_count is not None and counters.per_cpu_run_time_ns is not None
    assert len(counters.per_cpu_run_count) == max(possible_cpus()) + 1
    runs = {cpu: count for cpu, count in enumerate(counters.per_cpu_run_count) if count}
    assert runs == sent
    # The sums are the per-CPU values' (read by the same walk), and every CPU that ran took time.
    assert counters.run_count == sum(counters.per_cpu_run_count) == 1_500
    assert counters.run_time_ns == sum(counters.per_cpu_run_time_ns)
    assert all(counters.per_cpu_run_time_ns[cpu] > 0 for cpu in sent)


def test_without_per_cpu_the_counters_carry_none(load_filter: LoadFilter) -> None:
    target = load_filter("kstat_t_nopcpu")
    try:
        reader = IteratorReader()
    except FeatureMissing as missing:
        pytest.skip(f"kstat snapshots by syscalls here: {missing}")
    try:
        (program,) = [found for found in reader.read().programs if found.id == target.program.id]
    finally:
        reader.close()
    assert program.counters.per_cpu_run_count is None and program.counters.per_cpu_run_time_ns is None
