"""Gates that do not cry wolf, on the real kernel: five runs a side of the demo's workload,
unchanged and made slower, through `kstat compare BASE... -- CURRENT...` and `kstat history`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.kstat_process import run_kstat

pytestmark = pytest.mark.kernel

KSTAT = [sys.executable, "-m", "kstat"]
RUNS = 5
DEMO = ("kstat_demo_light_socket_filter", "kstat_demo_medium_socket_filter", "kstat_demo_heavy_socket_filter")


def workload(work_scale: int) -> list[str]:
    return [
        *KSTAT,
        "demo",
        "--workload-only",
        "-duration",
        "400ms",
        "--rate",
        "3000",
        "--linger",
        "100ms",
        "--work-scale",
        str(work_scale),
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five runs each of: the baseline, the same again, and the medium and heavy programs with
    three times their work (the light one has none, so it stays as it was).
    Interleaved (base, same, slow, base, ...), so that a drift of the machine over the minute
    (a neighbour, the CPU's clock) falls on every side alike rather than looking like a change."""
    directory = tmp_path_factory.mktemp("runs")
    for index in range(RUNS):
        for side, scale in (("base", 1), ("same", 1), ("slow", 3)):
            path = directory / f"{side}-{index}.json"
            completed = run_kstat(["run", "-o", str(path), "--", *workload(scale)], timeout_s=60)
            assert completed.returncode == 0, completed.stderr
    return directory


def compare(directory: Path, current: str, *extra: str) -> tuple[int, dict[str, object]]:
    completed = run_kstat(
        [
            "compare",
            "--format",
            "json",
            "--fail-on",
            "avg_runtime_ns:+10%",
            *extra,
            str(directory / "base-*.json"),
            "--",
            str(directory / f"{current}-*.json"),
        ]
    )
    assert completed.returncode in (0, 1), completed.stderr
    return completed.returncode, json.loads(completed.stdout)


def test_an_unchanged_workload_passes_the_gate(runs: Path) -> None:
    status, data = compare(runs, "same")
    assert status == 0 and data["violations"] == [] and data["testable"] is True
    rows = {row["name"]: row for row in data["programs"]}  # type: ignore[attr-defined]
    for name in DEMO:
        assert len(rows[name]["baseline"]["runs"]) == len(rows[name]["current"]["runs"]) == RUNS
    # Chance alone marks a metric significant one time in twenty (alpha 0.05), so one of the
    # three average runtimes may be; what a gate needs, a change significantly past the limit,
    # noise does not give.
    assert sum(bool(rows[name]["significant"]["avg_runtime_ns"]) for name in DEMO) <= 1
    markdown = run_kstat(
        ["compare", "--format", "markdown", str(runs / "base-*.json"), "--", str(runs / "same-*.json")]
    )
    assert markdown.returncode == 0
    assert "Runs: baseline 5, current 5; medians ± half their range" in markdown.stdout
    assert "~ p=" in markdown.stdout


def test_a_slower_program_is_a_significant_regression_that_fails_the_gate(runs: Path) -> None:
    status, data = compare(runs, "slow")
    assert status == 1
    violations = data["violations"]
    assert isinstance(violations, list)
    assert any(
        line.startswith("kstat_demo_heavy_socket_filter (SocketFilter): avg_runtime_ns")
        for line in violations
    )
    # --work-scale multiplies each program's work instructions: the light one has none, so it
    # is the unchanged program beside two slower ones, and must not be flagged.
    assert not any(line.startswith("kstat_demo_light") for line in violations)
    heavy = next(row for row in data["programs"] if row["name"] == DEMO[2])  # type: ignore[attr-defined]
    assert heavy["significant"]["avg_runtime_ns"] is True
    # Five runs a side, every slower run above every faster one: the smallest p-value five runs
    # allow (2/252, more with ties in whole nanoseconds).
    assert heavy["p_value"]["avg_runtime_ns"] < 0.02
    # Three times the work instructions: the runtime grows by well over half.
    assert heavy["change_percent"]["avg_runtime_ns"] > 50


def test_history_charts_the_runs_and_judges_the_last(runs: Path, tmp_path: Path) -> None:
    reports = [*sorted(runs.glob("base-*.json")), runs / "slow-4.json"]
    chart = tmp_path / "history.png"
    completed = run_kstat(
        ["history", *map(str, reports), "--last", "5", "-o", str(chart), "--fail-on", "avg_runtime_ns:+10%"]
    )
    # One run against five before it cannot be significant (it takes 40): the medians decide,
    # and the heavy program's are far apart.
    assert completed.returncode == 1, completed.stderr
    assert "(last)" in completed.stdout
    assert "or 40 baseline runs beside 1 current" in completed.stdout
    assert "kstat_demo_heavy_socket_filter (SocketFilter): avg_runtime_ns" in completed.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
