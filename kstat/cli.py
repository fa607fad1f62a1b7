"""The command line: `kstat [flags]` collects (the seed's interface); subcommands `demo`,
`list`, `run`, `compare` and `plot`.

Errors become one line on stderr and an exit status here, and nowhere else:
0 success, 1 a runtime failure (privileges, kernel, output, a sink) or a regression found by
`compare`, 2 a usage error, 130 interrupted before anything could be collected; `run` exits
with its command's status.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

import structlog
import trio

from kstat import __version__
from kstat._logging import configure_logging
from kstat.api import load_report
from kstat.compare import Threshold, compare, parse_threshold, render_json, render_markdown, render_table
from kstat.demo import DEMO_PROGRAMS, run_demo, run_workload
from kstat.durations import parse_duration_ns
from kstat.errors import KstatError, OutputError, UsageError, sole_exception
from kstat.filters import ProgramFilter
from kstat.listing import list_programs, listing_json, listing_table
from kstat.plot import read_stream, report_figure, save_png, stream_figure
from kstat.run_command import CommandNotRunnable, CommandWindow
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
DEFAULT_RUN_INTERVAL = "100ms"
MIN_INTERVAL_NS = 10_000_000


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One usage line and one error line, exit 2, as argparse does, but never a traceback.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _duration_or_zero(text: str) -> int:
    try:
        return parse_duration_ns(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _duration(text: str) -> int:
    duration_ns = _duration_or_zero(text)
    if duration_ns <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be longer than zero")
    return duration_ns


def _interval(text: str) -> int:
    interval_ns = _duration(text)
    if interval_ns < MIN_INTERVAL_NS:
        raise argparse.ArgumentTypeError(f"interval {text!r} is shorter than the minimum of 10ms")
    return interval_ns


def _add_window_flags(
    parser: argparse.ArgumentParser, default_duration: str | None, default_interval: str = DEFAULT_INTERVAL
) -> None:
    # Go's flag package spells long flags with one dash; the seed documented them that way, so
    # both spellings work (`-duration 5m`, `--duration=5m`).
    if default_duration is not None:
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
        default=_interval(default_interval),
        metavar="DURATION",
        help=f"time between snapshots (default {default_interval}); the report uses the first and last",
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
            "Subcommands: demo (a self-contained demonstration), list (the loaded programs), "
            "run (collect for a command's lifetime), compare (two reports), plot (PNG charts)."
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
    parser.add_argument(
        "--work-scale",
        type=_positive_float,
        default=1.0,
        metavar="FACTOR",
        help="multiply each demo program's work per run (2 = a heavier build of the same programs)",
    )
    parser.add_argument(
        "--workload-only",
        action="store_true",
        help="only load the programs and drive the traffic, without collecting (for `kstat run`)",
    )
    parser.add_argument(
        "--linger",
        type=_duration_or_zero,
        default=_duration("1s"),
        metavar="DURATION",
        help=(
            "with --workload-only: keep the programs loaded this long after the traffic, as an agent "
            "outlives its load test, so that a collector sees their final counts (default 1s)"
        ),
    )
    return parser


def build_run_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="kstat run",
        usage="kstat run [options] -- COMMAND [ARGS...]",
        description=(
            "Collect for exactly the lifetime of COMMAND (like perf stat): the window opens, the "
            "command runs, the window closes when it exits. The report is written even when the "
            "command fails, and kstat exits with the command's own status. Programs the command "
            "loads count from their load."
        ),
        allow_abbrev=False,
    )
    # Short by default: a program the command unloads is seen up to its last snapshot.
    _add_window_flags(parser, default_duration=None, default_interval=DEFAULT_RUN_INTERVAL)
    _add_filter_flags(parser)
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="kstat compare",
        description=(
            "Compare two reports program by program (matched by name and type) and in total: "
            "average runtime, CPU %%, events/s and runs. Exits 1 when a --fail-on threshold is exceeded."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("baseline", type=Path, metavar="BASELINE.json")
    parser.add_argument("current", type=Path, metavar="CURRENT.json")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        type=_threshold,
        metavar="METRIC:+N%",
        help=(
            "fail (exit 1) when METRIC of a program or of the total changes beyond the limit: "
            "avg_runtime_ns:+10%% (grew more than 10%%), events_per_sec:-5%% (fell more than 5%%), "
            "recursion_misses:+0 (absolute); repeatable"
        ),
    )
    parser.add_argument("-verbose", "--verbose", "-v", action="store_true", help="log debug details")
    return parser


def build_plot_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="kstat plot",
        description=(
            "PNG charts: per-program average runtime, CPU %% and events/s of a report (beside a "
            "baseline with --baseline), or their time series from an NDJSON stream."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("input", type=Path, metavar="REPORT.json|STREAM.ndjson")
    parser.add_argument("--baseline", type=Path, metavar="BASELINE.json")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.png")
    parser.add_argument("--title", help="the chart's title (default: what and when)")
    parser.add_argument("-verbose", "--verbose", "-v", action="store_true", help="log debug details")
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _threshold(text: str) -> Threshold:
    try:
        return parse_threshold(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


SignalHandler = Callable[[signal.Signals], None]


def _stop_on_signal(stop: StopRequest) -> SignalHandler:
    def handle(signal_number: signal.Signals) -> None:
        if stop.event.is_set():
            log.warning("already stopping; the report is being written", signal=signal_number.name)
        else:
            log.info("stopping early; the report will cover the time collected", signal=signal_number.name)
            stop.request(signal_number.name)

    return handle


async def _watch_signals(handle: SignalHandler) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for signal_number in received:
            handle(signal.Signals(signal_number))


async def _collect_window(command: str, options: argparse.Namespace, sinks: list[Sink]) -> int:
    stop = StopRequest()
    exit_status: int | None = None
    async with trio.open_nursery() as nursery:
        result: CollectionResult
        if command == "demo":
            nursery.start_soon(_watch_signals, _stop_on_signal(stop))
            result, _ = await run_demo(
                duration_ns=options.duration,
                interval_ns=options.interval,
                rate_per_program=options.rate,
                work_scale=options.work_scale,
                sinks=sinks,
                user_stop=stop,
            )
        elif command == "run":
            settings = CollectionSettings(
                duration_ns=None, interval_ns=options.interval, program_filter=options.program_filter
            )
            window = CommandWindow(options.command, settings, sinks)
            nursery.start_soon(_watch_signals, window.relay_signal)
            result, exit_status = await window.run()
        else:
            nursery.start_soon(_watch_signals, _stop_on_signal(stop))
            settings = CollectionSettings(
                duration_ns=options.duration,
                interval_ns=options.interval,
                program_filter=options.program_filter,
            )
            result = await collect(settings, sinks, stop=stop)
        nursery.cancel_scope.cancel()
    for failure in result.failed_sinks:
        _say_error(f"{failure.sink}: {failure.error}")
    if exit_status is not None:
        # `kstat run` reports the command's fate, even when a sink failed (it said so above).
        return exit_status
    return EXIT_FAILURE if result.failed_sinks else EXIT_OK


def _compare(options: argparse.Namespace) -> int:
    baseline, current = load_report(options.baseline), load_report(options.current)
    comparison = compare(baseline, current)
    violations = comparison.violations(options.fail_on)
    renderers = {"table": render_table, "markdown": render_markdown, "json": render_json}
    _write_stdout(renderers[options.format](comparison, violations))
    return EXIT_FAILURE if violations else EXIT_OK


def _plot(options: argparse.Namespace) -> int:
    if options.input.suffix == ".ndjson":
        if options.baseline is not None:
            raise UsageError("--baseline goes with a JSON report, not with an NDJSON stream")
        figure = stream_figure(read_stream(options.input), title=options.title)
    else:
        baseline = load_report(options.baseline) if options.baseline is not None else None
        figure = report_figure(load_report(options.input), baseline, title=options.title)
    save_png(figure, options.output)
    log.info("chart written", path=str(options.output))
    return EXIT_OK


def _workload(options: argparse.Namespace) -> int:
    stop = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        # Ends the traffic and the linger early; the programs are unloaded as usual.
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    run_workload(options.duration / 1e9, options.rate, options.work_scale, options.linger / 1e9, stop)
    return EXIT_OK


def _list(options: argparse.Namespace) -> int:
    programs = list_programs(options.program_filter)
    _write_stdout(listing_json(programs) if options.json else listing_table(programs))
    return EXIT_OK


def _say(line: str) -> None:
    """A line on stderr, if there is a stderr (a closed one leaves only the exit status)."""
    if sys.stderr is not None:
        print(line, file=sys.stderr)


def _say_error(message: str) -> None:
    _say(f"kstat: error: {message}")


def _write_stdout(text: str) -> None:
    if sys.stdout is None:
        raise OutputError("standard output is closed; write to a file instead (-o FILE)")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()


_PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "collect": build_collect_parser,
    "demo": build_demo_parser,
    "list": build_list_parser,
    "run": build_run_parser,
    "compare": build_compare_parser,
    "plot": build_plot_parser,
}


def _parse(arguments: list[str]) -> tuple[str, argparse.ArgumentParser, argparse.Namespace]:
    command = "collect"
    if arguments and arguments[0] in _PARSERS:
        command = arguments.pop(0)
    parser = _PARSERS[command]()
    run_command: list[str] = []
    if command == "run":
        if "--" not in arguments:
            parser.error("give the command to run after --: kstat run [options] -- COMMAND [ARGS...]")
        split = arguments.index("--")
        arguments, run_command = arguments[:split], arguments[split + 1 :]
        if not run_command:
            parser.error("no command after --")
    options = parser.parse_args(arguments)
    options.command = run_command
    if command in ("collect", "list", "run"):
        try:
            options.program_filter = _program_filter(options)
        except UsageError as error:
            parser.error(str(error))
    return command, parser, options


def main(argv: Sequence[str] | None = None) -> int:
    command, parser, options = _parse(list(sys.argv[1:] if argv is None else argv))
    configure_logging(verbose=options.verbose)
    try:
        return _dispatch(command, parser, options)
    except UsageError as error:
        parser.error(str(error))
    except CommandNotRunnable as error:
        _say_error(str(error))
        return error.exit_status
    except KstatError as error:
        _say_error(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _say("kstat: interrupted before the window started")
        return EXIT_INTERRUPTED


def _dispatch(command: str, parser: argparse.ArgumentParser, options: argparse.Namespace) -> int:
    if command == "list":
        return _list(options)
    if command == "compare":
        return _compare(options)
    if command == "plot":
        return _plot(options)
    if command == "demo" and options.workload_only:
        return _workload(options)
    # Sinks are made first: their checks (an unwritable path) fail before the window.
    sinks = [make_sink(spec) for spec in _sink_specs(options)]
    try:
        return trio.run(_collect_window, command, options, sinks)
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if sole is None:
            raise
        raise sole from None
