"""What the subcommands share: the parser that never prints a traceback, flag types, the
window and filter flags, exit statuses and the one-line error."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from kstat._stdio import print_stdout
from kstat.core.filters import ProgramFilter
from kstat.durations import parse_duration_ns
from kstat.errors import UsageError

if TYPE_CHECKING:
    from kstat.analysis.compare import Threshold

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

DEFAULT_INTERVAL: Final = "1s"
MIN_INTERVAL_NS: Final = 10_000_000


# The flags whose value is a duration: "-duration -1s" is a negative duration, not two flags.
_DURATION_FLAGS: Final = ("-duration", "--duration", "-interval", "--interval", "--linger")
_NEGATIVE_VALUE: Final = re.compile(r"^-[0-9.]")
MAX_PROGRAM_ID: Final = 2**32 - 1


def terminal_columns() -> int:
    """What `shutil.get_terminal_size` says of the width ($COLUMNS, else standard output's
    terminal, else 80), without importing shutil (with bz2 and lzma: 0.6 MB of every window,
    for a number argparse asks for whenever a flag is added)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class ArgumentParser(argparse.ArgumentParser):
    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own less its width's lookup (`terminal_columns`), less 2 as argparse's.
        return self.formatter_class(prog=self.prog, width=terminal_columns() - 2)  # type: ignore[call-arg]

    def error(self, message: str) -> NoReturn:
        # One usage line and one error line, exit 2, as argparse does, but never a traceback.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        words = list(sys.argv[1:] if args is None else args)
        # `-duration -1s`: argparse would take "-1s" for a flag; joined, it reaches the value's
        # own check, which says what is wrong with it.
        joined: list[str] = []
        for word in words:
            if joined and joined[-1] in _DURATION_FLAGS and _NEGATIVE_VALUE.match(word):
                joined[-1] = f"{joined[-1]}={word}"
            else:
                joined.append(word)
        return super().parse_args(joined, namespace)

    def _get_option_tuples(self, option_string: str) -> list[tuple[Any, ...]]:
        # No abbreviations in either spelling: `-d 1s` must not quietly mean `-duration 1s`. A
        # short flag with its value attached (`-o/tmp/r.json`) still works.
        exact = option_string.split("=", 1)[0]
        return [
            found
            for found in super()._get_option_tuples(option_string)
            if found[1] == exact or (len(found[1]) == 2 and option_string.startswith(found[1]))
        ]


