"""`kstat top`: a live, sortable table of every program's cost, recording while it shows."""

from __future__ import annotations

import argparse
import io
import math
import sys

import trio
from rich.console import Console

from kstat._logging import configure_logging
from kstat._version import __version__
from kstat.commands._options import (
    EXIT_OK,
    MIN_INTERVAL_NS,
    ArgumentParser,
    add_filter_flags,
    add_window_flags,
    interval,
    parse_with_filter,
    write_stdout,
)
from kstat.commands._window import (
    announce_when_ready,
    claim_baseline,
    collection_settings,
    make_sinks,
    run_window,
    sink_specs,
    stop_on_signal,
    watch_signals,
    writes_stdout,
)
from kstat.core.catalogue import NS_PER_S
from kstat.engine.scheduler import Collection, CollectionResult, StopRequest
from kstat.engine.summary import Summary
from kstat.errors import UsageError
from kstat.formats.report_json import report_to_json
from kstat.live.terminal import open_terminal
from kstat.live.view import TopView

# Exit status when there is no terminal to draw on: a usage error, as argparse's.
EXIT_NO_TERMINAL = 2


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat top",
        description=(
            "A live table of every program's kernel-side cost, refreshed every interval (the period): "
            "events/s, average runtime (the period's and the session's total), CPU % of one CPU, "
            "runs, owner (pid/comm). Keys: arrows select, enter opens a program's charts of the last "
            "minute, 1-9 sort by the Nth column shown, r reverses, "
            "/ filters, p pauses, h helps, q quits. It records while it shows: --sink streams every "
            "interval, and on quit the session's report goes to -output, or to stdout."
        ),
        allow_abbrev=False,
    )
    add_window_flags(
        parser,
        default_duration=None,
        report_default="standard output, once the screen is gone",
        sinks_default="none: the screen; on quit the report as -output says",
    )
    # bpftop's spelling of the interval, whole seconds or a duration: `-d 2`, `--delay 500ms`.
    parser.add_argument(
        "-d",
        "--delay",
        dest="interval",
        type=delay,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="the same as -interval, as bpftop spells it: seconds (2, 0.5) or a duration (500ms)",
    )
    add_filter_flags(parser)
    return parser


def delay(text: str) -> int:
    """bpftop's `--delay`: a bare number is seconds; anything else is read as -interval is."""
    try:
        seconds = float(text)
    except ValueError:
        return interval(text)
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"delay {text!r} must be a number of seconds above zero")
    delay_ns = round(seconds * NS_PER_S)
    if delay_ns < MIN_INTERVAL_NS:
        raise argparse.ArgumentTypeError(f"delay {text!r} is shorter than the minimum of 0.01 s (10ms)")
    return delay_ns


def parse(arguments: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    return parser, parse_with_filter(parser, arguments)


def run(options: argparse.Namespace) -> int:
    specs = sink_specs(options, default=None)
    on_stdout = [spec for spec in specs if writes_stdout(spec)]
    if on_stdout:
        raise UsageError(f"{on_stdout[0]} would write over the screen; give it a file (ndjson:PATH, -o FILE)")
    # Made first: their checks (an unwritable path, a port in use) fail before the screen is up.
    sinks = make_sinks(options, default=None)
    terminal = open_terminal()
    if terminal is None:
        sys.stderr.write(
            "kstat: error: kstat top needs a terminal (for a recording, use kstat serve or kstat)\n"
        )
        return EXIT_NO_TERMINAL
    # Log lines would scribble over the screen: they wait until it is gone (warnings only).
    held_logs = io.StringIO()
    configure_logging(verbose=options.verbose, stream=held_logs, quiet=not options.verbose)
    settings = collection_settings(options, duration_ns=None)
    result: list[CollectionResult] = []

    async def window(nursery: trio.Nursery) -> tuple[CollectionResult, int | None]:
        stop = StopRequest()
        view = TopView(lambda: stop.request("quit"), console=Console(file=terminal))
        summary = Summary(generator=f"kstat {__version__}", retain_unloaded=1000)
        collection = Collection(settings, [view, *sinks], stop, summary=summary, early=claim_baseline())
        await nursery.start(watch_signals, stop_on_signal(stop, collection))
        nursery.start_soon(announce_when_ready, collection, options)
        collected = await collection.run()
        result.append(collected)
        return collected, None

    try:
        status = run_window(window)
    finally:
        terminal.close()
        if held_logs.getvalue():
            sys.stderr.write(held_logs.getvalue())
    if result and options.output is None and not any(spec.startswith("json:") for spec in specs):
        # The screen is gone by now: the report goes where the table was.
        write_stdout(report_to_json(result[0].report))
    return status if status != EXIT_OK or not result else EXIT_OK
