"""Kernel-side budgets in a test suite: copy this file next to your own tests, run `sudo pytest`.

kstat's pytest plugin (installed with kstat) gives every test the `kernel_stats` fixture, which
collects the kernel's eBPF run-time stats for exactly the test's duration. Here kstat's small
loader stands in for your agent: replace `start_agent` with whatever loads your programs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kstat.testing.loader import LoopbackTarget, SocketFilter
from kstat.testing.pytest_plugin import KernelStats

PACKETS = 20_000


@pytest.fixture
def start_agent() -> Iterator[LoopbackTarget]:
    """Stand-in for your agent: one socket filter on a loopback UDP socket."""
    with SocketFilter("example_filter", work_instructions=64) as program, LoopbackTarget(program) as target:
        yield target


def test_filter_stays_within_its_kernel_budget(
    kernel_stats: KernelStats, start_agent: LoopbackTarget
) -> None:
    start_agent.send(PACKETS)  # your load test

    (
        kernel_stats.expect("example_filter")
        .ran_at_least(PACKETS)  # the budget means nothing if the program never ran
        .avg_runtime_ns_at_most(10_000)  # nanoseconds per run, measured by the kernel
        .cpu_percent_at_most(50)  # share of one CPU over the test
        .recursion_misses_at_most(0)
    )
