"""`prometheus://[HOST]:PORT`: a `/metrics` endpoint for Prometheus to scrape, while kstat runs.

Per program, the catalogue's metrics that have a Prometheus name: its counters as counters,
cumulative since kstat started or since the program was loaded, whichever is later (so a
program kstat meets already loaded starts at zero, and `rate()`/`increase()` are what to read);
its properties (code size, memory, maps) as gauges. Their labels are few and stable: `id`,
`name`, `type`. Everything else about a program (kernel name, tag, owners, attachments, pod,
namespace, container, unit) is on one info series, `kstat_program_info`, to join on `id`. A program
that unloads disappears from the exposition. Besides: programs loaded, whether the stats are
on and how, and kstat's own health (its last pass's duration and time, its sinks' failures).

Both exposition formats are served (content negotiation on `Accept`): the Prometheus text
format and OpenMetrics, rendered by the official client library off the event loop, gzipped
when the scraper asks. The endpoint listens on loopback unless a host is given.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Final
from urllib.parse import urlsplit

import trio
from attrs import define, evolve, field, frozen
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from kstat import sink

log = sink.get_logger(__name__)

# Outside the 9100-9999 range that the Prometheus wiki's default port allocations have filled
# (every port there belongs to some exporter) and below Linux's ephemeral ports (32768-60999),
# so an outgoing connection never holds it.
DEFAULT_PORT: Final = 20915
DEFAULT_HOST: Final = "127.0.0.1"
_REQUEST_LIMIT_BYTES: Final = 16 * 1024
_REQUEST_TIMEOUT_S: Final = 10.0
_COUNTER_LABELS: Final = ("id", "name", "type")
_PLACE_LABELS: Final = ("pod", "namespace", "container", "unit")


@frozen
class PrometheusSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT


def parse_prometheus_url(url: str) -> PrometheusSettings:
    """Settings from `prometheus://[HOST][:PORT]` (loopback and 20915 by default)."""
    if url in ("prometheus:", "prometheus://"):
        return PrometheusSettings()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise sink.UsageError(f"bad prometheus address {url!r}: {error}") from None
    if parts.scheme != "prometheus" or not url.startswith("prometheus://"):
        raise sink.UsageError("expected prometheus://[HOST]:PORT, e.g. prometheus://127.0.0.1:20915")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise sink.UsageError(f"unexpected path or options in {url!r}: the endpoint is always /metrics")
    if port == 0:
        raise sink.UsageError(f"port 0 in {url!r}: give the port Prometheus will scrape")
    return PrometheusSettings(host=parts.hostname or DEFAULT_HOST, port=port or DEFAULT_PORT)


@frozen
class _Program:
    """One program as the exposition shows it: what kstat saw of it since it started counting
    it (from zeros when it was loaded after kstat started), and its labels."""

    sighting: sink.Sighting
    owners: str
    attachments: str
    # Where the owners run: pod, namespace, container, unit (empty where unknown).
    places: dict[str, str]

    @property
    def last(self) -> sink.ProgramStats:
        return self.sighting.last

    def value(self, metric: sink.Metric) -> float | None:
        """A metric of the catalogue, in Prometheus's base unit: a counter since the baseline,
        a property (code size, memory) as the program has it; None when unknown."""
        exposition = metric.prometheus
        assert exposition is not None
        value = metric.compute(self.sighting.span(0, None))
        return None if value is None else value / exposition.divisor

    def moved_to(self, program: sink.ProgramStats) -> _Program:
        return evolve(self, sighting=self.sighting.read_again(program))


def _shown(sighting: sink.Sighting) -> _Program:
    details = sighting.details
    return _Program(
        # Its footprint goes with every scrape.
        sighting=evolve(sighting, first_seen=True),
        owners=",".join(owner.label for owner in details.owners),
        attachments=",".join(details.attachments),
        places=_places(details.owners),
    )


def _places(owners: tuple[sink.ProgramOwner, ...]) -> dict[str, str]:
    """The first owner's pod, namespace, container and unit that say (empty where none does)."""
    found = dict.fromkeys(_PLACE_LABELS, "")
    for owner in owners:
        workload = owner.workload
        for label, value in zip(
            _PLACE_LABELS,
            (workload.pod, workload.namespace, workload.container_name, workload.unit),
            strict=True,
        ):
            if value is not None and not found[label]:
                found[label] = value
    return found


