"""`prometheus://[HOST]:PORT[?footprint=gauges&max_connections=N]`: a `/metrics` endpoint for
Prometheus to scrape, while kstat runs; `/healthz` and `/ready` for probes.

A format over a transport: the exposition (`kstat.sink.PrometheusExposition`, the text format
and OpenMetrics) is kept up to date from the events and rendered once per interval on this
sink's own worker thread; the endpoint (`kstat.sink.HttpEndpoint`) serves the bytes of the
last render from memory. A scrape never renders, never waits for a thread and never touches
the sampler's: 500 at once cost 500 sends of bytes already made.

Per program, by default, its counters (`kstat_program_runs_total`,
`kstat_program_run_time_seconds_total`, `kstat_program_recursion_misses_total`, labelled `id`,
`name`, `type`) and one info series, `kstat_program_info`, with everything else (to join on
`id`): `prometheus_series_per_program()` series. With `footprint=gauges`, its footprint too
(code size, verifier work, memory, maps) as gauges. The counters count since kstat started or
since the program was loaded, whichever is later; a program that unloads disappears. Besides:
programs loaded, whether the stats are on, kstat's own passes, sinks, process (CPU, memory,
descriptors) and endpoint (connections held and refused).

Paths: `/metrics` (503 until the window's baseline is taken), `/ready` (200 once it is, 503
before and once the window has ended: a readiness probe), `/healthz` (200 while the sampler's
last pass is recent: a liveness probe) and `/`. Gzip is used when asked for and already made:
the first gzip scrape of a format gets it plain, and every interval after that compresses it
while scrapers keep asking.
"""

from __future__ import annotations

import gzip
import os
import resource
import time
from typing import Final
from urllib.parse import parse_qs, urlsplit

import trio
from attrs import frozen

from kstat import sink

log = sink.get_logger(__name__)

# Outside the 9100-9999 range that the Prometheus wiki's default port allocations have filled
# (every port there belongs to some exporter) and below Linux's ephemeral ports (32768-60999),
# so an outgoing connection never holds it.
DEFAULT_PORT: Final = 20915
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_MAX_CONNECTIONS: Final = 64
_MAX_CONNECTIONS_LIMIT: Final = 4096
# A format is compressed each interval while a scraper asked for it gzipped this recently.
_GZIP_KEPT_S: Final = 300.0
# zlib's fastest level: a third of the default's time for a few percent more bytes.
_GZIP_LEVEL: Final = 1
# /healthz fails when the last pass is older than this many intervals (and at least a minute).
_STALE_INTERVALS: Final = 5
_STALE_AT_LEAST_S: Final = 60.0
_OPTIONS: Final = ("footprint", "max_connections")


@frozen
class PrometheusSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # The footprint gauges (6 more series per program), off by default.
    footprint: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def parse_prometheus_url(url: str) -> PrometheusSettings:
    """Settings from `prometheus://[HOST][:PORT][?footprint=gauges&max_connections=N]`
    (loopback and 20915 by default)."""
    if url in ("prometheus:", "prometheus://"):
        return PrometheusSettings()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise sink.UsageError(f"bad prometheus address {url!r}: {error}") from None
    if parts.scheme != "prometheus" or not url.startswith("prometheus://"):
        raise sink.UsageError("expected prometheus://[HOST]:PORT, e.g. prometheus://127.0.0.1:20915")
    if parts.path not in ("", "/") or parts.fragment:
        raise sink.UsageError(f"unexpected path in {url!r}: the endpoint is always /metrics")
    if port == 0:
        raise sink.UsageError(f"port 0 in {url!r}: give the port Prometheus will scrape")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - set(_OPTIONS)
    if unknown:
        raise sink.UsageError(
            f"unknown prometheus option(s) {', '.join(sorted(unknown))}; known: {', '.join(_OPTIONS)}"
        )
    if any(len(values) > 1 for values in query.values()):
        raise sink.UsageError(f"a prometheus option is given more than once in {url!r}")
    footprint = query.get("footprint", ["off"])[0]
    if footprint not in ("gauges", "off"):
        raise sink.UsageError(f"prometheus footprint must be gauges or off, not {footprint!r}")
    connections = query.get("max_connections", [str(DEFAULT_MAX_CONNECTIONS)])[0]
    if not connections.isdigit() or not 1 <= int(connections) <= _MAX_CONNECTIONS_LIMIT:
        raise sink.UsageError(
            f"prometheus max_connections must be a whole number from 1 to {_MAX_CONNECTIONS_LIMIT}, "
            f"not {connections!r}"
        )
    return PrometheusSettings(
        host=parts.hostname or DEFAULT_HOST,
        port=port or DEFAULT_PORT,
        footprint=footprint == "gauges",
        max_connections=int(connections),
    )


