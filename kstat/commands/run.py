"""`kstat run -- CMD ARGS...`: a window that lasts exactly as long as a command.

Like `perf stat -- cmd`: the window starts (stats on, first snapshot), then the command runs
with kstat's standard streams; when it exits, the last snapshot is taken. Programs that the
command loads count from their load (see the report's churn rule), so a command that starts an
agent and then drives traffic is measured whole.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

import trio
from attrs import evolve

from kstat._logging import get_logger
from kstat.commands._options import ArgumentParser, add_filter_flags, add_window_flags, parse_with_filter
from kstat.commands._window import (
    announce_when_ready,
    claim_baseline,
    collection_settings,
    make_sinks,
    run_window,
    watch_signals,
)
from kstat.core.events import Sink
from kstat.engine.scheduler import Collection, CollectionResult, CollectionSettings, StopRequest
from kstat.errors import CommandNotRunnable

log = get_logger(__name__)

# Short by default: a program the command unloads is seen up to its last snapshot.
DEFAULT_INTERVAL = "100ms"

# What a shell reports for a command it cannot find or cannot execute.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


def check_runnable(command: Sequence[str]) -> None:
    """Fail before the window if the command cannot start (with the shell's exit statuses)."""
    program = command[0]
    if os.sep in program:
        if not os.path.exists(program):
            raise CommandNotRunnable(f"command not found: {program}", EXIT_NOT_FOUND)
        if not os.access(program, os.X_OK) or os.path.isdir(program):
            raise CommandNotRunnable(f"command is not executable: {program}", EXIT_NOT_EXECUTABLE)
    elif shutil.which(program) is None:
        raise CommandNotRunnable(f"command not found: {program}", EXIT_NOT_FOUND)


def exit_status_of(returncode: int) -> int:
    """The command's status as a shell gives it: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class CommandWindow:
    """Runs a command inside a window and relays signals to it."""

    def __init__(self, command: Sequence[str], settings: CollectionSettings, sinks: Sequence[Sink]) -> None:
        check_runnable(command)
        self.command = list(command)
        self.collection = Collection(
            evolve(settings, duration_ns=None),
            sinks,
            StopRequest(),
            early=claim_baseline(),
        )
        self._process: trio.Process | None = None
        self._signals_received: list[signal.Signals] = []

    def relay_signal(self, signal_number: signal.Signals) -> None:
        """The first signal goes to the command (which decides how to end); a second ends the
        window at once, leaving the command to itself. One that comes before the command has
        started is passed on as soon as it has."""
        self._signals_received.append(signal_number)
        process = self._process
        if len(self._signals_received) > 2:
            log.warning(
                "third signal: the sinks get a second more, then kstat ends", signal=signal_number.name
            )
            self.collection.hurry()
        elif len(self._signals_received) > 1:
            log.warning("second signal: ending the window now", signal=signal_number.name)
            self.collection.stop.request(signal_number.name)
        elif process is not None and process.returncode is None:
            log.info("passing the signal to the command", signal=signal_number.name, pid=process.pid)
            process.send_signal(signal_number)

    async def run(self) -> tuple[CollectionResult, int]:
        """The window's result and the command's exit status."""
        results: list[CollectionResult] = []
        status = 0

        async def window() -> None:
            results.append(await self.collection.run())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(window)
            await self.collection.baseline_taken.wait()
            try:
                self._process = await trio.lowlevel.open_process(self.command, stdin=None)
            except OSError as error:
                self.collection.stop.request("command failed to start")
                raise CommandNotRunnable(
                    f"cannot run {self.command[0]}: {error.strerror}", EXIT_NOT_EXECUTABLE
                ) from None
            log.info("command started", pid=self._process.pid, command=subprocess.list2cmdline(self.command))
            if self._signals_received:
                self._process.send_signal(self._signals_received[0])
            returncode = await self._process.wait()
            status = exit_status_of(returncode)
            log.info("command exited", status=status)
            self.collection.stop.request(f"command exited with status {status}")
        return results[0], status


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat run",
        usage="kstat run [options] -- COMMAND [ARGS...]",
        description=(
            "Collect for exactly the lifetime of COMMAND (like perf stat): the window opens, the "
            "command runs, the window closes when it exits. The report is written even when the "
            "command fails, and kstat exits with the command's own status. Programs the command "
            "loads count from their load. By default only the command's own programs are "
            "reported (--scope)."
        ),
        allow_abbrev=False,
    )
    add_window_flags(parser, default_duration=None, default_interval=DEFAULT_INTERVAL)
    parser.add_argument(
        "--scope",
        choices=SCOPES,
        default=None,
        help=(
            "command: only the programs of COMMAND's process tree (held by it or its descendants "
            "when first met, or loaded by them during the window); host: every program. Default: "
            "command, or host when --id, --pid, --comm, --container, --pod, --namespace or --unit "
            "says whose programs to report"
        ),
    )
    add_filter_flags(parser)
    return parser


SCOPES = ("command", "host")
# Filters that name programs by who they are or who holds them: given one, the user has said
# which programs are meant, and they need not be the command's.
_OWNER_FILTERS = ("ids", "pids", "commands", "containers", "pods", "namespaces", "units")


def scope_of(options: argparse.Namespace) -> str:
    """The scope asked for, else the default: the command's tree, unless a filter names others."""
    if options.scope is not None:
        return str(options.scope)
    return "host" if any(getattr(options, name) for name in _OWNER_FILTERS) else "command"


def parse(arguments: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    before_command = arguments[: arguments.index("--")] if "--" in arguments else arguments
    if "-h" in before_command or "--help" in before_command:
        parser.parse_args(before_command)  # prints the help and exits
    if "--" not in arguments:
        parser.error("give the command to run after --: kstat run [options] -- COMMAND [ARGS...]")
    split = arguments.index("--")
    command = arguments[split + 1 :]
    if not command:
        parser.error("no command after --")
    options = parse_with_filter(parser, arguments[:split])
    options.command = command
    return parser, options


def run(options: argparse.Namespace) -> int:
    sinks = make_sinks(options)
    scope = scope_of(options)
    if scope == "command":
        # The tree is kstat's own: the command is its only child, and every process the command
        # starts descends from it (kstat's own programs are never reported anyway).
        options.program_filter = evolve(options.program_filter, process_tree=os.getpid())
    settings = collection_settings(options, duration_ns=None)
    # Checked before the window: a command that cannot start costs no collection.
    window = CommandWindow(options.command, settings, sinks)

    async def body(nursery: trio.Nursery) -> tuple[CollectionResult, int | None]:
        await nursery.start(watch_signals, window.relay_signal)
        nursery.start_soon(announce_when_ready, window.collection, options)
        result, status = await window.run()
        if scope == "command" and result.report.num_programs == 0:
            log.warning(
                "the command's process tree held and loaded no eBPF program during the window; "
                "programs of other processes are not reported (--scope host reports every program)"
            )
        return result, status

    return run_window(body)
