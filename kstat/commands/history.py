"""`kstat history REPORT...`: a job's runs over time, and the last run against the ones before."""

from __future__ import annotations

import argparse
from pathlib import Path

from kstat._logging import get_logger
from kstat.analysis.compare import FORMATS, compare_runs, render
from kstat.analysis.history import history_figure, history_table, in_order
from kstat.analysis.plot import pyplot, save_png
from kstat.analysis.significance import DEFAULT_ALPHA
from kstat.commands._options import (
    EXIT_FAILURE,
    EXIT_OK,
    ArgumentParser,
    add_verbose_flag,
    alpha_type,
    positive_int,
    threshold_type,
    write_stdout,
)
from kstat.commands.compare import expand
from kstat.errors import UsageError
from kstat.report_files import load_report

log = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat history",
        description=(
            "The trend of a job's reports across runs, oldest to newest by their timestamps: a "
            "table of the totals, and with -o a chart of the total CPU share and of the costliest "
            "programs' average runtime and events/s, the last run marked. With --last N, the last "
            "run is compared with the N before it (as kstat compare BEFORE... -- LAST)."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("reports", nargs="+", metavar="REPORT.json", help="reports, or quoted globs")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE.png", help="write the chart there")
    parser.add_argument(
        "--last", type=positive_int, metavar="N", help="compare the last run with the N before it"
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        type=threshold_type,
        metavar="METRIC:+N%",
        help="with --last: exit 1 when the last run is beyond the limit, as kstat compare",
    )
    parser.add_argument("--alpha", type=alpha_type, default=DEFAULT_ALPHA, help="as kstat compare's")
    parser.add_argument("--title", help="the chart's title")
    add_verbose_flag(parser)
    return parser


def run(options: argparse.Namespace) -> int:
    if options.output is not None and options.output.suffix != ".png":
        raise UsageError(f"-o {options.output}: the chart is a PNG file (FILE.png)")
    if options.fail_on and options.last is None:
        raise UsageError("--fail-on needs --last N: the last run is what it judges")
    if options.output is not None:
        pyplot("kstat history -o FILE.png")  # before any work: a missing extra is one line
    paths = expand(options.reports)
    runs = in_order(paths, [load_report(path) for path in paths])
    if options.last is not None and len(runs) < options.last + 1:
        raise UsageError(f"--last {options.last} needs {options.last + 1} reports; {len(runs)} given")
    output = [history_table(runs)]
    status = EXIT_OK
    if options.last is not None:
        before = [run.report for run in runs[-1 - options.last : -1]]
        comparison = compare_runs(before, [runs[-1].report], alpha=options.alpha)
        violations = comparison.violations(options.fail_on)
        rendered = render(comparison, violations, options.format)
        output = [rendered] if options.format == "json" else [*output, "\n", rendered]
        status = EXIT_FAILURE if violations else EXIT_OK
    if options.output is not None:
        save_png(history_figure(runs, compared=options.last or 0, title=options.title), options.output)
        log.info("chart written", path=str(options.output))
    write_stdout(
        "".join(output),
        instead="kstat history writes its table only there: redirect it to a file (> FILE; -o is the chart)",
    )
    return status
