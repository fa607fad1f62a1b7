"""run, compare, plot and the e2e make target: the branch-against-main workflow."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest

from kstat.analysis.charts import CHART_ORDER, ChartSet, change_text, comparison_charts, short_label
from kstat.analysis.compare import compare, parse_threshold, render_json, render_markdown, render_table
from kstat.analysis.plot import pyplot, read_stream, stream_figure
from kstat.core.report import Report
from kstat.errors import UsageError
from kstat.formats.report_json import report_to_dict
from tests.builders import program, report_of, snapshot
from tests.kstat_process import KstatProcess, run_kstat

REPO = Path(__file__).parents[1]
KSTAT = [sys.executable, "-m", "kstat"]
WORKLOAD = [*KSTAT, "demo", "--workload-only", "-duration", "1s", "--rate", "3000", "--linger", "300ms"]


def two_window_report(*pairs: tuple[int, int, int, str], seconds: float = 1.0) -> Report:
    """A report in which program (id, runtime, runs, name) ran that much over `seconds`."""
    first = snapshot(0, 0.0, *(program(pid, 0, 0, name=name) for pid, _, _, name in pairs))
    last = snapshot(
        1, seconds, *(program(pid, runtime, runs, name=name) for pid, runtime, runs, name in pairs)
    )
    return report_of(first, last)


BASELINE = two_window_report((1, 100_000, 1_000, "parse"), (2, 0, 0, "idle"), (3, 5_000, 50, "old_only"))
CURRENT = two_window_report(
    (1, 150_000, 1_000, "parse"), (2, 0, 0, "idle"), (4, 1_000, 10, "new_only"), (5, 3_000, 10, "new_only")
)


def test_programs_are_matched_by_name_and_type_and_none_is_dropped() -> None:
    comparison = compare(BASELINE, CURRENT)
    rows = {row.name: row for row in comparison.rows}
    assert set(rows) == {"parse", "idle", "old_only", "new_only"}
    assert rows["parse"].change_percent("avg_runtime_ns") == pytest.approx(50.0)
    assert rows["idle"].change_percent("avg_runtime_ns") is None  # no runs on either side
    assert [row.name for row in comparison.only_in_baseline] == ["old_only"]
    assert [row.name for row in comparison.only_in_current] == ["new_only"]
    # Two programs named new_only (different ids) are added up into one row.
    new_only = rows["new_only"].current
    assert new_only is not None
    assert (new_only.programs, new_only.values["runtime_ns"], new_only.values["run_count"]) == (2, 4_000, 20)
    assert new_only.values["avg_runtime_ns"] == 200
    assert comparison.total.baseline is not None and comparison.total.current is not None
    assert comparison.total.baseline.values["run_count"] == 1_050
    assert comparison.total.current.values["run_count"] == 1_020


@pytest.mark.parametrize(
    ("threshold", "violated_rows"),
    [
        ("avg_runtime_ns:+10%", ["parse", "(total)"]),
        ("avg_runtime_ns:+60%", []),
        ("estimated_cpu_percent:+49%", ["parse"]),
        ("run_count:-2%", ["(total)"]),
        ("run_count:+0", []),
        ("runtime_ns:+40000", ["parse", "(total)"]),
    ],
)
def test_thresholds(threshold: str, violated_rows: list[str]) -> None:
    violations = compare(BASELINE, CURRENT).violations([parse_threshold(threshold)])
    assert [violation.split(" (")[0].split(":")[0] for violation in violations] == violated_rows


@pytest.mark.parametrize("text", ["avg_runtime_ns", "avg_runtime_ns:10%", "speed:+10%", "avg_runtime_ns:+x%"])
def test_bad_thresholds(text: str) -> None:
    with pytest.raises(UsageError):
        parse_threshold(text)


def test_renderings_say_the_same_thing() -> None:
    comparison = compare(BASELINE, CURRENT)
    violations = comparison.violations([parse_threshold("avg_runtime_ns:+10%")])
    markdown = render_markdown(comparison, violations)
    assert "| parse (SocketFilter) | 100 → 150 (+50.0%) |" in markdown
    assert "| new_only (SocketFilter) (x2) | - → 200 (new) |" in markdown
    assert "| old_only (SocketFilter) | 100 → - (gone) |" in markdown
    assert "Only in baseline: old_only (SocketFilter)" in markdown
    assert "REGRESSION (2):" in markdown
    table = render_table(comparison, violations)
    assert "parse (SocketFilter)" in table and "REGRESSION (2):" in table
    data = json.loads(render_json(comparison, violations))
    assert data["regression"] is True
    assert data["only_in_current"] == ["new_only (SocketFilter)"]
    assert data["total"]["change_percent"]["run_count"] == pytest.approx(-30 / 1050 * 100)


def test_the_table_shows_a_hostile_name_without_obeying_it() -> None:
    hostile = "evil\x1b]0;owned\x07[bold red]x"
    before = two_window_report((1, 100, 10, hostile))
    after = two_window_report((1, 200, 10, hostile))
    table = render_table(compare(before, after), [], width=200)
    assert "\x1b" not in table and "\x07" not in table
    assert "evil\\x1b]0;owned\\x07[bold red]x (SocketFilter)" in table  # brackets kept: no markup


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    pyplot().close("all")


def test_the_charts_are_the_seeds_set() -> None:
    charts = comparison_charts(CURRENT, BASELINE)
    assert set(charts.figures) == set(CHART_ORDER)
    titles = {
        name: [axis.get_title().split("\n")[0] for axis in figure.axes]
        for name, figure in charts.figures.items()
    }
    assert titles["cpu"] == ["Estimated CPU", "Maximum of the CPU share per interval"]
    assert titles["events"] == ["Events per second"]
    assert titles["runtime"] == ["Average runtime per run"]
    assert titles["totals"] == [
        "Total average runtime per run",
        "Total estimated CPU",
        "Total events per second",
    ]
    # These reports carry no footprint: no empty panels, a note (tests/test_charts.py has them).
    assert titles["program"] == titles["memory"] == []
    assert len(charts.figures["overview"].axes) == 3 + 3 + 1


def test_only_programs_active_on_either_side_unless_asked() -> None:
    def labels(charts: ChartSet) -> list[str]:
        return [label.get_text() for label in charts.figures["cpu"].axes[0].get_yticklabels()]

    # parse runs on both sides, old_only in the baseline, the two new_only (one row) in the
    # current; idle never runs.
    assert sorted(labels(comparison_charts(CURRENT, BASELINE))) == ["new_only (x2)", "old_only", "parse"]
    assert "idle" in labels(comparison_charts(CURRENT, BASELINE, include_idle=True))
    # Two bars a program, baseline and current, and a value written on each current bar.
    axis = comparison_charts(CURRENT, BASELINE).figures["cpu"].axes[0]
    assert len(axis.patches) == 6
    texts = [text.get_text() for text in axis.texts]
    assert "0.015  (+50.0%)" in texts  # parse: 100 µs -> 150 µs of CPU over 1 s
    assert "0.0004  (new)" in texts  # new_only: from nothing
    assert "gone" in texts  # old_only


def test_the_summary_puts_the_largest_regression_first() -> None:
    summary = comparison_charts(CURRENT, BASELINE).summary.splitlines()
    assert summary[0] == (
        "WORSE  parse: estimated CPU 0.01 -> 0.015 % of one CPU (+50.0%), "
        "average runtime per run 100 -> 150 ns (+50.0%)"
    )
    assert summary[-2:] == ["new:  new_only (x2)", "gone: old_only"]


def test_long_names_are_shortened_in_the_middle() -> None:
    assert short_label("flow_exporter_parse_ipv6_extension_headers") == "flow_exporter_parse_ip…ion_headers"
    assert short_label("short") == "short"
    assert change_text(0, 5) == "new" and change_text(5, 5) == "±0%" and change_text(4, 5) == "+25.0%"


def test_plot_command_writes_every_chart_beside_the_overview(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(json.dumps(report_to_dict(BASELINE)))
    (tmp_path / "cur.json").write_text(json.dumps(report_to_dict(CURRENT)))
    arguments = ["plot", str(tmp_path / "cur.json"), "--baseline", str(tmp_path / "base.json"), "-o"]
    completed = run_kstat([*arguments, str(tmp_path / "c.png")])
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("WORSE  parse: estimated CPU")
    written = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(("c.", "c-")))
    assert written == sorted(["c.png", "c-summary.txt", *(f"c-{name}.png" for name in CHART_ORDER[1:])])
    figure = comparison_charts(CURRENT, BASELINE).figures["overview"]
    assert png_size(tmp_path / "c.png") == (
        round(figure.get_figwidth() * 100),
        round(figure.get_figheight() * 100),
    )
    into_directory = run_kstat([*arguments, str(tmp_path / "charts")])
    assert into_directory.returncode == 0, into_directory.stderr
    assert sorted(path.name for path in (tmp_path / "charts").iterdir()) == sorted(
        ["summary.txt", *(f"{name}.png" for name in CHART_ORDER)]
    )


def test_stream_chart_draws_a_line_per_program(tmp_path: Path) -> None:
    lines: list[dict[str, Any]] = []
    for sequence in range(1, 4):

        def line(name: str, avg_runtime_ns: int, runtime_ns: int) -> dict[str, Any]:
            return {
                "name": name,
                "type": "SocketFilter",
                "id": 1,
                "runtime_ns": runtime_ns,
                "run_count": 1,
                "events_per_sec": 5,
                "avg_runtime_ns": avg_runtime_ns,
                "estimated_cpu_percent": 0.1,
                "recursion_misses": 0,
            }

        lines.append(
            {
                "kind": "interval",
                "elapsed_ns": 1_000_000_000,
                "program_stats": {"a": line("a", 10 * sequence, 9), "b": line("b", 20, 99)},
            }
        )
    stream = tmp_path / "s.ndjson"
    stream.write_text("".join(json.dumps(line) + "\n" for line in [*lines, {"kind": "summary"}]))
    figure = stream_figure(read_stream(stream))
    assert [len(axis.lines) for axis in figure.axes] == [2, 2, 2]
    assert numpy.asarray(figure.axes[0].lines[1].get_ydata()).tolist() == [10, 20, 30]


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    missing = run_kstat(["compare", str(tmp_path / "nope.json"), str(tmp_path / "nope.json")])
    assert missing.returncode == 1
    assert missing.stderr.startswith("kstat: error: cannot read")
    (tmp_path / "junk.json").write_text("[1, 2]")
    junk = run_kstat(["plot", str(tmp_path / "junk.json"), "-o", str(tmp_path / "x.png")])
    assert junk.returncode == 1
    junk_path = tmp_path / "junk.json"
    assert (
        junk.stderr
        == f"kstat: error: {junk_path} is not a report: the top level is a list, expected an object\n"
    )
    assert "Traceback" not in missing.stderr + junk.stderr
    bad_threshold = run_kstat(["compare", "a", "b", "--fail-on", "fast"])
    assert bad_threshold.returncode == 2
    assert not (tmp_path / "x.png").exists()


@pytest.mark.kernel
def test_run_measures_a_command_whole_and_exits_with_its_status(tmp_path: Path) -> None:
    output = tmp_path / "r.json"
    run = KstatProcess(["run", "-o", str(output), "--", *WORKLOAD])
    returncode, _ = run.finish()
    assert returncode == 0, run.stderr_lines
    report = json.loads(output.read_text())
    sent = {entry["program"]: entry["packets_sent"] for entry in run.log if entry["event"] == "demo traffic"}
    assert len(sent) == 3
    for name, packets in sent.items():
        line = report["program_stats"][name]
        # Loaded by the command inside the window: counted from their load, exactly.
        assert line["run_count"] == packets
        assert line["loaded_during_window"]
    assert report["stopped_by"] == "command exited with status 0"


@pytest.mark.kernel
@pytest.mark.parametrize(("script", "status"), [("exit 3", 3), ("kill -TERM $$", 128 + 15)])
def test_run_writes_the_report_when_the_command_fails(tmp_path: Path, script: str, status: int) -> None:
    output = tmp_path / "r.json"
    completed = run_kstat(["run", "-o", str(output), "--", "sh", "-c", script])
    assert completed.returncode == status
    assert json.loads(output.read_text())["stopped_by"] == f"command exited with status {status}"


@pytest.mark.kernel
def test_run_passes_a_signal_to_the_command(tmp_path: Path) -> None:
    output = tmp_path / "r.json"
    run = KstatProcess(["run", "-o", str(output), "--", "sleep", "60"])
    run.wait_for_event("command started")
    run.signal(signal.SIGTERM)
    returncode, _ = run.finish()
    assert returncode == 128 + signal.SIGTERM
    assert output.exists()


def test_run_usage_and_missing_commands() -> None:
    no_command = run_kstat(["run", "-o", "x.json"])
    assert no_command.returncode == 2
    assert "kstat run [options] -- COMMAND" in no_command.stderr
    missing = run_kstat(["run", "--", "no-such-command-kstat"])
    assert missing.returncode == 127
    assert missing.stderr.strip().endswith("command not found: no-such-command-kstat")


@pytest.mark.kernel
def test_a_heavier_build_is_caught_by_compare(tmp_path: Path) -> None:
    """The issue's acceptance run: base, heavier, compare with a verdict, plot."""
    base, current = tmp_path / "base.json", tmp_path / "cur.json"
    assert run_kstat(["run", "-o", str(base), "--", *WORKLOAD]).returncode == 0
    assert run_kstat(["run", "-o", str(current), "--", *WORKLOAD, "--work-scale", "3"]).returncode == 0
    verdict = run_kstat(["compare", str(base), str(current), "--fail-on", "avg_runtime_ns:+10%"])
    assert verdict.returncode == 1
    assert "kstat_demo_heavy_socket_filter (SocketFilter): avg_runtime_ns" in verdict.stdout
    same = run_kstat(
        ["compare", str(base), str(base), "--fail-on", "avg_runtime_ns:+10%", "--format", "json"]
    )
    assert same.returncode == 0
    assert json.loads(same.stdout)["regression"] is False
    chart = run_kstat(["plot", str(current), "--baseline", str(base), "-o", str(tmp_path / "cmp.png")])
    assert chart.returncode == 0
    assert png_size(tmp_path / "cmp.png")[0] == 1900  # the overview: 19 in at 100 dpi