@define
class ExpositionState:
    """What the endpoint serves, kept up to date from the events by what changed.

    Updated on the event loop, read by the renderer's thread: a lock guards the swap, and the
    renderer works on a copy.
    """

    programs: dict[sink.ProgramIdentity, _Program] = field(factory=dict)
    stats_enabled_by: str | None = None
    last_pass_duration_s: float = 0.0
    last_snapshot_time_s: float = 0.0
    snapshots: int = 0
    failed_sinks: tuple[str, ...] = ()
    _lock: threading.Lock = field(factory=threading.Lock)

    def start(self, event: sink.WindowStarted) -> None:
        snapshot = event.snapshot
        programs = {
            program.identity: _shown(sink.Sighting.from_now(program)) for program in snapshot.programs
        }
        with self._lock:
            self.programs = programs
            self.stats_enabled_by = event.stats_enabled_by
            self._saw(snapshot)

    def interval(self, event: sink.IntervalEnded) -> None:
        changes = event.delta.changes
        with self._lock:
            programs = self.programs
            for change in changes:
                identity = change.last.identity
                if change.unloaded:
                    programs.pop(identity, None)
                    continue
                known = programs.get(identity)
                if known is None:
                    # First met: counted from the delta's baseline (zeros when it was loaded
                    # after kstat started).
                    programs[identity] = _shown(change)
                else:
                    programs[identity] = known.moved_to(change.last)
            self.failed_sinks = event.failed_sinks
            self._saw(event.current)

    def _saw(self, snapshot: sink.Snapshot) -> None:
        self.last_pass_duration_s = snapshot.pass_duration_ns / 1e9
        self.last_snapshot_time_s = snapshot.wall_time_ns / 1e9
        # Numbered by the sampler: a sink that lagged still counts every pass.
        self.snapshots = snapshot.sequence + 1

    def copy(self) -> ExpositionState:
        with self._lock:
            return ExpositionState(
                dict(self.programs),
                self.stats_enabled_by,
                self.last_pass_duration_s,
                self.last_snapshot_time_s,
                self.snapshots,
                self.failed_sinks,
            )


