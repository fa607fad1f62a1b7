"""The command line: `kstat [flags]` collects (the seed's interface), `kstat demo` shows it off.

Errors become one line on stderr and an exit status here, and nowhere else:
0 success, 1 a runtime failure (privileges, kernel, output, a sink), 2 a usage error,
130 interrupted before anything could be collected.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import structlog
import trio

from kstat import __version__
from kstat._logging import configure_logging
from kstat.demo import DEMO_PROGRAMS, run_demo
from kstat.durations import parse_duration_ns
from kstat.errors import KstatError, UsageError, sole_exception
from kstat.filters import ProgramFilter
from kstat.listing import list_programs, listing_json, listing_table
from kstat.session import CollectionResult, CollectionSettings, StopRequest, collect
from kstat.sink import Sink
from kstat.sink_specs import make_sink
from sinks.stdout import silence_stdout

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_DURATION = "60s"
DEFAULT_DEMO_DURATION = "5s"
DEFAULT_INTERVAL = "1s"
MIN_INTERVAL_NS = 10_000_000
_SUBCOMMANDS = ("collect", "demo", "list")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One usage line and one error line, exit 2, as argparse does, but never a traceback.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _duration(text: str) -> int:
    try:
        duration_ns = parse_duration_ns(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if duration_ns <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be longer than zero")
    return duration_ns


def _interval(text: str) -> int:
    interval_ns = _duration(text)
    if interval_ns < MIN_INTERVAL_NS:
        raise argparse.ArgumentTypeError(f"interval {text!r} is shorter than the minimum of 10ms")
    return interval_ns


def _add_window_flags(parser: argparse.ArgumentParser, default_duration: str) -> None:
    # Go's flag package spells long flags with one dash; the seed documented them that way, so
    # both spellings work (`-duration 5m`, `--duration=5m`).
    parser.add_argument(
        "-duration",
        "--duration",
        type=_duration,
        default=_duration(default_duration),
        metavar="DURATION",
        help=f"how long to collect, e.g. 500ms, 30s, 5m, 1h30m (default {default_duration})",
    )
    parser.add_argument(
        "-interval",
        "--interval",
        type=_interval,
        default=_interval(DEFAULT_INTERVAL),
        metavar="DURATION",
        help=f"time between snapshots (default {DEFAULT_INTERVAL}); the report uses the first and last",
    )
    parser.add_argument(
        "-output",
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help="write the JSON report to FILE, atomically (default: standard output)",
    )
    parser.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="SPEC",
        dest="sinks",
        help=(
            "where snapshots and the report go; repeatable: stdout, json:PATH, ndjson:PATH, ndjson:-, "
            "statsd://HOST:PORT?prefix=P[&tags=dogstatsd][&transport=tcp], or a third-party sink "
            "(default: stdout, or only the -output file when it is given)"
        ),
    )
    parser.add_argument("-verbose", "--verbose", "-v", action="store_true", help="log debug details")


def _add_filter_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "selecting programs", "every criterion given must match; a repeated one matches any of its values"
    )
    group.add_argument("--id", dest="ids", type=_positive_int, action="append", default=[], metavar="ID")
    group.add_argument(
        "--name", metavar="REGEX", help="a regular expression searched in the full and the kernel name"
    )
    group.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="TYPE",
        help="e.g. XDP, SchedCLS, sched_cls",
    )
    group.add_argument(
        "--pid",
        dest="pids",
        type=_positive_int,
        action="append",
        default=[],
        metavar="PID",
        help="programs held open by this process",
    )
    group.add_argument(
        "--comm",
        dest="commands",
        action="append",
        default=[],
        metavar="COMMAND",
        help="programs held open by a process with this command name",
    )


def _program_filter(options: argparse.Namespace) -> ProgramFilter:
    return ProgramFilter(
        ids=tuple(options.ids),
        name=options.name,
        types=tuple(options.types),
        pids=tuple(options.pids),
        commands=tuple(options.commands),
    )


def build_list_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="kstat list",
        description=(
            "List the loaded eBPF programs (id, type, full name, owning processes, attachments) "
            "without a collection window."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument("-verbose", "--verbose", "-v", action="store_true", help="log debug details")
    _add_filter_flags(parser)
    return parser


def build_collect_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="kstat",
        description=(
            "Measure what loaded eBPF programs cost inside the kernel: enable the kernel's run-time "
            "statistics, sample every program, and report per-program runtime, runs, events/s, "
            "average runtime, estimated CPU %% and recursion misses over the window. "
            "Subcommands: demo (a self-contained demonstration), list (the loaded programs)."
        ),
        allow_abbrev=False,
    )
    _add_window_flags(parser, DEFAULT_DURATION)
    _add_filter_flags(parser)
    parser.add_argument("--version", action="version", version=f"kstat {__version__}")
    return parser


def build_demo_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="kstat demo",
        description=(
            "Load "
            + ", ".join(program.name for program in DEMO_PROGRAMS)
            + " (socket filters of increasing weight), send them loopback UDP traffic while "
            "collecting, print the report and unload them."
        ),
        allow_abbrev=False,
    )
    _add_window_flags(parser, DEFAULT_DEMO_DURATION)
    parser.add_argument(
        "--rate",
        type=_positive_int,
        default=10_000,
        metavar="PACKETS",
        help="packets per second sent to each demo program (default 10000)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _sink_specs(options: argparse.Namespace) -> list[str]:
    """The seed's `-output FILE` is shorthand for `--sink json:FILE`; stdout is the default."""
    specs: list[str] = list(options.sinks)
    if options.output is not None:
        specs.insert(0, f"json:{options.output}")
    if not specs:
        specs.append("stdout")
    writers_of_stdout = [spec for spec in specs if spec in ("stdout", "ndjson:-")]
    if len(writers_of_stdout) > 1:
        raise UsageError(
            f"{' and '.join(writers_of_stdout)} would both write standard output; the NDJSON stream "
            "already ends with the report"
        )
    return specs