@pytest.mark.kernel
@pytest.mark.skipif(
    not (REPO / ".venv" / "bin" / "kstat").exists(), reason="needs the Makefile's .venv (make install)"
)
def test_make_e2e_with_a_baseline(tmp_path: Path) -> None:
    make = [
        "make",
        "-s",
        "-C",
        str(REPO),
        "e2e",
        "E2E_DURATION=1s",
        f"E2E_LOGS={tmp_path}/logs",
        f"PERF_DIR={tmp_path}/perf",
    ]
    environment = {**os.environ, "MAKEFLAGS": ""}
    subprocess.run([*make, "E2E_NAME=main"], check=True, capture_output=True, env=environment)
    assert (tmp_path / "logs" / "main" / "kernel-stats.json").exists()
    heavier = subprocess.run(
        [*make, "BASELINE=main", "WORK_SCALE=3"], check=False, capture_output=True, text=True, env=environment
    )
    assert heavier.returncode != 0  # the default FAIL_ON caught the heavier build
    assert (tmp_path / "logs" / "current" / "kernel-stats.json").exists()
    assert png_size(tmp_path / "perf" / "kernel-comparison-main.png")[0] == 1900  # the overview
    assert "REGRESSION" in (tmp_path / "perf" / "kernel-comparison-main.md").read_text()