class _Families(Collector):
    """The metric families of one state copy, for the client library's renderers."""

    def __init__(self, state: ExpositionState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        programs = list(state.programs.values())
        for metric in sink.METRICS:
            exposition = metric.prometheus
            if exposition is None:
                continue
            family: CounterMetricFamily | GaugeMetricFamily
            if metric.kind is sink.Kind.COUNTER:
                family = CounterMetricFamily(exposition.name, exposition.help, labels=_COUNTER_LABELS)
            else:
                family = GaugeMetricFamily(exposition.name, exposition.help, labels=_COUNTER_LABELS)
            for program in programs:
                value = program.value(metric)
                if value is not None:
                    family.add_metric(_counter_labels(program.last), value)
            yield family
        info = InfoMetricFamily(
            "kstat_program", "What each loaded program is, where it runs and who holds it", labels=["id"]
        )
        for program in programs:
            last = program.last
            info.add_metric(
                [str(last.id)],
                {
                    "name": last.name,
                    "kernel_name": last.kernel_name,
                    "type": last.type,
                    "tag": last.tag,
                    "owners": program.owners,
                    "attachments": program.attachments,
                    **program.places,
                },
            )
        yield info
        yield _gauge("kstat_programs_loaded", "eBPF programs loaded (that the filter selects)", len(programs))
        enabled = GaugeMetricFamily(
            "kstat_stats_enabled",
            "1 while kstat holds the kernel's run-time stats on, by how",
            labels=["method"],
        )
        if state.stats_enabled_by is not None:
            enabled.add_metric([state.stats_enabled_by], 1)
        yield enabled
        yield _gauge(
            "kstat_snapshot_duration_seconds", "How long kstat's last pass over every program took",
            state.last_pass_duration_s,
        )  # fmt: skip
        yield _gauge(
            "kstat_last_snapshot_timestamp_seconds", "When kstat's last pass was taken (Unix time)",
            state.last_snapshot_time_s,
        )  # fmt: skip
        snapshots = CounterMetricFamily("kstat_snapshots", "Passes kstat has taken over every program")
        snapshots.add_metric([], state.snapshots)
        yield snapshots
        failures = GaugeMetricFamily(
            "kstat_sink_failed", "1 for each of kstat's sinks that has failed", labels=["sink"]
        )
        for name in state.failed_sinks:
            failures.add_metric([name], 1)
        yield failures
        yield _gauge("kstat_sinks_failed", "How many of kstat's sinks have failed", len(state.failed_sinks))


def _counter_labels(program: sink.ProgramStats) -> list[str]:
    return [str(program.id), program.name, program.type]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def render(state: ExpositionState, accept: str) -> tuple[bytes, str]:
    """The exposition of a state, in the format the `Accept` header asks for (the client
    library's own negotiation: OpenMetrics when asked for, the text format otherwise)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(state))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


@frozen
class _Request:
    method: str
    path: str
    headers: dict[str, str]


def _parse_request(data: bytes) -> _Request | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return _Request(parts[0], parts[1].split("?", 1)[0], headers)


def _response(status: str, body: bytes, content_type: str, extra: Iterable[str] = ()) -> bytes:
    head = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_INDEX: Final = b"<html><body><h1>kstat</h1><p><a href='/metrics'>/metrics</a></p></body></html>\n"


class PrometheusSink:
    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        self.state = ExpositionState()
        # Bound now: a port already taken fails before the window, not after it.
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((settings.host, settings.port))
            listener.listen(64)
        except OSError as error:
            listener.close()
            raise sink.OutputError(
                f"cannot serve metrics on {settings.host}:{settings.port}: {error.strerror}"
            ) from None
        self._listener = listener
        self.port = listener.getsockname()[1]

    def __repr__(self) -> str:
        host = self.settings.host
        return f"prometheus://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._listener))
        log.info("serving metrics", url=f"http://{repr(self)[len('prometheus://') :]}/metrics")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._serve, [listener])
            try:
                async for event in events:
                    if isinstance(event, sink.WindowStarted):
                        self.state.start(event)
                    elif isinstance(event, sink.IntervalEnded):
                        self.state.interval(event)
            finally:
                # The window is over: the endpoint goes with it (a scrape now would see stale
                # counters with the stats already off).
                nursery.cancel_scope.cancel()

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(_REQUEST_TIMEOUT_S):
                    request = await self._read_request(stream)
                    await stream.send_all(await self._answer(request))
            except (trio.TooSlowError, trio.BrokenResourceError, OSError):
                pass  # a scraper that went away or never finished asking: nothing to say to it

    async def _read_request(self, stream: trio.SocketStream) -> _Request | None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < _REQUEST_LIMIT_BYTES:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
        return _parse_request(data)

    async def _answer(self, request: _Request | None) -> bytes:
        if request is None:
            return _response("400 Bad Request", b"bad request\n", "text/plain")
        if request.method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"GET only\n", "text/plain", ["Allow: GET, HEAD"])
        if request.path == "/":
            return _response("200 OK", _INDEX if request.method == "GET" else b"", "text/html")
        if request.path != "/metrics":
            return _response("404 Not Found", b"see /metrics\n", "text/plain")
        state = self.state.copy()
        accept = request.headers.get("accept", "")
        started = time.perf_counter()
        body, content_type = await trio.to_thread.run_sync(render, state, accept)
        extra = []
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = await trio.to_thread.run_sync(gzip.compress, body)
            extra.append("Content-Encoding: gzip")
        log.debug("scraped", programs=len(state.programs), render_s=round(time.perf_counter() - started, 4))
        if request.method == "HEAD":
            return _response("200 OK", b"", content_type, extra)
        return _response("200 OK", body, content_type, extra)


def from_spec(argument: str | None) -> PrometheusSink:
    return PrometheusSink(parse_prometheus_url("prometheus:" + (argument or "")))
