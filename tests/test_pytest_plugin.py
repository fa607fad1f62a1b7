"""The pytest plugin, run the way a user runs it: pytest on a test file that uses the fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
EXAMPLE = REPO / "examples" / "test_kernel_budget.py"

pytestmark = pytest.mark.kernel
pytest_plugins = ["pytester"]


def test_the_example_passes_within_budget(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_budget=EXAMPLE.read_text())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--kstat-report-dir", "reports")
    result.assert_outcomes(passed=1)
    saved = list((pytester.path / "reports").iterdir())
    assert [path.name for path in saved] == ["test_budget.py_test_filter_stays_within_its_kernel_budget.json"]
    report = json.loads(saved[0].read_text())
    assert report["program_stats"]["example_filter"]["run_count"] == 20_000


def test_a_test_over_budget_fails_with_measured_value_limit_and_program(pytester: pytest.Pytester) -> None:
    over_budget = EXAMPLE.read_text().replace(".avg_runtime_ns_at_most(10_000)", ".avg_runtime_ns_at_most(1)")
    assert over_budget != EXAMPLE.read_text()
    pytester.makepyfile(test_budget=over_budget)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*BudgetExceeded: kstat budget for program 'example_filter' (id *, SocketFilter): "
            "avg_runtime_ns measured * > limit 1 over a * window with 20000 runs",
            "*Captured kstat call*",
            "kernel stats over *",
            "example_filter*SocketFilter*20000*",
        ]
    )
    # The report is kept for a failed test too, under the default directory.
    assert list((pytester.path / ".kstat-reports").glob("*.json"))


def test_report_dir_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nkstat_report_dir = kernel-reports\nkstat_interval = 20ms\n")
    pytester.makepyfile(
        test_plain="""
        def test_nothing_loaded_of_its_own(kernel_stats):
            report = kernel_stats.report_so_far()
            assert report.interval_ns == 20_000_000
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert len(list((pytester.path / "kernel-reports").glob("*.json"))) == 1


def test_the_fixture_reports_the_test_process_own_programs_unless_asked(pytester: pytest.Pytester) -> None:
    """Another process holding programs of the example's very name (another run of the suite,
    an agent): the fixture sees the test's own; with the host scope, all of them."""
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.idle_holder", "3", "example_filter"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and json.loads(holder.stdout.readline())["count"] == 3
        pytester.makepyfile(test_budget=EXAMPLE.read_text())
        own = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--kstat-report-dir", "reports")
        own.assert_outcomes(passed=1)
        (saved,) = (pytester.path / "reports").iterdir()
        assert list(json.loads(saved.read_text())["program_stats"]) == ["example_filter"]
        host = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--kstat-scope", "host")
        host.assert_outcomes(failed=1)
        host.stdout.fnmatch_lines(["* programs are named 'example_filter'; look one up by id*"])
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