@frozen
class _Served:
    """What the endpoint answers from, replaced whole after each render (one assignment: the
    event loop reads it while the worker makes the next)."""

    plain: dict[sink.PrometheusFormat, sink.RenderedExposition]
    gzipped: dict[sink.PrometheusFormat, bytes]
    # CLOCK_MONOTONIC of the pass rendered (for /healthz).
    snapshot_monotonic_ns: int


_INDEX: Final = (
    b"<html><body><h1>kstat</h1><p><a href='/metrics'>/metrics</a> "
    b"<a href='/ready'>/ready</a> <a href='/healthz'>/healthz</a></p></body></html>\n"
)
_PROCESS_CPU: Final = sink.PrometheusFamily(
    "process_cpu_seconds", "counter", "User and system CPU time kstat has spent (every thread)"
)
_PROCESS_MEMORY: Final = sink.PrometheusFamily(
    "process_resident_memory_bytes", "gauge", "kstat's resident memory"
)
_PROCESS_FDS: Final = sink.PrometheusFamily("process_open_fds", "gauge", "kstat's open file descriptors")
_PROCESS_MAX_FDS: Final = sink.PrometheusFamily(
    "process_max_fds", "gauge", "kstat's limit of open file descriptors (soft)"
)
_CONNECTIONS: Final = sink.PrometheusFamily(
    "kstat_http_connections", "gauge", "Connections the metrics endpoint holds"
)
_REFUSED: Final = sink.PrometheusFamily(
    "kstat_http_refused_connections",
    "counter",
    "Connections the metrics endpoint closed unanswered: full, or waiting too long for a request",
)
_REQUESTS: Final = sink.PrometheusFamily("kstat_http_requests", "counter", "Requests the endpoint answered")
_RENDER: Final = sink.PrometheusFamily(
    "kstat_exposition_render_seconds", "gauge", "How long the previous render of this exposition took"
)


