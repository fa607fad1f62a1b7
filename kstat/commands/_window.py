"""What the commands that collect a window share: sinks from flags, signals, the outcome."""

from __future__ import annotations

import argparse
import json
import os
import signal
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Final

import trio

from kstat import _baseline
from kstat._atomic import check_writable, write_atomically
from kstat._logging import get_logger
from kstat._stdio import say_error
from kstat.commands._options import EXIT_FAILURE, EXIT_OK
from kstat.core.events import Sink
from kstat.core.report import KERNEL_NAME_KEYS
from kstat.core.timestamps import format_timestamp
from kstat.engine.scheduler import Collection, CollectionResult, CollectionSettings, StopRequest
from kstat.engine.sink_specs import make_sink, split_options
from kstat.errors import OutputError, UsageError, sole_exception
from kstat.sources.early import EarlyBaseline

log = get_logger(__name__)

SignalHandler = Callable[[signal.Signals], None]
# Sinks whose argument is a file they write.
_FILE_SINKS: Final = ("json", "ndjson")
# Runs the window inside the command's nursery; returns its result and, for `kstat run`, the
# command's exit status.
WindowBody = Callable[[trio.Nursery], Awaitable[tuple[CollectionResult, int | None]]]


def sink_specs(options: argparse.Namespace, default: str | None = "stdout") -> list[str]:
    """The seed's `-output FILE` is shorthand for `--sink json:FILE`; `default` when none given."""
    specs: list[str] = list(options.sinks)
    if options.output is not None:
        specs.insert(0, f"json:{options.output}")
    if not specs and default is not None:
        specs.append(default)
    writers_of_stdout = [spec for spec in specs if writes_stdout(spec)]
    if len(writers_of_stdout) > 1:
        raise UsageError(
            f"{' and '.join(writers_of_stdout)} would both write standard output; the NDJSON stream "
            "already ends with the report"
        )
    writers: dict[str, str] = {}
    for spec in specs:
        name = spec.partition(":")[0]
        argument = _written(spec)
        if name in _FILE_SINKS and argument not in ("", "-"):
            path = os.path.realpath(argument)
            if path in writers:
                raise UsageError(
                    f"{writers[path]} and {spec} would both write {argument}: one would destroy the other"
                )
            writers[path] = spec
    return specs


def _written(spec: str) -> str:
    """What a file sink's spec writes: its argument without options (`-` for stdout)."""
    return split_options(spec.partition(":")[2])[0]


def writes_stdout(spec: str) -> bool:
    return spec == "stdout" or (spec.startswith("ndjson:") and _written(spec) == "-")


def collection_settings(options: argparse.Namespace, duration_ns: int | None) -> CollectionSettings:
    """The window the common flags ask for (add_window_flags, the filters), `duration_ns` long
    (None: until stopped): one place for every collecting command, so a new flag is wired once."""
    if options.ready_file is not None:
        check_writable(options.ready_file)  # now, not once the window has started
    return CollectionSettings(
        duration_ns=duration_ns,
        interval_ns=options.interval,
        program_filter=options.program_filter,
        host_root=options.host_root,
        snapshot_method=options.snapshot_method,
        program_keys=program_keys(options),
        per_cpu=options.per_cpu,
        # The command line's process is kstat's own (its collector), and so are its children.
        freeze_gc_at_start=True,
        clock_process=True,
    )


def program_keys(options: argparse.Namespace) -> str | None:
    """`--keys`: the report's keys (CollectionSettings.program_keys)."""
    return KERNEL_NAME_KEYS if options.keys == "kernel-name" else None


def make_sinks(options: argparse.Namespace, default: str | None = "stdout") -> list[Sink]:
    """Made before the window, so that their checks (an unwritable path, a port in use) fail
    first."""
    return [make_sink(spec) for spec in sink_specs(options, default)]


