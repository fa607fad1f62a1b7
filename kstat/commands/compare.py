"""`kstat compare BASELINE CURRENT`: two reports side by side, with a verdict for CI."""

from __future__ import annotations

import argparse
from pathlib import Path

from kstat.analysis.compare import (
    GROUPINGS,
    Threshold,
    compare,
    parse_threshold,
    render_json,
    render_markdown,
    render_table,
)
from kstat.api import load_report
from kstat.commands._options import EXIT_FAILURE, EXIT_OK, ArgumentParser, add_verbose_flag, write_stdout
from kstat.errors import UsageError
from kstat.pipeline.catalogue import metric_names


def _threshold(text: str) -> Threshold:
    try:
        return parse_threshold(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat compare",
        description=(
            "Compare two reports (kstat's, of any version, or the Go collect-kernel-stats tool's) "
            "program by program (matched by name and type) and in total. Exits 1 when a --fail-on "
            "threshold is exceeded."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("baseline", type=Path, metavar="BASELINE.json")
    parser.add_argument("current", type=Path, metavar="CURRENT.json")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    parser.add_argument(
        "--by",
        choices=GROUPINGS,
        default="name",
        help=(
            "one row per program name and type (default), or per pod, container or systemd unit: "
            "all their programs as one, pods of one workload matched across rollouts"
        ),
    )
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        type=_threshold,
        metavar="METRIC:+N%",
        help=(
            "fail (exit 1) when METRIC of a program or of the total changes beyond the limit: "
            "avg_runtime_ns:+10%% (grew more than 10%%), events_per_sec:-5%% (fell more than 5%%), "
            "recursion_misses:+0 (absolute); repeatable. Metrics: " + ", ".join(metric_names())
        ),
    )
    add_verbose_flag(parser)
    return parser


def run(options: argparse.Namespace) -> int:
    baseline, current = load_report(options.baseline), load_report(options.current)
    comparison = compare(baseline, current, by=options.by)
    violations = comparison.violations(options.fail_on)
    renderers = {"table": render_table, "markdown": render_markdown, "json": render_json}
    write_stdout(renderers[options.format](comparison, violations))
    return EXIT_FAILURE if violations else EXIT_OK
