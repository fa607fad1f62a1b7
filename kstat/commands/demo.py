"""`kstat demo`: load kstat's own demo programs, drive them with loopback traffic while
collecting, and show that the kernel's run counts equal the packets sent."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

import trio

from kstat.commands._options import (
    EXIT_OK,
    ArgumentParser,
    add_window_flags,
    duration,
    duration_or_zero,
    positive_float,
    positive_int,
)
from kstat.commands._window import make_sinks, program_keys, run_window, stop_on_signal, watch_signals
from kstat.engine.scheduler import CollectionResult, StopRequest
from kstat.testing.workload import DEMO_PROGRAMS, run_demo, run_workload

DEFAULT_DURATION = "5s"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat demo",
        description=(
            "Load "
            + ", ".join(program.name for program in DEMO_PROGRAMS)
            + " (socket filters of increasing weight), send them loopback UDP traffic while "
            "collecting, print the report and unload them."
        ),
        allow_abbrev=False,
    )
    add_window_flags(parser, DEFAULT_DURATION)
    parser.add_argument(
        "--rate",
        type=positive_int,
        default=10_000,
        metavar="PACKETS",
        help="packets per second sent to each demo program (default 10000)",
    )
    parser.add_argument(
        "--work-scale",
        type=positive_float,
        default=1.0,
        metavar="FACTOR",
        help="multiply each demo program's work per run (2 = a heavier build of the same programs)",
    )
    parser.add_argument(
        "--scope",
        choices=("demo", "host"),
        default="demo",
        help="demo: only the demo's own programs (default); host: every program loaded",
    )
    parser.add_argument(
        "--workload-only",
        action="store_true",
        help="only load the programs and drive the traffic, without collecting (for `kstat run`)",
    )
    parser.add_argument(
        "--linger",
        type=duration_or_zero,
        default=duration("1s"),
        metavar="DURATION",
        help=(
            "with --workload-only: keep the programs loaded this long after the traffic, as an agent "
            "outlives its load test, so that a collector sees their final counts (default 1s)"
        ),
    )
    return parser


def run(options: argparse.Namespace) -> int:
    if options.workload_only:
        return _workload(options)
    sinks = make_sinks(options)

    async def window(nursery: trio.Nursery) -> tuple[CollectionResult, int | None]:
        stop = StopRequest()
        await nursery.start(watch_signals, stop_on_signal(stop))
        result, _ = await run_demo(
            duration_ns=options.duration,
            interval_ns=options.interval,
            rate_per_program=options.rate,
            work_scale=options.work_scale,
            sinks=sinks,
            user_stop=stop,
            snapshot_method=options.snapshot_method,
            per_cpu=options.per_cpu,
            only_its_own=options.scope == "demo",
            program_keys=program_keys(options),
        )
        return result, None

    return run_window(window)


def _workload(options: argparse.Namespace) -> int:
    stop = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        # Ends the traffic and the linger early; the programs are unloaded as usual.
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    run_workload(options.duration / 1e9, options.rate, options.work_scale, options.linger / 1e9, stop)
    return EXIT_OK
