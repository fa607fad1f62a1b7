"""The OTLP sink: its URLs, its mapping from the catalogue, and a real `kstat serve` exporting to
a receiver that decodes every request with the official `opentelemetry-proto` messages, while
exactly N packets pass a socket filter (no Collector binary with an OTLP receiver is served by
PyPI, npm or Debian here: the one wheel that ships `otelcol-contrib` has no OTLP receiver)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from kstat.core.events import IntervalEnded, WindowStarted
from kstat.errors import UsageError
from kstat.formats.otlp import Shape, mappings, state_of
from kstat.sinks.otlp import OtlpSettings, parse_otlp_url
from tests.builders import events_of, program, snapshot
from tests.kstat_process import KstatProcess
from tests.names import KT
from tests.windows import LoadFilter


def test_urls() -> None:
    assert parse_otlp_url("otlp://collector") == OtlpSettings("http://collector:4318/v1/metrics")
    assert parse_otlp_url("otlp+http://10.0.0.1:9000/otlp/v1/metrics?footprint=gauges&timeout=2") == (
        OtlpSettings("http://10.0.0.1:9000/otlp/v1/metrics", footprint=True, timeout_s=2.0)
    )
    assert parse_otlp_url("otlp+https://[::1]") == OtlpSettings("https://[::1]:4318/v1/metrics")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("otlp:collector", "expected otlp://"),
        ("otlp://collector:0", "port 0"),
        ("otlp://collector?colour=red", "unknown otlp option"),
        ("otlp://collector?footprint=yes", "gauges or off"),
        ("otlp://collector?timeout=never", "seconds from 0 to 300"),
    ],
)
def test_malformed_urls_are_usage_errors(url: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_otlp_url(url)


def test_the_catalogues_counters_are_cumulative_sums_named_as_opentelemetry_names_them() -> None:
    found = {mapping.name: (mapping.unit, mapping.shape) for mapping in mappings(footprint=True)}
    assert found["kstat.program.runs"] == ("{run}", Shape.SUM)
    assert found["kstat.program.run_time"] == ("s", Shape.SUM)
    assert found["kstat.program.recursion_misses"] == ("{miss}", Shape.SUM)
    assert found["kstat.program.jited_size"] == ("By", Shape.GAUGE)
    assert "kstat.program.jited_size" not in {mapping.name for mapping in mappings()}


def test_counts_start_at_the_baseline_or_the_load() -> None:
    events = events_of(
        snapshot(0, 0.0, program(1, 1_000, 10)),
        snapshot(1, 1.0, program(1, 3_000, 30), program(2, 700, 7, load_time_ns=10_500_000_000)),
    )
    state = state_of([event for event in events if isinstance(event, WindowStarted | IntervalEnded)])
    runs = {metric.name: metric for metric in state.metrics()}["kstat.program.runs"]
    assert {dict(point.attributes)["id"]: point.value for point in runs.points} == {1: 20, 2: 7}
    assert runs.monotonic


class Receiver:
    """An OTLP/HTTP receiver: every request decoded with opentelemetry-proto's messages."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                with receiver.arrived:
                    receiver.requests.append(request)
                    receiver.arrived.notify_all()
                answer = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.paths_ok = True

    def wait_for(self, count: int, timeout_s: float = 30) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout_s), len(self.requests)


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def value(any_value: AnyValue) -> object:
    kind = any_value.WhichOneof("value")
    assert kind is not None
    return getattr(any_value, kind)


def points_of(request: ExportMetricsServiceRequest, name: str) -> dict[str, Any]:
    """The data points of metric `name` for the program `{KT}otlp` in one request."""
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != name:
                    continue
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    attributes = {attribute.key: value(attribute.value) for attribute in point.attributes}
                    if attributes.get("name") == f"{KT}otlp":
                        return {"metric": metric, "point": point, "attributes": attributes, "kind": kind}
    return {}


@pytest.mark.kernel
def test_a_receiver_gets_exact_cumulative_counts_and_the_resource(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    target = load_filter(f"{KT}otlp")
    report_path = tmp_path / "report.json"
    with receiving() as receiver:
        kstat = KstatProcess(
            [
                "serve",
                "--interval",
                "200ms",
                "--name",
                f"^{KT}otlp$",
                "--sink",
                f"otlp://127.0.0.1:{receiver.port}?footprint=gauges",
                "-o",
                str(report_path),
            ],
            env={
                "NODE_NAME": "node-7",
                "POD_NAME": "kstat-abcde",
                "POD_NAMESPACE": "kstat",
                "CONTAINER_NAME": "kstat",
            },
        )
        kstat.wait_for_window()
        receiver.wait_for(1)
        target.send(300)
        receiver.wait_for(len(receiver.requests) + 3)
        target.send(200)
        kstat.signal(signal.SIGTERM)
        returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    report = json.loads(report_path.read_text())
    line = report["program_stats"][f"{KT}otlp"]
    assert line["run_count"] == 500
    last = receiver.requests[-1]
    runs = points_of(last, "kstat.program.runs")
    assert runs["kind"] == "sum"
    assert runs["metric"].sum.is_monotonic
    assert runs["metric"].sum.aggregation_temporality == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
    assert runs["metric"].unit == "{run}"
    assert runs["point"].as_int == 500  # every run, in the last export
    assert runs["attributes"]["type"] == "SocketFilter"
    assert runs["attributes"]["ebpf.program.tag"] == line["tag"]
    run_time = points_of(last, "kstat.program.run_time")
    assert run_time["metric"].unit == "s"
    assert run_time["point"].as_double == pytest.approx(line["runtime_ns"] / 1e9)
    assert run_time["point"].start_time_unix_nano < run_time["point"].time_unix_nano
    jited = points_of(last, "kstat.program.jited_size")
    assert jited["kind"] == "gauge" and jited["point"].as_int == line["jited_size_bytes"]
    # Cumulative all along: each export's count is at least the one before.
    counts = [points_of(request, "kstat.program.runs")["point"].as_int for request in receiver.requests]
    assert counts == sorted(counts) and counts[0] == 0 and 300 in counts
    resource = {
        attribute.key: value(attribute.value) for attribute in last.resource_metrics[0].resource.attributes
    }
    assert resource["service.name"] == "kstat"
    assert resource["k8s.node.name"] == "node-7"
    assert resource["k8s.pod.name"] == "kstat-abcde"
    assert resource["k8s.namespace.name"] == "kstat"
    assert resource["k8s.container.name"] == "kstat"


def test_without_the_extra_it_is_one_line_and_exit_1() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None; from kstat._entry import main; "
        "sys.argv = ['kstat', 'serve', '--sink', 'otlp://127.0.0.1:4318']; main()"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 1
    assert completed.stderr == (
        "kstat: error: the otlp sink needs OpenTelemetry's SDK and exporter: pip install 'kstat[otlp]'\n"
    )