class PrometheusSink:
    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        self.exposition = sink.PrometheusExposition(footprint=settings.footprint, version=sink.KSTAT_VERSION)
        # Bound now: a port already taken fails before the window, not after it.
        self.endpoint = sink.HttpEndpoint(
            settings.host, settings.port, self._handle, "metrics", max_connections=settings.max_connections
        )
        self.port = self.endpoint.port
        self._served: _Served | None = None
        self._ended = False
        self._stale_after_ns = int(_STALE_AT_LEAST_S * 1e9)
        # When a scraper last asked for each format gzipped (monotonic seconds).
        self._gzip_asked: dict[sink.PrometheusFormat, float] = {}
        self._render_s = 0.0

    def __repr__(self) -> str:
        return f"prometheus://{self.endpoint.address}"

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        log.info("serving metrics", url=f"http://{self.endpoint.address}/metrics")
        # The renders' own thread: a busy one delays the next render, never a pass or a scrape.
        limiter = trio.CapacityLimiter(1)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.endpoint.serve)
            try:
                async for event in events:
                    if isinstance(event, sink.WindowStarted | sink.IntervalEnded):
                        self._served = await trio.to_thread.run_sync(self._render, event, limiter=limiter)
            finally:
                # The window is over: the endpoint goes with it (a scrape now would see stale
                # counters with the stats already off).
                self._ended = True
                nursery.cancel_scope.cancel()

    def _render(self, event: sink.WindowStarted | sink.IntervalEnded) -> _Served:
        """On the worker: the exposition brought up to date, rendered in both formats, and
        compressed in those scraped gzipped lately."""
        started = time.perf_counter()
        exposition = self.exposition
        if isinstance(event, sink.WindowStarted):
            exposition.start(event)
            self._stale_after_ns = max(int(_STALE_AT_LEAST_S * 1e9), _STALE_INTERVALS * event.interval_ns)
            snapshot = event.snapshot
        else:
            exposition.interval(event)
            snapshot = event.current
        own = self._own_series()
        plain = {output: exposition.render(output, own) for output in sink.PrometheusFormat}
        now = time.monotonic()
        gzipped = {
            output: gzip.compress(plain[output].body, compresslevel=_GZIP_LEVEL, mtime=0)
            for output, asked in list(self._gzip_asked.items())
            if now - asked < _GZIP_KEPT_S
        }
        self._render_s = time.perf_counter() - started
        return _Served(plain, gzipped, snapshot.monotonic_ns)

    def _own_series(self) -> list[sink.PrometheusSeries]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        series = [sink.PrometheusSeries(_PROCESS_CPU, usage.ru_utime + usage.ru_stime)]
        try:
            with open("/proc/self/statm", "rb") as statm:
                resident_pages = int(statm.read().split()[1])
            series.append(sink.PrometheusSeries(_PROCESS_MEMORY, resident_pages * os.sysconf("SC_PAGE_SIZE")))
            series.append(sink.PrometheusSeries(_PROCESS_FDS, len(os.listdir("/proc/self/fd"))))
        except OSError:
            pass  # out of descriptors this very moment: these wait for the next render
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            series.append(sink.PrometheusSeries(_PROCESS_MAX_FDS, soft))
        statistics = self.endpoint.statistics
        series += [
            sink.PrometheusSeries(_CONNECTIONS, statistics.connections),
            sink.PrometheusSeries(_REFUSED, statistics.refused),
            sink.PrometheusSeries(_REQUESTS, statistics.requests),
            sink.PrometheusSeries(_RENDER, self._render_s),
        ]
        return series

    def _handle(self, request: sink.HttpRequest) -> sink.HttpResponse:
        """On the event loop, from memory: nothing here waits or renders."""
        route = {
            "/metrics": self._metrics,
            "/ready": self._ready,
            "/healthz": self._healthz,
        }.get(request.path)
        if route is not None:
            return route(request)
        if request.path == "/":
            return sink.HttpResponse(200, _INDEX, "text/html; charset=utf-8")
        return sink.HttpResponse(404, b"see /metrics\n")

    def _metrics(self, request: sink.HttpRequest) -> sink.HttpResponse:
        served = self._served
        if served is None or self._ended:
            return sink.HttpResponse(503, b"no baseline yet: the window has not started\n")
        output = sink.negotiate_prometheus_format(request.headers.get("accept", ""))
        rendered = served.plain[output]
        if "gzip" in request.headers.get("accept-encoding", ""):
            self._gzip_asked[output] = time.monotonic()
            body = served.gzipped.get(output)
            if body is not None:
                gzipped = (("Content-Encoding", "gzip"),)
                return sink.HttpResponse(200, body, rendered.content_type, gzipped)
        return sink.HttpResponse(200, rendered.body, rendered.content_type)

    def _ready(self, request: sink.HttpRequest) -> sink.HttpResponse:
        if self._served is None or self._ended:
            return sink.HttpResponse(503, b"not ready: the window's baseline is not taken\n")
        return sink.HttpResponse(200, b"ready\n")

    def _healthz(self, request: sink.HttpRequest) -> sink.HttpResponse:
        served = self._served
        if served is not None and not self._ended:
            age_ns = time.monotonic_ns() - served.snapshot_monotonic_ns
            if age_ns > self._stale_after_ns:
                return sink.HttpResponse(503, f"the last pass is {age_ns / 1e9:.0f} s old\n".encode())
        return sink.HttpResponse(200, b"ok\n")


def from_spec(argument: str | None) -> PrometheusSink:
    return PrometheusSink(parse_prometheus_url("prometheus:" + (argument or "")))
