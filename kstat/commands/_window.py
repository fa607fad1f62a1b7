"""What the commands that collect a window share: sinks from flags, signals, the outcome."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Awaitable, Callable

import trio

from kstat._logging import get_logger
from kstat.commands._options import EXIT_FAILURE, EXIT_OK, say_error
from kstat.errors import UsageError, sole_exception
from kstat.pipeline.events import Sink
from kstat.pipeline.scheduler import Collection, CollectionResult, StopRequest
from kstat.pipeline.sink_specs import make_sink

log = get_logger(__name__)

SignalHandler = Callable[[signal.Signals], None]
# Runs the window inside the command's nursery; returns its result and, for `kstat run`, the
# command's exit status.
WindowBody = Callable[[trio.Nursery], Awaitable[tuple[CollectionResult, int | None]]]


def sink_specs(options: argparse.Namespace, default: str = "stdout") -> list[str]:
    """The seed's `-output FILE` is shorthand for `--sink json:FILE`; `default` when none given."""
    specs: list[str] = list(options.sinks)
    if options.output is not None:
        specs.insert(0, f"json:{options.output}")
    if not specs:
        specs.append(default)
    writers_of_stdout = [spec for spec in specs if spec in ("stdout", "ndjson:-")]
    if len(writers_of_stdout) > 1:
        raise UsageError(
            f"{' and '.join(writers_of_stdout)} would both write standard output; the NDJSON stream "
            "already ends with the report"
        )
    return specs


def make_sinks(options: argparse.Namespace, default: str = "stdout") -> list[Sink]:
    """Made before the window, so that their checks (an unwritable path, a port in use) fail
    first."""
    return [make_sink(spec) for spec in sink_specs(options, default)]


def stop_on_signal(stop: StopRequest) -> SignalHandler:
    def handle(signal_number: signal.Signals) -> None:
        if stop.event.is_set():
            log.warning("already stopping; the report is being written", signal=signal_number.name)
        else:
            log.info("stopping early; the report will cover the time collected", signal=signal_number.name)
            stop.request(signal_number.name)

    return handle


async def watch_signals(handle: SignalHandler) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for signal_number in received:
            handle(signal.Signals(signal_number))


async def reopen_on_sighup(collection: Collection) -> None:
    """SIGHUP (logrotate's `postrotate`): the sinks reopen the files they write by name."""
    with trio.open_signal_receiver(signal.SIGHUP) as received:
        async for _ in received:
            collection.reopen_files()


def run_window(body: WindowBody) -> int:
    """Run a window command under trio; its exit status."""

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            result, exit_status = await body(nursery)
            nursery.cancel_scope.cancel()
        for failure in result.failed_sinks:
            say_error(f"{failure.sink}: {failure.error}")
        if exit_status is not None:
            # `kstat run` reports the command's fate, even when a sink failed (it said so above).
            return exit_status
        return EXIT_FAILURE if result.failed_sinks else EXIT_OK

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if sole is None:
            raise
        raise sole from None
