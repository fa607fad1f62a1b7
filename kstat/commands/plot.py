"""`kstat plot`: PNG charts of a report (beside a baseline) or of an NDJSON stream."""

from __future__ import annotations

import argparse
from pathlib import Path

from kstat._atomic import make_directory, write_atomically
from kstat._logging import get_logger
from kstat.analysis.charts import CHART_ORDER, comparison_charts
from kstat.analysis.plot import pyplot, read_stream, save_png, stream_figure
from kstat.commands._options import EXIT_OK, ArgumentParser, add_verbose_flag, write_stdout
from kstat.commands.compare import expand
from kstat.report_files import load_report

log = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat plot",
        description=(
            "PNG charts of a report, beside a baseline with --baseline (either may be the Go "
            "collect-kernel-stats tool's): per program CPU % and its peak, events/s and average "
            "runtime, their totals, program metadata, memory footprint, and an overview with a "
            "summary of the changes, runtime and CPU first (printed too); each panel the 12 "
            "costliest programs by its metric and the others as one bar. Several runs a side are "
            "drawn as their medians. Or the time series of an NDJSON stream."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="REPORT.json|STREAM.ndjson",
        help="a report, or several runs of one workload (each bar their median; quoted globs expanded)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="BASELINE.json",
        help=(
            "the baseline's report; repeated (or a quoted glob), its runs, drawn as their medians "
            "as kstat compare gates on them"
        ),
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE.png|DIR",
        help=(
            "FILE.png: the overview there, the other charts beside it (FILE-cpu.png, ...) and the "
            "summary in FILE-summary.txt; DIR: overview.png, cpu.png, ... and summary.txt in it"
        ),
    )
    parser.add_argument(
        "--all", action="store_true", help="every program, not only those that ran on either side"
    )
    parser.add_argument("--title", help="the charts' title (default: what and when)")
    add_verbose_flag(parser)
    return parser


def run(options: argparse.Namespace) -> int:
    output: Path = options.output
    inputs, baselines = expand(options.inputs), expand(options.baseline)
    pyplot("kstat plot")  # before any work: a missing extra is one line
    if len(inputs) == 1 and inputs[0].suffix == ".ndjson" and not baselines:
        if output.suffix != ".png":
            # A directory (`-o charts/`): the chart goes in it, not over it.
            output = chart_paths(output)["overview"].with_name("stream.png")
        save_png(stream_figure(read_stream(inputs[0]), title=options.title), output)
        log.info("chart written", path=str(output))
        return EXIT_OK
    # Beside a baseline, a stream is charted through its report (its last line).
    charts = comparison_charts(
        [load_report(path) for path in inputs],
        [load_report(path) for path in baselines] if baselines else None,
        include_idle=options.all,
        title=options.title,
    )
    paths = chart_paths(output)
    # Then the charts only some reports have (each owner's whole cost: `owners`).
    for name in (*CHART_ORDER, *(name for name in charts.figures if name not in CHART_ORDER)):
        save_png(charts.figures[name], paths[name] if name in paths else _extra_path(output, name))
    write_atomically(paths["summary"], charts.summary.encode() + b"\n")
    log.info("charts written", overview=str(paths["overview"]), charts=len(CHART_ORDER))
    write_stdout(charts.summary + "\n")
    return EXIT_OK


def _extra_path(output: Path, name: str) -> Path:
    return (
        output.with_name(f"{output.stem}-{name}.png") if output.suffix == ".png" else output / f"{name}.png"
    )


def chart_paths(output: Path) -> dict[str, Path]:
    """Where each chart goes: beside FILE.png, or into a directory."""
    if output.suffix == ".png":
        return {
            "overview": output,
            "summary": output.with_name(f"{output.stem}-summary.txt"),
            **{
                name: output.with_name(f"{output.stem}-{name}.png")
                for name in CHART_ORDER
                if name != "overview"
            },
        }
    make_directory(output)
    return {"summary": output / "summary.txt", **{name: output / f"{name}.png" for name in CHART_ORDER}}
