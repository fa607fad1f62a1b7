"""Switching stats on and off: the BPF_ENABLE_STATS path and the sysctl fallback, by behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from kstat.abi import bpf as _bpf
from kstat.errors import UnsupportedKernel
from kstat.sources.stats_switch import BPF_STATS_SYSCTL, StatsMethod, runtime_stats_enabled
from tests.names import KT
from tests.stats_holders import stats_released, this_process_stats_fds
from tests.windows import LoadFilter


def _no_enable_stats_command() -> int:
    raise UnsupportedKernel("this kernel does not know BPF_ENABLE_STATS (it arrived in Linux 5.8)")


@pytest.mark.kernel
def test_two_holders_do_not_switch_each_other_off(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}two")
    with runtime_stats_enabled() as first:
        with runtime_stats_enabled() as second:
            assert this_process_stats_fds() == 2
            target.send(10)
        # The second holder is gone; the first one's fd, and its stats, must still be on.
        assert this_process_stats_fds() == 1
        target.send(5)
    counted = target.program.stats().run_count
    with stats_released() as released:
        target.send(100)
        after = target.program.stats().run_count
    assert (first, second) == (StatsMethod.BPF_ENABLE_STATS, StatsMethod.BPF_ENABLE_STATS)
    assert counted == 15
    if released.quiet:  # else others count the 100: the closed fds are what was checked
        assert after == counted


@pytest.mark.kernel
def test_sysctl_fallback_counts_and_restores_the_previous_value(
    load_filter: LoadFilter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend to be a kernel before 5.8; the sysctl and the counters are the real ones.
    monkeypatch.setattr(_bpf, "enable_run_time_stats", _no_enable_stats_command)
    target = load_filter(f"{KT}sysctl")
    before = BPF_STATS_SYSCTL.read_text()
    with runtime_stats_enabled() as method:
        assert BPF_STATS_SYSCTL.read_text().strip() == "1"
        target.send(42)
    assert method is StatsMethod.SYSCTL
    assert BPF_STATS_SYSCTL.read_text() == before
    if before.strip() == "0":
        with stats_released() as released:
            target.send(1_000)
            after = target.program.stats().run_count
        if released.quiet:  # else others count the 1,000: the sysctl is what was checked
            assert after == 42


def test_sysctl_fallback_restores_a_value_it_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bpf, "enable_run_time_stats", _no_enable_stats_command)
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    with runtime_stats_enabled(sysctl):
        assert sysctl.read_text() == "1"
    assert sysctl.read_text() == "0"
    sysctl.write_text("1\n")
    with runtime_stats_enabled(sysctl):
        pass
    assert sysctl.read_text() == "1\n"


def test_no_way_to_enable_stats_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bpf, "enable_run_time_stats", _no_enable_stats_command)
    with (
        pytest.raises(UnsupportedKernel, match=r"Linux 5\.8.*cannot count eBPF run time"),
        runtime_stats_enabled(tmp_path / "missing"),
    ):
        pass
