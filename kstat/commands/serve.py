"""`kstat serve`: collect until stopped, every sink streaming; Prometheus on loopback by default.

A separate command rather than `-duration 0`: the Go tool's `-duration` always measures one
window and prints one report, and a daemon wants other defaults (an endpoint to scrape rather
than a report on stdout, memory bounded however long it runs, however many programs come and go).
"""

from __future__ import annotations

import argparse

import trio

from kstat._version import __version__
from kstat.commands._options import (
    ArgumentParser,
    add_filter_flags,
    add_window_flags,
    parse_with_filter,
    positive_int,
)
from kstat.commands._systemd import Notifier
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
from kstat.core.model import Snapshot
from kstat.engine.scheduler import Collection, CollectionResult, StopRequest
from kstat.engine.summary import Summary

# Unloaded programs the final report still lists; older ones are counted in its totals only.
DEFAULT_KEEP_UNLOADED = 1000


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kstat serve",
        description=(
            "Collect until SIGINT or SIGTERM, every sink streaming: by default a Prometheus endpoint "
            "on 127.0.0.1:20915 (--sink prometheus://HOST:PORT to choose). On the signal it ends "
            "cleanly: report sinks (-o FILE, json:, ndjson:) get a report of the whole run."
        ),
        allow_abbrev=False,
    )
    add_window_flags(
        parser,
        default_duration=None,
        report_default="none: serve writes nothing on standard output",
        # -output alone is a sink: the endpoint then needs its own --sink.
        sinks_default="prometheus://127.0.0.1:20915, unless -output is given",
    )
    parser.add_argument(
        "--keep-unloaded",
        type=positive_int,
        default=DEFAULT_KEEP_UNLOADED,
        metavar="N",
        help=(
            "unloaded programs the final report still lists (default 1000); older ones stay in its "
            "totals, so memory stays flat however many programs come and go"
        ),
    )
    add_filter_flags(parser)
    return parser


def parse(arguments: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    return parser, parse_with_filter(parser, arguments)


def run(options: argparse.Namespace) -> int:
    sinks = make_sinks(options, default="prometheus:")
    settings = collection_settings(options, duration_ns=None)
    notifier = Notifier()

    async def window(nursery: trio.Nursery) -> tuple[CollectionResult, int | None]:
        stop = StopRequest()
        summary = Summary(generator=f"kstat {__version__}", retain_unloaded=options.keep_unloaded)
        passes = _Passes()
        collection = Collection(
            settings, sinks, stop, summary=summary, on_snapshot=passes.saw, early=claim_baseline()
        )
        await nursery.start(watch_signals, stop_on_signal(stop, collection))
        nursery.start_soon(reopen_on_sighup, collection)
        nursery.start_soon(announce_when_ready, collection, options)
        if notifier.enabled:
            nursery.start_soon(_tell_systemd, notifier, collection, passes)
        return await collection.run(), None

    return run_window(window)


class _Passes:
    """When the sampler's last pass came (trio's clock)."""

    def __init__(self) -> None:
        self.last_s: float | None = None

    def saw(self, snapshot: Snapshot) -> None:
        self.last_s = trio.current_time()


async def _tell_systemd(notifier: Notifier, collection: Collection, passes: _Passes) -> None:
    """READY=1 once the baseline is taken, WATCHDOG=1 while passes keep coming, STOPPING=1 when
    the window is asked to end."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watchdog, notifier, passes, collection)
        nursery.start_soon(_ready, notifier, collection)
        await collection.stop.event.wait()
        notifier.notify("STOPPING=1", f"STATUS=stopping: {collection.stop.reason}")
        nursery.cancel_scope.cancel()


async def _ready(notifier: Notifier, collection: Collection) -> None:
    await collection.baseline_taken.wait()
    notifier.notify("READY=1", "STATUS=collecting: the window's baseline is taken")


async def _watchdog(notifier: Notifier, passes: _Passes, collection: Collection) -> None:
    period_s = notifier.watchdog_s
    if period_s is None:
        return
    await collection.window_started.wait()
    while True:
        last = passes.last_s
        # A stuck sampler stops the pings: systemd restarts kstat (WatchdogSec=).
        if last is not None and trio.current_time() - last < period_s:
            notifier.notify("WATCHDOG=1")
        await trio.sleep(period_s / 2)