async def announce_when_ready(collection: Collection, options: argparse.Namespace) -> None:
    """`--ready-file`, `--ready-fd`: tell a waiting harness that the baseline reading is taken,
    so that what it does from now on is inside the window."""
    if options.ready_file is None and options.ready_fd is None:
        return
    await collection.baseline_taken.wait()
    if options.ready_fd is not None:
        try:
            os.write(options.ready_fd, b"READY=1\n")
            os.close(options.ready_fd)
        except OSError as error:
            log.warning("cannot tell --ready-fd the window started", fd=options.ready_fd, error=str(error))
    if options.ready_file is not None:
        clocks = collection.baseline_clocks
        ready = {
            "ready": True,
            "pid": os.getpid(),
            "baseline_time": None if clocks is None else format_timestamp(clocks.wall_time_ns),
            # Every program the baseline read saw (before any --name or --pid selection).
            "programs": collection.baseline_programs,
        }
        try:
            write_atomically(options.ready_file, json.dumps(ready).encode() + b"\n")
        except OutputError as error:
            log.warning("cannot write --ready-file", error=str(error))


def claim_baseline() -> EarlyBaseline | None:
    """The baseline the command line read at launch (`kstat._baseline`), for the window."""
    return _baseline.claim()


def stop_on_signal(stop: StopRequest, collection: Collection | None = None) -> SignalHandler:
    """The first SIGINT/SIGTERM ends the window; a second, or one that comes once the window is
    over, cuts the delivery of its end short."""

    def handle(signal_number: signal.Signals) -> None:
        if collection is not None and collection.window_ended.is_set():
            log.warning(
                "the window is over: the sinks get a second more, then kstat ends", signal=signal_number.name
            )
            collection.hurry()
        elif stop.event.is_set():
            log.warning(
                "second signal: the sinks get a second more, then kstat ends", signal=signal_number.name
            )
            if collection is not None:
                collection.hurry()
        else:
            log.info("stopping early; the report will cover the time collected", signal=signal_number.name)
            stop.request(signal_number.name)

    return handle


async def watch_signals(
    handle: SignalHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Start it with `nursery.start`: once it has started, SIGINT and SIGTERM are the window's
    to handle (the baseline may be taken, and said, the moment the window begins)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        async for signal_number in received:
            handle(signal.Signals(signal_number))


async def reopen_on_sighup(collection: Collection) -> None:
    """SIGHUP (logrotate's `postrotate`): the sinks reopen the files they write by name."""
    with trio.open_signal_receiver(signal.SIGHUP) as received:
        async for _ in received:
            collection.reopen_files()


def run_window(body: WindowBody) -> int:
    """Run a window command under trio; its exit status."""
    finished = False

    def after_trio(signal_number: int, frame: FrameType | None) -> None:
        # What SIGINT and SIGTERM do when trio's own handling is not running: before it starts,
        # end at once (nothing is on yet); once the window is delivered, nothing is left for
        # them to stop, so kstat exits as it was about to, with its status.
        if not finished:
            name = signal.Signals(signal_number).name
            os.write(2, f"kstat: {name} before the window started; nothing was collected\n".encode())
            os._exit(128 + signal_number)

    async def main() -> int:
        nonlocal finished
        async with trio.open_nursery() as nursery:
            result, exit_status = await body(nursery)
            # Before the signal watcher goes (and trio puts `after_trio` back).
            finished = True
            nursery.cancel_scope.cancel()
        for failure in result.failed_sinks:
            say_error(f"{failure.sink}: {failure.error}")
        if exit_status is not None:
            # `kstat run` reports the command's fate, even when a sink failed (it said so above).
            return exit_status
        return EXIT_FAILURE if result.failed_sinks else EXIT_OK

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, after_trio)
    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if sole is None:
            raise
        raise sole from None
    finally:
        if finished:
            # Python puts the default handlers back while it shuts down, and a late second
            # signal would then kill kstat after all was done; ignored signals stay ignored.
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signal_number, signal.SIG_IGN)
