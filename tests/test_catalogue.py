"""The metric catalogue drives every output: the table of docs/report.md, and a new metric that needs
nothing but its entry to appear in the report, NDJSON, StatsD, compare, plot, budgets and the
pytest summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kstat.core.catalogue import (
    METRICS,
    README_END,
    README_START,
    Kind,
    View,
    markdown_table,
    updated_readme,
)

REPO = Path(__file__).parents[1]


def test_the_report_page_table_is_the_catalogue() -> None:
    page = (REPO / "docs" / "report.md").read_text()
    assert README_START in page and README_END in page
    table = page.split(README_START, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"
    # After a change to the catalogue, `python -m kstat.core.catalogue docs/report.md` updates it.
    assert table == markdown_table()
    assert updated_readme(page) == page


def test_every_metric_is_described_whole() -> None:
    names = [metric.name for metric in METRICS]
    assert len(names) == len(set(names))
    for metric in METRICS:
        assert metric.title and metric.heading and metric.description and metric.formula and metric.unit
        # Counters add up over intervals; the Go tool's fields are whole numbers where it had them.
        if metric.kind is Kind.COUNTER:
            assert metric.integral
    assert {metric.name for metric in METRICS if metric.seed} == {
        "runtime_ns",
        "run_count",
        "events_per_sec",
        "avg_runtime_ns",
        "estimated_cpu_percent",
        "recursion_misses",
    }


# Run in a fresh interpreter: the entry is added to the catalogue before anything else is
# imported, exactly as if it were written in kstat/core/catalogue.py.
NEW_METRIC = """
import json, sys
from kstat.core import catalogue
from kstat.core.catalogue import Kind, Metric, View

catalogue.METRICS = (
    *catalogue.METRICS,
    Metric(
        name="runs_per_runtime_ms",
        kind=Kind.GAUGE,
        unit="runs / ms",
        title="Runs per millisecond of runtime",
        heading="runs/ms",
        description="how many runs fit in a millisecond of the program's time",
        formula="`run_count / runtime_ms`",
        compute=lambda span: span.run_count * 1e6 / span.runtime_ns if span.runtime_ns else 0.0,
        integral=False,
        views=View.COMPARE | View.CHART | View.SUMMARY | View.EXPORT,
    ),
)

from kstat.analysis.compare import compare, parse_threshold, render_markdown
from kstat.analysis.charts import comparison_charts
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.formats.ndjson import interval_to_dict
from kstat.formats.report_json import report_from_dict, report_to_dict
from kstat.testing.budget import expect_program
from kstat.testing.pytest_plugin import summarise
from kstat.formats.statsd import IntervalLines
from kstat.sinks.statsd import StatsdSettings
from tests.builders import events_of, program, report_of, snapshot

snapshots = [
    snapshot(0, 0.0, program(1, 0, 0, name="p")),
    snapshot(1, 1.0, program(1, 2_000_000, 50, name="p")),
]
report = report_of(*snapshots)
written = report_to_dict(report)
lines = IntervalLines(StatsdSettings("h", prefix="k"))
sent = []
ndjson = None
for event in events_of(*snapshots):
    if isinstance(event, WindowStarted):
        lines.start(event)
    elif isinstance(event, IntervalEnded):
        sent += lines.lines_for(event.delta)
        ndjson = interval_to_dict(event)
comparison = compare(report, report)
expect_program(report, "p").at_most("runs_per_runtime_ms", 25.0)
print(json.dumps({
    "report": written["program_stats"]["p"]["runs_per_runtime_ms"],
    "report_total": written["total_runs_per_runtime_ms"],
    "read_back": report_from_dict(written).program("p").value("runs_per_runtime_ms"),
    "ndjson": ndjson["program_stats"]["p"]["runs_per_runtime_ms"],
    "statsd": [line for line in sent if "runs_per_runtime_ms" in line],
    "compare": "runs/ms" in render_markdown(comparison, []),
    "threshold": parse_threshold("runs_per_runtime_ms:-10%").metric,
    "chart": [axis.get_title() for axis in comparison_charts(report, report).figures["totals"].axes],
    "summary": "runs/ms" in summarise(report),
    "readme": "runs_per_runtime_ms" in catalogue.markdown_table(),
}))
"""


def test_a_new_metric_is_one_catalogue_entry_and_its_formula() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", NEW_METRIC], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    found = json.loads(shown.stdout.splitlines()[-1])
    # 50 runs in 2 ms of runtime.
    assert found["report"] == found["report_total"] == found["read_back"] == found["ndjson"] == 25.0
    assert found["statsd"] == ["k.p.runs_per_runtime_ms:25|g", "k.total.runs_per_runtime_ms:25|g"]
    assert found["compare"] and found["summary"] and found["readme"]
    assert found["threshold"] == "runs_per_runtime_ms"
    assert "Total runs per millisecond of runtime" in found["chart"]


def test_views_say_where_a_metric_shows() -> None:
    assert {metric.name for metric in METRICS if View.EXPORT in metric.views} == {
        "runtime_ns",
        "run_count",
        "events_per_sec",
        "avg_runtime_ns",
        "estimated_cpu_percent",
        "recursion_misses",
        "jited_size_bytes",
        "xlated_size_bytes",
        "verified_instructions",
        "num_maps",
        "memlock_bytes",
        "maps_memlock_bytes",
    }
    # Prometheus gets what does not need an interval: counters, and the programs' properties.
    assert {metric.name for metric in METRICS if metric.prometheus is not None} == {
        metric.name for metric in METRICS if metric.kind in (Kind.COUNTER, Kind.PROPERTY)
    }
