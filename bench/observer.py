"""The observer effect: what switching the kernel's run-time statistics on costs the programs
measured. Two views: loopback packets through an attached socket filter (the whole path, as a
workload feels it), and BPF_PROG_TEST_RUN, where the kernel times a loop of runs itself (the
accounting alone: two sched_clock() reads and a per-CPU counter update per run)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from attrs import frozen

from bench.measure import Timing
from kstat.abi import bpf as _bpf
from kstat.abi.enums import Command
from kstat.abi.structs import TestRunAttr
from kstat.testing.loader import LoopbackTarget, SocketFilter

STATS_SYSCTL: Final = Path("/proc/sys/kernel/bpf_stats_enabled")
# bpf_prog_test_run_skb needs at least an Ethernet header; the filter looks at nothing.
_TEST_PACKET: Final = bytes(64)


def stats_enabled_elsewhere() -> bool:
    """Whether someone else (a kstat, bpftool, an agent) holds the stats on: then "off" is not off."""
    return STATS_SYSCTL.read_text().strip() != "0"


@contextlib.contextmanager
def _stats(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    stats_fd = _bpf.enable_run_time_stats()
    try:
        yield
    finally:
        os.close(stats_fd)


def _test_run_ns_per_run(program: SocketFilter, repeat: int) -> tuple[float, float]:
    """(kernel-measured ns per run, wall-measured ns per run) for one test run of `repeat` runs."""
    packet = ctypes.create_string_buffer(_TEST_PACKET, len(_TEST_PACKET))
    # The kernel ABI's one declaration of the BPF_PROG_TEST_RUN attr (kstat runs its iterator's
    # helper programs through it too).
    attr = TestRunAttr(
        prog_fd=program.fd, data_size_in=len(_TEST_PACKET), data_in=ctypes.addressof(packet), repeat=repeat
    )
    before = time.perf_counter_ns()
    _bpf.bpf(Command.PROG_TEST_RUN, attr)
    wall_ns = time.perf_counter_ns() - before
    return float(attr.duration), wall_ns / repeat


@frozen
class ObserverEffect:
    packets_per_round: int
    rounds: int
    # Wall time per packet sent (and filtered) on loopback, one sample per round.
    packet_stats_off: Timing
    packet_stats_on: Timing
    packets_per_s_off: float
    packets_per_s_on: float
    overhead_per_packet_ns: float
    # What the kernel's own counters said a run cost while the stats were on.
    kernel_run_time_ns_per_run: float
    test_run_repeat: int
    # BPF_PROG_TEST_RUN: the kernel's own mean ns per run, and the syscall's wall time per run.
    test_run_kernel_off: Timing
    test_run_kernel_on: Timing
    test_run_wall_off: Timing
    test_run_wall_on: Timing
    accounting_overhead_per_run_ns: float
    stats_were_enabled_elsewhere: bool


def measure_observer_effect(packets: int, rounds: int, test_run_repeat: int) -> ObserverEffect:
    enabled_elsewhere = stats_enabled_elsewhere()
    packet_ns: dict[bool, list[float]] = {False: [], True: []}
    test_kernel: dict[bool, list[float]] = {False: [], True: []}
    test_wall: dict[bool, list[float]] = {False: [], True: []}
    with SocketFilter("kbench_observe") as program, LoopbackTarget(program) as target:
        target.send(packets // 10)  # warm-up: socket buffers, route and filter caches
        _test_run_ns_per_run(program, test_run_repeat // 10)
        counted_before = program.stats()
        for round_index in range(rounds):
            # Alternate which goes first, so that drift over the run does not favour one side.
            for enabled in (False, True) if round_index % 2 == 0 else (True, False):
                with _stats(enabled):
                    enabled_elsewhere = enabled_elsewhere or (not enabled and stats_enabled_elsewhere())
                    before = time.perf_counter_ns()
                    target.send(packets)
                    packet_ns[enabled].append((time.perf_counter_ns() - before) / packets)
                    kernel_ns, wall_ns = _test_run_ns_per_run(program, test_run_repeat)
                    test_kernel[enabled].append(kernel_ns)
                    test_wall[enabled].append(wall_ns)
        counted = program.stats()
    runs = counted.run_count - counted_before.run_count
    run_time_ns = counted.run_time_ns - counted_before.run_time_ns
    off, on = Timing.of(packet_ns[False]), Timing.of(packet_ns[True])
    kernel_off, kernel_on = Timing.of(test_kernel[False]), Timing.of(test_kernel[True])
    wall_off, wall_on = Timing.of(test_wall[False]), Timing.of(test_wall[True])
    return ObserverEffect(
        packets_per_round=packets,
        rounds=rounds,
        packet_stats_off=off,
        packet_stats_on=on,
        packets_per_s_off=1e9 / off.median_ns,
        packets_per_s_on=1e9 / on.median_ns,
        overhead_per_packet_ns=on.median_ns - off.median_ns,
        kernel_run_time_ns_per_run=run_time_ns / runs if runs else 0.0,
        test_run_repeat=test_run_repeat,
        test_run_kernel_off=kernel_off,
        test_run_kernel_on=kernel_on,
        test_run_wall_off=wall_off,
        test_run_wall_on=wall_on,
        accounting_overhead_per_run_ns=wall_on.median_ns - wall_off.median_ns,
        stats_were_enabled_elsewhere=enabled_elsewhere,
    )
