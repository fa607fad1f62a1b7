"""The pytest plugin (entry point `pytest11`): a `kernel_stats` fixture that collects kernel
stats around a test, saves the report, and summarises it when the test fails.

    def test_parser_is_cheap(kernel_stats):
        run_my_agent_against_traffic()
        kernel_stats.expect("tc_ingress").ran_at_least(1000).avg_runtime_ns_at_most(500)
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from kstat.api import SyncSession, collect_sync, save_report
from kstat.core.catalogue import View, in_view
from kstat.core.filters import ProgramFilter
from kstat.core.report import Report
from kstat.testing.budget import ProgramBudget, expect_program

_SESSION_KEY = pytest.StashKey[SyncSession]()
SCOPES = ("process", "host")
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_SUMMARY_ROWS = 10


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kstat", "kernel-side eBPF cost (kstat)")
    group.addoption(
        "--kstat-report-dir",
        dest="kstat_report_dir",
        default=None,
        metavar="DIR",
        help="where the kernel_stats fixture saves each test's report (default: .kstat-reports)",
    )
    group.addoption(
        "--kstat-scope",
        dest="kstat_scope",
        default=None,
        choices=SCOPES,
        help=(
            "which programs kernel_stats reports: process (the test process's own and its "
            "children's, the default) or host (every program loaded)"
        ),
    )
    parser.addini("kstat_report_dir", "where kernel_stats saves reports", default=".kstat-reports")
    parser.addini("kstat_interval", "snapshot interval for kernel_stats, e.g. 100ms", default="100ms")
    parser.addini(
        "kstat_scope", "process (default) or host: which programs kernel_stats reports", default="process"
    )


class KernelStats:
    """What a test gets from the `kernel_stats` fixture."""

    def __init__(self, session: SyncSession) -> None:
        self._session = session

    def report_so_far(self) -> Report:
        """The delta report from the test's start to now."""
        return self._session.report_so_far()

    def expect(self, name_or_id: str | int) -> ProgramBudget:
        """Budget checks on a program, measured from the test's start to now."""
        return expect_program(self.report_so_far(), name_or_id)


def _report_dir(config: pytest.Config) -> Path:
    chosen = config.getoption("kstat_report_dir") or config.getini("kstat_report_dir")
    directory = Path(chosen)
    return directory if directory.is_absolute() else config.rootpath / directory


def _scope(config: pytest.Config) -> ProgramFilter | None:
    """The programs of the test process's tree (held by it or its children, or loaded by them
    during the test), unless the host's are asked for."""
    chosen = config.getoption("kstat_scope") or str(config.getini("kstat_scope"))
    if chosen not in SCOPES:
        raise pytest.UsageError(f"kstat_scope is {chosen!r}; choose one of {', '.join(SCOPES)}")
    return ProgramFilter(process_tree=os.getpid()) if chosen == "process" else None


@pytest.fixture
def kernel_stats(request: pytest.FixtureRequest) -> Iterator[KernelStats]:
    """Kernel stats collected around the test (needs root); the report is saved afterwards.
    They cover the test process's own programs (those of its children too) unless
    `--kstat-scope host` or the `kstat_scope = host` ini option asks for every program."""
    interval = str(request.config.getini("kstat_interval"))
    with collect_sync(interval=interval, select=_scope(request.config)) as session:
        request.node.stash[_SESSION_KEY] = session
        yield KernelStats(session)
    directory = _report_dir(request.config)
    directory.mkdir(parents=True, exist_ok=True)
    save_report(session.report, directory / f"{_UNSAFE_IN_FILE_NAME.sub('_', request.node.nodeid)}.json")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    session = item.stash.get(_SESSION_KEY, None)
    if session is not None and call.when == "call" and call.excinfo is not None:
        # Before pytest builds the report, so the section appears with the failure.
        item.add_report_section("call", "kstat", summarise(session.report_so_far()))
    yield


def summarise(report: Report) -> str:
    """A short table of the programs that cost the most during the test (the catalogue's
    summary metrics as columns)."""
    columns = in_view(View.SUMMARY)
    widths = [max(10, len(metric.heading)) for metric in columns]
    lines = [
        f"kernel stats over {report.collection_duration_ns / 1e9:.3f}s: {report.num_programs} programs, "
        f"{report.total_run_count} runs, {report.total_estimated_cpu_percent:.3f}% of one CPU",
        f"{'program':<32} {'id':>6} {'type':<14} "
        + " ".join(f"{metric.heading:>{width}}" for metric, width in zip(columns, widths, strict=True)),
    ]
    costliest = sorted(report.program_stats.items(), key=lambda item: item[1].runtime_ns, reverse=True)
    for key, line in costliest[:_SUMMARY_ROWS]:
        cells = [_cell(line.value(metric.name), width) for metric, width in zip(columns, widths, strict=True)]
        lines.append(f"{key[:32]:<32} {line.id:>6} {line.type[:14]:<14} " + " ".join(cells))
    if len(costliest) > _SUMMARY_ROWS:
        lines.append(f"... and {len(costliest) - _SUMMARY_ROWS} more")
    return "\n".join(lines)


def _cell(value: float | None, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if float(value).is_integer():
        return f"{int(value):>{width}}"
    return f"{value:>{width}.3f}"