async def _watch_signals(stop: StopRequest) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for signal_number in received:
            name = signal.Signals(signal_number).name
            if stop.event.is_set():
                log.warning("already stopping; the report is being written", signal=name)
            else:
                log.info("stopping early; the report will cover the time collected", signal=name)
                stop.request(name)


async def _run(command: str, options: argparse.Namespace, sinks: list[Sink]) -> int:
    stop = StopRequest()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, stop)
        result: CollectionResult
        if command == "demo":
            result, _ = await run_demo(
                duration_ns=options.duration,
                interval_ns=options.interval,
                rate_per_program=options.rate,
                sinks=sinks,
                user_stop=stop,
            )
        else:
            settings = CollectionSettings(
                duration_ns=options.duration,
                interval_ns=options.interval,
                program_filter=options.program_filter,
            )
            result = await collect(settings, sinks, stop=stop)
        nursery.cancel_scope.cancel()
    if result.failed_sinks:
        for failure in result.failed_sinks:
            print(f"kstat: error: {failure.sink}: {failure.error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _list(options: argparse.Namespace) -> int:
    try:
        programs = list_programs(options.program_filter)
    except KstatError as error:
        print(f"kstat: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    text = listing_json(programs) if options.json else listing_table(programs)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = "collect"
    if arguments and arguments[0] in _SUBCOMMANDS:
        command = arguments.pop(0)
    builders = {"demo": build_demo_parser, "list": build_list_parser, "collect": build_collect_parser}
    parser = builders[command]()
    options = parser.parse_args(arguments)
    configure_logging(verbose=options.verbose)
    if command != "demo":
        try:
            options.program_filter = _program_filter(options)
        except UsageError as error:
            parser.error(str(error))
    if command == "list":
        return _list(options)
    try:
        # Sinks are made first: their checks (an unwritable path) fail before the window.
        sinks = [make_sink(spec) for spec in _sink_specs(options)]
    except UsageError as error:
        parser.error(str(error))
    except KstatError as error:
        print(f"kstat: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        try:
            return trio.run(_run, command, options, sinks)
        except BaseExceptionGroup as group:
            sole = sole_exception(group)
            if sole is None:
                raise
            raise sole from None
    except KstatError as error:
        print(f"kstat: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("kstat: interrupted before the window started", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> NoReturn:
    """The `kstat` and `collect-kernel-stats` console scripts."""
    sys.exit(main())