def duration_or_zero(text: str) -> int:
    try:
        return parse_duration_ns(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def duration(text: str) -> int:
    duration_ns = duration_or_zero(text)
    if duration_ns <= 0:
        raise argparse.ArgumentTypeError(
            f"duration {text!r} must be longer than zero (to collect until stopped: kstat serve)"
        )
    return duration_ns


def interval(text: str) -> int:
    interval_ns = duration(text)
    if interval_ns < MIN_INTERVAL_NS:
        raise argparse.ArgumentTypeError(f"interval {text!r} is shorter than the minimum of 10ms")
    return interval_ns


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def program_id(text: str) -> int:
    """A program id: the kernel's are 32-bit."""
    value = positive_int(text)
    if value > MAX_PROGRAM_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is no program id (they are below 2^32)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def threshold_type(text: str) -> Threshold:
    """`--fail-on METRIC:+N%`."""
    # Imported here: the analyses are no collecting command's to load.
    from kstat.analysis.compare import parse_threshold  # noqa: PLC0415

    try:
        return parse_threshold(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def alpha_type(text: str) -> float:
    """`--alpha`: a significance level between 0 and 1."""
    from kstat.analysis.significance import parse_alpha  # noqa: PLC0415

    try:
        return parse_alpha(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-verbose", "--verbose", "-v", action="store_true", help="log debug details")


# Where the report goes without -output or --sink, as most collecting commands do it.
REPORT_ON_STDOUT: Final = "standard output"
SINKS_BY_DEFAULT: Final = "stdout, or only the -output file when it is given"


def add_window_flags(
    parser: argparse.ArgumentParser,
    default_duration: str | None,
    default_interval: str = DEFAULT_INTERVAL,
    *,
    report_default: str = REPORT_ON_STDOUT,
    sinks_default: str = SINKS_BY_DEFAULT,
) -> None:
    """The window's flags; `report_default` and `sinks_default` say (in --help) what the
    command does when -output and --sink are not given."""
    # Imported here: the sampler (and the report arithmetic under it) is for commands that
    # collect; `kstat list` parses its flags without it.
    from kstat.engine.sampler import SNAPSHOT_METHODS  # noqa: PLC0415

    # Go's flag package spells long flags with one dash; the seed documented them that way, so
    # both spellings work (`-duration 5m`, `--duration=5m`).
    if default_duration is not None:
        parser.add_argument(
            "-duration",
            "--duration",
            type=duration,
            default=duration(default_duration),
            metavar="DURATION",
            help=f"how long to collect, e.g. 500ms, 30s, 5m, 1h30m (default {default_duration})",
        )
    parser.add_argument(
        "-interval",
        "--interval",
        type=interval,
        default=interval(default_interval),
        metavar="DURATION",
        help=f"time between snapshots (default {default_interval}); the report uses the first and last",
    )
    parser.add_argument(
        "-output",
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help=f"write the JSON report to FILE, atomically (default: {report_default})",
    )
    parser.add_argument(
        "--keys",
        choices=("full-name", "kernel-name"),
        default="full-name",
        help=(
            "the report's program_stats keys: full-name (default: each program's full BTF name, "
            "<name>#<id> where names are shared) or kernel-name (the kernel's 15-character name, "
            "as the Go collect-kernel-stats tool keys them, for scripts that join on those keys; "
            "where programs share one, the first by id keeps it and the others are "
            "<kernel name>#<id>, listed in the report's colliding_keys, so none is dropped)"
        ),
    )
    parser.add_argument(
        "--snapshot-method",
        choices=SNAPSHOT_METHODS,
        default="auto",
        help=(
            "how each pass reads the programs: auto (kstat's BPF iterator, one read for all, where "
            "the kernel allows it; else syscalls), iterator (insist), syscalls (four a program)"
        ),
    )
    parser.add_argument(
        "--per-cpu",
        action="store_true",
        help=(
            "keep each program's run time and runs per CPU too (the BPF iterator only; syscalls "
            "have only sums): the report's per_cpu and busiest_cpu_percent, NDJSON records per "
            "CPU, Prometheus series with a cpu label, kstat top's per-CPU bars"
        ),
    )
    parser.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="SPEC",
        dest="sinks",
        help=(
            "where the window's events and report go; repeatable: stdout, json:PATH, ndjson:PATH, "
            "ndjson:-, ndjson:PATH?layout=records (flat records for log stores), "
            "statsd://HOST:PORT?prefix=P[&tags=dogstatsd][&transport=tcp], "
            "prometheus://[HOST]:PORT (a /metrics endpoint; 127.0.0.1:20915 by default), "
            "otlp://HOST:PORT (OpenTelemetry over HTTP, the otlp extra), or a "
            f"third-party sink (default: {sinks_default})"
        ),
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="FILE",
        help=(
            "once the window's baseline reading is taken, write FILE (atomically: it appears whole): "
            "what a harness waits for before it starts its load"
        ),
    )
    parser.add_argument(
        "--ready-fd",
        type=non_negative_int,
        metavar="FD",
        help=(
            "once the baseline reading is taken, write READY=1 and a newline to the inherited FD, "
            "then close it"
        ),
    )
    add_verbose_flag(parser)


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "selecting programs", "every criterion given must match; a repeated one matches any of its values"
    )
    group.add_argument("--id", dest="ids", type=program_id, action="append", default=[], metavar="ID")
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
        type=positive_int,
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
    group.add_argument(
        "--container",
        dest="containers",
        action="append",
        default=[],
        metavar="ID|NAME",
        help="programs held by a process in this container (its id, a prefix of it, or its name)",
    )
    group.add_argument("--pod", dest="pods", action="append", default=[], metavar="NAME|UID")
    group.add_argument("--namespace", dest="namespaces", action="append", default=[], metavar="NAMESPACE")
    group.add_argument(
        "--unit",
        dest="units",
        action="append",
        default=[],
        metavar="UNIT",
        help="a systemd unit, e.g. nginx.service",
    )
    group.add_argument(
        "--attached",
        dest="attached",
        action="append",
        default=[],
        metavar="PLACE",
        help="programs attached here: a network device (lo, eth0@NETNS) or a cgroup (its path, or its end)",
    )
    group.add_argument(
        "--attach-type",
        dest="attach_types",
        action="append",
        default=[],
        metavar="HOOK",
        help="programs attached this way: xdp, tc, tc/ingress, tcx, cgroup, cgroup/egress and the like",
    )
    group.add_argument(
        "--host-root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="where the host's filesystem is (for kstat in a container: /host), to name pods (default /)",
    )


def program_filter(options: argparse.Namespace) -> ProgramFilter:
    """The selection the filter flags describe; UsageError for a bad pattern or type."""
    return ProgramFilter(
        ids=tuple(options.ids),
        name=options.name,
        types=tuple(options.types),
        pids=tuple(options.pids),
        commands=tuple(options.commands),
        containers=tuple(options.containers),
        pods=tuple(options.pods),
        namespaces=tuple(options.namespaces),
        units=tuple(options.units),
        attached=tuple(options.attached),
        attach_types=tuple(options.attach_types),
    )


def parse_with_filter(parser: argparse.ArgumentParser, arguments: list[str]) -> argparse.Namespace:
    """Parse, then build the program filter (a bad regex or type is a usage error too)."""
    options = parser.parse_args(arguments)
    try:
        options.program_filter = program_filter(options)
    except UsageError as error:
        parser.error(str(error))
    return options


def write_stdout(text: str, *, instead: str = "write to a file instead (-o FILE)") -> None:
    """A command's output; a reader that went away (`| head`) ends it quietly. `instead` says
    what to do when there is no standard output, as true for the command as it can be."""
    print_stdout(text, instead=instead)
