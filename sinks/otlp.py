"""`otlp://HOST[:PORT][/PATH][?footprint=gauges&timeout=SECONDS]`: every interval, kstat's
programs to an OpenTelemetry Collector (or any OTLP receiver) over OTLP/HTTP with protobuf.

A format over a transport: the mapping (`kstat.sink.OtlpState`, from the metric catalogue:
cumulative Sums for the counters, Gauges for the footprint when asked) over the official
OpenTelemetry SDK's `MetricsData` and its OTLP/HTTP exporter, which runs on this sink's own
worker thread. `otlp+http://` is the same; `otlp+https://` uses TLS. The port defaults to 4318
and the path to `/v1/metrics`, as OTLP/HTTP's do. Headers (authentication) come from the SDK's
own variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_METRICS_HEADERS`), resource
attributes from `OTEL_RESOURCE_ATTRIBUTES` and the downward API's `POD_NAME`,
`POD_NAMESPACE` and `CONTAINER_NAME`. The counters are cumulative: an export that fails is
made good by the next, which carries the totals.

Needs the `otlp` extra: `pip install 'kstat[otlp]'`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import trio
from attrs import frozen

from kstat import sink

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricsData

log = sink.get_logger(__name__)

DEFAULT_PORT: Final = 4318
DEFAULT_PATH: Final = "/v1/metrics"
DEFAULT_TIMEOUT_S: Final = 10.0
_SCHEMES: Final = {"otlp": "http", "otlp+http": "http", "otlp+https": "https"}
_OPTIONS: Final = ("footprint", "timeout")


@frozen
class OtlpSettings:
    endpoint: str
    footprint: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S


def parse_otlp_url(url: str) -> OtlpSettings:
    """Settings from `otlp[+http|+https]://HOST[:PORT][/PATH][?footprint=gauges&timeout=S]`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise sink.UsageError(f"bad OTLP address {url!r}: {error}") from None
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise sink.UsageError("expected otlp://HOST[:PORT][/PATH], e.g. otlp://otel-collector:4318")
    if port == 0:
        raise sink.UsageError(f"port 0 in {url!r}: give the port the receiver listens on")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - set(_OPTIONS)
    if unknown:
        raise sink.UsageError(
            f"unknown otlp option(s) {', '.join(sorted(unknown))}; known: {', '.join(_OPTIONS)}"
        )
    if any(len(values) > 1 for values in query.values()):
        raise sink.UsageError(f"an otlp option is given more than once in {url!r}")
    footprint = query.get("footprint", ["off"])[0]
    if footprint not in ("gauges", "off"):
        raise sink.UsageError(f"otlp footprint must be gauges or off, not {footprint!r}")
    timeout = query.get("timeout", [str(DEFAULT_TIMEOUT_S)])[0]
    try:
        timeout_s = float(timeout)
    except ValueError:
        timeout_s = 0.0
    if not 0 < timeout_s <= 300:
        raise sink.UsageError(f"otlp timeout must be seconds from 0 to 300, not {timeout!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    path = parts.path if parts.path not in ("", "/") else DEFAULT_PATH
    return OtlpSettings(f"{scheme}://{host}:{port or DEFAULT_PORT}{path}", footprint == "gauges", timeout_s)


def _sdk() -> Any:
    """The OpenTelemetry SDK's modules, or one line saying how to get them."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter,
        )
        from opentelemetry.sdk.metrics import export  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415
    except ImportError:
        raise sink.ExtraMissing("the otlp sink", "OpenTelemetry's SDK and exporter", "otlp") from None
    return OTLPMetricExporter, export, Resource, InstrumentationScope


class OtlpSink:
    def __init__(self, settings: OtlpSettings) -> None:
        self.settings = settings
        exporter_class, self._export_module, self._resource_class, scope_class = _sdk()
        self._exporter = exporter_class(endpoint=settings.endpoint, timeout=settings.timeout_s)
        self._scope = scope_class("kstat", sink.KSTAT_VERSION)
        self.state = sink.OtlpState(footprint=settings.footprint)
        self._resource: Any = None
        self.exports = 0
        self.failed_exports = 0

    def __repr__(self) -> str:
        return f"otlp:{self.settings.endpoint}"

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        # The exporter's own thread: a slow receiver delays the next export, never a pass.
        limiter = trio.CapacityLimiter(1)
        try:
            async for event in events:
                if isinstance(event, sink.WindowStarted):
                    self.state.start(event)
                    self._resource = self._resource_class.create(
                        sink.otlp_resource_attributes(event.node, sink.KSTAT_VERSION, os.environ)
                    )
                elif isinstance(event, sink.IntervalEnded):
                    self.state.interval(event)
                else:
                    continue
                data = self._metrics_data()
                await trio.to_thread.run_sync(self._export, data, limiter=limiter)
        finally:
            await trio.to_thread.run_sync(self._exporter.shutdown, limiter=limiter)

    def _export(self, data: MetricsData) -> None:
        result = self._exporter.export(data, timeout_millis=self.settings.timeout_s * 1000)
        if result == self._export_module.MetricExportResult.SUCCESS:
            self.exports += 1
        else:
            # The next export carries the totals: nothing is lost but this interval's moment.
            self.failed_exports += 1
            log.warning(
                "OTLP export failed; the next one carries the totals", endpoint=self.settings.endpoint
            )

    def _metrics_data(self) -> MetricsData:
        export = self._export_module
        metrics = []
        for metric in self.state.metrics():
            points = [
                export.NumberDataPoint(
                    attributes=dict(point.attributes),
                    start_time_unix_nano=point.start_time_unix_nano,
                    time_unix_nano=point.time_unix_nano,
                    value=point.value,
                )
                for point in metric.points
            ]
            data = (
                export.Sum(points, export.AggregationTemporality.CUMULATIVE, metric.monotonic)
                if metric.shape is sink.OtlpShape.SUM
                else export.Gauge(points)
            )
            metrics.append(export.Metric(metric.name, metric.description, metric.unit, data))
        scope = export.ScopeMetrics(self._scope, metrics, "")
        return export.MetricsData([export.ResourceMetrics(self._resource, [scope], "")])  # type: ignore[no-any-return]


def from_spec(argument: str | None) -> OtlpSink:
    return OtlpSink(parse_otlp_url("otlp:" + (argument or "")))


def from_http_spec(argument: str | None) -> OtlpSink:
    return OtlpSink(parse_otlp_url("otlp+http:" + (argument or "")))


def from_https_spec(argument: str | None) -> OtlpSink:
    return OtlpSink(parse_otlp_url("otlp+https:" + (argument or "")))
