"""`kstat [flags]`: collect a window (the Go tool's interface) and deliver it to the sinks."""

from __future__ import annotations

import argparse

import trio

from kstat._version import __version__
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
    parser = ArgumentParser(
        prog="kstat",
        description=(
            "Measure what loaded eBPF programs cost inside the kernel: enable the kernel's run-time "
            "statistics, sample every program, and report per-program runtime, runs, events/s, "
            "average runtime, estimated CPU % and recursion misses over the window. "
            "Subcommands: demo (a self-contained demonstration), list (the loaded programs), "
            "run (collect for a command's lifetime), serve (collect until stopped, for Prometheus), "
            "top (a live table that records), compare (reports, or runs of them), history (a job's "
            "runs over time), plot (PNG charts)."
        ),
        allow_abbrev=False,
    )
    add_window_flags(parser, DEFAULT_DURATION)
    add_filter_flags(parser)
    parser.add_argument("--version", action="version", version=f"kstat {__version__}")
    return parser


def parse(arguments: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    return parser, parse_with_filter(parser, arguments)


def run(options: argparse.Namespace) -> int:
    sinks = make_sinks(options)
    settings = collection_settings(options, duration_ns=options.duration)

    async def window(nursery: trio.Nursery) -> tuple[CollectionResult, int | None]:
        stop = StopRequest()
        collection = Collection(settings, sinks, stop, early=claim_baseline())
        nursery.start_soon(watch_signals, stop_on_signal(stop, collection))
        nursery.start_soon(reopen_on_sighup, collection)
        nursery.start_soon(announce_when_ready, collection, options)
        return await collection.run(), None

    return run_window(window)
