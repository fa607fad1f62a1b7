"""`kstat plot`: PNG charts of a report (beside a baseline) or of an NDJSON stream."""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog

from kstat.analysis.plot import read_stream, report_figure, save_png, stream_figure
from kstat.api import load_report
from kstat.commands._options import EXIT_OK, ArgumentParser, add_verbose_flag

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat plot",
        description=(
            "PNG charts: per-program average runtime, CPU %% and events/s of a report (beside a "
            "baseline with --baseline; either may be the Go collect-kernel-stats tool's), or their "
            "time series from an NDJSON stream."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("input", type=Path, metavar="REPORT.json|STREAM.ndjson")
    parser.add_argument("--baseline", type=Path, metavar="BASELINE.json")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.png")
    parser.add_argument("--title", help="the chart's title (default: what and when)")
    add_verbose_flag(parser)
    return parser


def run(options: argparse.Namespace) -> int:
    if options.input.suffix == ".ndjson" and options.baseline is None:
        figure = stream_figure(read_stream(options.input), title=options.title)
    else:
        # Beside a baseline, a stream is charted through its report (its last line).
        baseline = load_report(options.baseline) if options.baseline is not None else None
        figure = report_figure(load_report(options.input), baseline, title=options.title)
    save_png(figure, options.output)
    log.info("chart written", path=str(options.output))
    return EXIT_OK
