"""`kstat [flags]`: collect a window (the Go tool's interface) and deliver it to the sinks."""

from __future__ import annotations

import argparse

import trio

from kstat._version import __version__
from kstat.commands import COMMANDS, DEFAULT_COMMAND
from kstat.commands._options import ArgumentParser, add_filter_flags, add_window_flags, parse_with_filter
from kstat.commands._window import (
    announce_when_ready,
    claim_baseline,
    collection_settings,
    make_sinks,
    reopen_on_sighup,
    run_window,
    stop_on_signal,
    watch_signals,
)
from kstat.engine.scheduler import Collection, CollectionResult, StopRequest

DEFAULT_DURATION = "60s"


def build_parser() -> argparse.ArgumentParser:
    listed = [name for name in COMMANDS if name != DEFAULT_COMMAND]
    parser = ArgumentParser(
        prog="kstat",
        usage=(
            "kstat [options]   (collect one window: the Go collect-kernel-stats tool's flags)\n"
            f"       kstat {{{','.join(listed)}}} ..."
        ),
        description=(
            "Measure what loaded eBPF programs cost inside the kernel: enable the kernel's run-time "
            "statistics, sample every program, and report per-program runtime, runs, events/s, "
            "average runtime, estimated CPU % and recursion misses over the window."
        ),
        epilog="commands:\n"
        + "".join(f"  {name:<11} {COMMANDS[name][1]}\n" for name in listed)
        + "\nkstat help COMMAND (or kstat COMMAND --help) shows a command's options.",
        formatter_class=_CommandsFormatter,
        allow_abbrev=False,
    )
    add_window_flags(parser, DEFAULT_DURATION)
    add_filter_flags(parser)
    # Go's flag package spells it with one dash, as every other flag of the seed.
    parser.add_argument("-version", "--version", action="version", version=f"kstat {__version__}")
    return parser


class _CommandsFormatter(argparse.HelpFormatter):
    """argparse's layout, except the epilog: the list of commands keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("commands:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def parse(arguments: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    return parser, parse_with_filter(parser, arguments)


def run(options: argparse.Namespace) -> int:
    sinks = make_sinks(options)
    settings = collection_settings(options, duration_ns=options.duration)

    async def window(nursery: trio.Nursery) -> tuple[CollectionResult, int | None]:
        stop = StopRequest()
        collection = Collection(settings, sinks, stop, early=claim_baseline())
        await nursery.start(watch_signals, stop_on_signal(stop, collection))
        nursery.start_soon(reopen_on_sighup, collection)
        nursery.start_soon(announce_when_ready, collection, options)
        return await collection.run(), None

    return run_window(window)
