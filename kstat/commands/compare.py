"""`kstat compare BASELINE CURRENT`: two reports side by side, with a verdict for CI; or
`kstat compare BASELINE... -- CURRENT...`: several runs per side, medians and a rank test."""

from __future__ import annotations

import argparse
import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from kstat.analysis.compare import FORMATS, GROUPINGS, compare_runs, render
from kstat.analysis.significance import DEFAULT_ALPHA
from kstat.commands._options import (
    EXIT_FAILURE,
    EXIT_OK,
    ArgumentParser,
    add_verbose_flag,
    alpha_type,
    threshold_type,
    write_stdout,
)
from kstat.core.catalogue import metric_names
from kstat.core.owner_cost import owner_metric_names
from kstat.errors import UsageError
from kstat.report_files import load_report

# Its output is the point: info logs only with -v (kstat.cli).
PRINTS_ITS_RESULT: Final = True


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat compare",
        usage=(
            "kstat compare [options] BASELINE.json CURRENT.json\n"
            "       kstat compare [options] BASELINE.json... -- CURRENT.json..."
        ),
        description=(
            "Compare reports (kstat's, of any version, or the Go collect-kernel-stats tool's) "
            "program by program (matched by name and type) and in total: one run per side, or "
            "several runs of the same workload per side (their medians, and a two-sided "
            "Mann-Whitney U test of each change; ~ where it is not significant). Quoted globs are "
            "expanded ('runs/base-*.json'). Exits 1 when a --fail-on threshold is exceeded."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("reports", type=str, nargs="+", metavar="REPORT.json", help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, default="table")
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
        type=threshold_type,
        metavar="METRIC:+N%",
        help=(
            "fail (exit 1) when METRIC of a program or of the total changes beyond the limit: "
            "avg_runtime_ns:+10%% (grew more than 10%%), events_per_sec:-5%% (fell more than 5%%), "
            "recursion_misses:+0 (absolute); or, with owner:, of each owner command's whole cost "
            "(its own CPU beside its programs', from the reports' owners sections): "
            "owner:whole_cpu_percent:+10%%; repeatable. Metrics: "
            + ", ".join(metric_names())
            + ". Owner metrics: "
            + ", ".join(owner_metric_names())
        ),
    )
    parser.add_argument(
        "--alpha",
        type=alpha_type,
        default=DEFAULT_ALPHA,
        help=(
            f"the significance level of the rank test with several runs per side (default "
            f"{DEFAULT_ALPHA}); --fail-on only fires on a significant change where the runs allow a test"
        ),
    )
    parser.add_argument(
        "--show-idle",
        action="store_true",
        help=(
            "also list programs without a run on either side in the table and markdown (hidden by "
            "default, and counted under the table; JSON always has every row)"
        ),
    )
    add_verbose_flag(parser)
    return parser


def expand(words: Sequence[str]) -> list[Path]:
    """Report paths, each quoted glob replaced by what it matches (sorted)."""
    paths: list[Path] = []
    for word in words:
        if glob.has_magic(word):
            matched = sorted(glob.glob(word))
            if not matched:
                raise UsageError(f"no reports match {word!r}")
            paths += [Path(found) for found in matched]
        else:
            paths.append(Path(word))
    return paths


def parse(words: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """BASELINE CURRENT, or BASELINE... -- CURRENT... (every option before the `--`)."""
    parser = build_parser()
    words = list(words)
    if "--" in words:
        cut = words.index("--")
        options = parser.parse_args(words[:cut])
        baselines, currents = options.reports, words[cut + 1 :]
        if not currents:
            parser.error("no current reports after --: BASELINE.json... -- CURRENT.json...")
    else:
        options = parser.parse_args(words)
        if len(options.reports) != 2:
            parser.error(
                f"expected BASELINE.json CURRENT.json, or BASELINE.json... -- CURRENT.json... "
                f"(got {len(options.reports)} reports and no --)"
            )
        baselines, currents = options.reports[:1], options.reports[1:]
    try:
        options.baselines, options.currents = expand(baselines), expand(currents)
    except UsageError as error:
        parser.error(str(error))
    return parser, options


def run(options: argparse.Namespace) -> int:
    baselines = [load_report(path) for path in options.baselines]
    currents = [load_report(path) for path in options.currents]
    comparison = compare_runs(baselines, currents, by=options.by, alpha=options.alpha)
    violations = comparison.violations(options.fail_on)
    unchecked = comparison.unchecked(options.fail_on)
    write_stdout(
        render(comparison, violations, options.format, show_idle=options.show_idle, unchecked=unchecked),
        instead="kstat compare writes only there: redirect it to a file (> FILE)",
    )
    return EXIT_FAILURE if violations else EXIT_OK
