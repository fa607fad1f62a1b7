"""The Prometheus sink: its exposition (checked by promtool and the client's parsers), its HTTP
endpoint, and a real Prometheus scraping `kstat serve` while exactly N packets pass."""

from __future__ import annotations

import calendar
import gzip
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import trio
from attrs import evolve
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as _parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from kstat.core.counters import Counters
from kstat.core.events import Event, IntervalEnded, WindowStarted
from kstat.core.model import MapFootprint, ProgramFootprint, ProgramStats, Snapshot
from kstat.engine.scheduler import Collection, CollectionSettings
from kstat.errors import UsageError
from kstat.formats.prometheus import Exposition, Format, exposition_of, negotiate, series_per_program
from kstat.sinks.prometheus import (
    DEFAULT_PORT,
    PrometheusSettings,
    PrometheusSink,
    parse_prometheus_url,
)
from tests.builders import FakeSource, events_of, program, snapshot, stats_left_alone
from tests.kstat_process import KstatProcess, run_kstat
from tests.names import KT
from tests.prometheus_server import PROMTOOL, require, running_prometheus
from tests.statsd_daemon import free_port
from tests.windows import LoadFilter

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# The client library leaves its OpenMetrics parser without annotations.
parse_openmetrics = cast(Callable[[str], Iterator[Metric]], _parse_openmetrics)


def test_urls() -> None:
    assert parse_prometheus_url("prometheus:") == PrometheusSettings("127.0.0.1", DEFAULT_PORT)
    assert parse_prometheus_url("prometheus://:9999") == PrometheusSettings("127.0.0.1", 9999)
    assert parse_prometheus_url("prometheus://0.0.0.0:20915") == PrometheusSettings("0.0.0.0", 20915)
    assert parse_prometheus_url("prometheus://[::1]:8000") == PrometheusSettings("::1", 8000)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("prometheus://host:99999", "bad prometheus address"),
        ("prometheus://host:8000/metrics", "the endpoint is always /metrics"),
        ("prometheus://host:0", "port 0"),
        ("prometheus:host:1", "expected prometheus://"),
    ],
)
def test_malformed_urls_are_usage_errors(url: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_prometheus_url(url)


def exposition_after(*snapshots: Snapshot, footprint: bool = False) -> Exposition:
    return exposition_of(
        [event for event in events_of(*snapshots) if isinstance(event, WindowStarted | IntervalEnded)],
        footprint=footprint,
    )


def render(exposition: Exposition, accept: str) -> tuple[bytes, str]:
    rendered = exposition.render(negotiate(accept))
    return rendered.body, rendered.content_type


def samples(text: str) -> dict[tuple[str, str], float]:
    """(sample name, program id or "") -> value."""
    found = {}
    for family in parse_text(text):
        for sample in family.samples:
            found[(sample.name, sample.labels.get("id", ""))] = sample.value
    return found


# Program 1 was loaded before kstat started (its counters start at its first reading); program
# 2 loads at 1.5 s, after the start (every run counts); program 3 unloads.
WINDOW = (
    snapshot(0, 0.0, program(1, 1_000, 10, name="early"), program(3, 0, 0, name="leaving")),
    snapshot(
        1,
        1.0,
        program(1, 3_000_000_000, 30, name="early"),
        program(3, 500, 5, name="leaving"),
    ),
    snapshot(
        2,
        2.0,
        program(1, 5_000_000_000, 40, name="early"),
        program(2, 700, 7, name="late", load_time_ns=11_500_000_000, recursion_misses=2),
    ),
)


def test_counters_count_since_kstat_started_or_the_program_loaded() -> None:
    body, content_type = render(exposition_after(*WINDOW), accept="")
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(body.decode())
    assert found[("kstat_program_runs_total", "1")] == 30
    assert found[("kstat_program_run_time_seconds_total", "1")] == pytest.approx(4.999999)
    assert found[("kstat_program_runs_total", "2")] == 7
    assert found[("kstat_program_recursion_misses_total", "2")] == 2
    # Gone by the last pass: no longer exposed.
    assert ("kstat_program_runs_total", "3") not in found
    assert found[("kstat_programs_loaded", "")] == 2
    assert found[("kstat_snapshots_total", "")] == 3
    assert found[("kstat_stats_enabled", "")] == 1


def test_labels_are_few_on_counters_and_the_rest_is_on_the_info_series() -> None:
    body, _ = render(exposition_after(*WINDOW), accept="")
    for family in parse_text(body.decode()):
        for sample in family.samples:
            if sample.name == "kstat_program_runs_total":
                assert set(sample.labels) == {"id", "name", "type"}
            if sample.name == "kstat_program_info":
                assert set(sample.labels) == {
                    "id",
                    "name",
                    "kernel_name",
                    "type",
                    "tag",
                    "owners",
                    "attachments",
                    "pod",
                    "namespace",
                    "container",
                    "unit",
                }


def test_promtool_finds_nothing_wrong(tmp_path: Path) -> None:
    body, _ = render(exposition_after(*WINDOW), accept="")
    checked = subprocess.run(
        [require(PROMTOOL), "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""  # no lint warnings either


def test_openmetrics_is_served_when_asked_for() -> None:
    body, content_type = render(exposition_after(*WINDOW), accept=OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    families = {family.name: family for family in parse_openmetrics(body.decode())}
    assert families["kstat_program_runs"].type == "counter"
    assert families["kstat_program"].type == "info"
    assert body.endswith(b"# EOF\n")


def test_both_formats_carry_the_same_samples_for_the_official_parsers() -> None:
    exposition = exposition_after(*WINDOW, footprint=True)
    text = {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in parse_text(exposition.render(Format.TEXT).body.decode())
        for sample in family.samples
    }
    openmetrics = {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in parse_openmetrics(exposition.render(Format.OPENMETRICS).body.decode())
        for sample in family.samples
    }
    assert text == openmetrics
    assert len(text) == exposition.render(Format.TEXT).series


def hostile(program_id: int, run_count: int = 1) -> ProgramStats:
    return program(program_id, 10 * run_count, run_count, name='a"b\\c\nd\u00e9\U0001f600')


def test_names_reach_the_labels_escaped_and_come_back_exactly() -> None:
    window = (snapshot(0, 0.0, hostile(1)), snapshot(1, 1.0, hostile(1, 3)))
    for output, parse in ((Format.TEXT, parse_text), (Format.OPENMETRICS, parse_openmetrics)):
        body = exposition_after(*window).render(output).body.decode()
        names = {
            sample.labels["name"]
            for family in parse(body)
            for sample in family.samples
            if "name" in sample.labels
        }
        assert names == {'a"b\\c\nd\u00e9\U0001f600'}, output


def footprint(jited: int) -> ProgramFootprint:
    return ProgramFootprint(jited, 2 * jited, 7, 4096, (MapFootprint(9, 8192),))


@pytest.mark.parametrize("with_footprint", [False, True])
def test_at_10000_programs_each_has_at_most_its_budget_of_series(with_footprint: bool) -> None:
    programs = [
        program(number, 100 * number, number, footprint=footprint(number)) for number in range(1, 10_001)
    ]
    moved = [evolve(entry, counters=Counters(200 * entry.id, 2 * entry.id, 1)) for entry in programs]
    exposition = exposition_after(
        snapshot(0, 0.0, *programs), snapshot(1, 1.0, *moved), footprint=with_footprint
    )
    budget = series_per_program(footprint=with_footprint)
    assert budget == (10 if with_footprint else 4)
    body = exposition.render(Format.TEXT).body.decode()
    per_program = Counter(re.findall(r'^kstat_program_\w+\{id="(\d+)"', body, flags=re.MULTILINE))
    assert len(per_program) == 10_000
    assert set(per_program.values()) == {budget}


def test_footprint_gauges_only_when_asked_and_then_as_the_program_has_it() -> None:
    window = (
        snapshot(0, 0.0, program(1, 0, 0, footprint=footprint(100))),
        snapshot(1, 1.0, program(1, 10, 1, footprint=footprint(100))),
    )
    plain = samples(exposition_after(*window).render(Format.TEXT).body.decode())
    assert not [name for name, _ in plain if name == "kstat_program_jited_size_bytes"]
    found = samples(exposition_after(*window, footprint=True).render(Format.TEXT).body.decode())
    assert found[("kstat_program_jited_size_bytes", "1")] == 100
    assert found[("kstat_program_xlated_size_bytes", "1")] == 200
    assert found[("kstat_program_verified_instructions", "1")] == 7
    assert found[("kstat_program_maps", "1")] == 1
    assert found[("kstat_program_memlock_bytes", "1")] == 4096
    assert found[("kstat_program_maps_memlock_bytes", "1")] == 8192


def test_options_in_the_url() -> None:
    assert parse_prometheus_url(
        "prometheus://:9999?footprint=gauges&max_connections=8"
    ) == PrometheusSettings("127.0.0.1", 9999, footprint=True, max_connections=8)
    for url, complaint in [
        ("prometheus://:9999?footprint=yes", "gauges or off"),
        ("prometheus://:9999?max_connections=0", "from 1 to 4096"),
        ("prometheus://:9999?colour=red", "unknown prometheus option"),
        ("prometheus://:9999?footprint=off&footprint=gauges", "more than once"),
    ]:
        with pytest.raises(UsageError, match=complaint):
            parse_prometheus_url(url)


def http(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def test_the_endpoint_negotiates_compresses_and_stops_with_the_window() -> None:
    """No root: a scripted window in real time, with the endpoint asked over HTTP."""
    endpoint = PrometheusSink(PrometheusSettings("127.0.0.1", 0))
    collection = Collection(
        CollectionSettings(duration_ns=None, interval_ns=50_000_000),
        [endpoint],
        source=FakeSource(list(WINDOW)),
        stats_switch=stats_left_alone,
    )
    answers = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collection.run)
        await collection.window_started.wait()
        port = endpoint.port
        await wait_until_ready(port)
        for name, path, headers, method in [
            ("text", "/metrics", {}, "GET"),
            ("openmetrics", "/metrics", {"Accept": OPENMETRICS}, "GET"),
            # The first to ask for gzip gets it plain: it is compressed from the next render on.
            ("gzip first", "/metrics", {"Accept-Encoding": "gzip"}, "GET"),
            ("head", "/metrics", {}, "HEAD"),
            ("index", "/", {}, "GET"),
            ("ready", "/ready", {}, "GET"),
            ("healthz", "/healthz", {}, "GET"),
            ("missing", "/nope", {}, "GET"),
            ("post", "/metrics", {}, "POST"),
        ]:
            answers[name] = await trio.to_thread.run_sync(http, port, path, headers, method)
        sequence = endpoint.exposition.health.snapshots
        while endpoint.exposition.health.snapshots < sequence + 2:  # rendered since it was asked
            await trio.sleep(0.01)
        answers["gzip"] = await trio.to_thread.run_sync(http, port, "/metrics", {"Accept-Encoding": "gzip"})
        collection.stop.request("test done")
    status, headers, body = answers["text"]
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'kstat_program_runs_total{id="1",name="early",type="SocketFilter"}' in body
    assert answers["openmetrics"][1]["Content-Type"].startswith("application/openmetrics-text")
    assert answers["openmetrics"][2].endswith(b"# EOF\n")
    assert "Content-Encoding" not in answers["gzip first"][1]
    status, headers, body = answers["gzip"]
    assert headers["Content-Encoding"] == "gzip" and b"kstat_programs_loaded" in gzip.decompress(body)
    assert answers["head"][0] == 200 and answers["head"][2] == b""
    assert int(answers["head"][1]["Content-Length"]) > 0
    assert answers["index"][0] == 200 and b"/metrics" in answers["index"][2]
    assert answers["ready"][:3:2] == (200, b"ready\n")
    assert answers["healthz"][:3:2] == (200, b"ok\n")
    assert answers["missing"][0] == 404
    assert answers["post"][0] == 405
    # The window is over: so is the endpoint.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def wait_until_ready(port: int, timeout_s: float = 10) -> None:
    with trio.fail_after(timeout_s):
        while (await trio.to_thread.run_sync(http, port, "/ready"))[0] != 200:
            await trio.sleep(0.02)


async def test_before_the_baseline_metrics_and_ready_say_503_and_healthz_200() -> None:
    endpoint = PrometheusSink(PrometheusSettings("127.0.0.1", 0))
    send, receive = trio.open_memory_channel[Event](1)
    async with trio.open_nursery() as nursery, send:
        nursery.start_soon(endpoint.consume, receive)
        answers = {
            path: await trio.to_thread.run_sync(http, endpoint.port, path)
            for path in ("/metrics", "/ready", "/healthz")
        }
    assert answers["/metrics"][0] == 503 and b"no baseline" in answers["/metrics"][2]
    assert answers["/ready"][0] == 503
    assert answers["/healthz"][0] == 200


def test_a_port_in_use_fails_before_the_window() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        completed = run_kstat(["serve", "--sink", f"prometheus://127.0.0.1:{port}"])
    assert completed.returncode == 1
    assert (
        completed.stderr
        == f"kstat: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use\n"
    )


@pytest.mark.kernel
def test_a_real_prometheus_counts_every_packet(load_filter: LoadFilter, tmp_path: Path) -> None:
    """Debian's Prometheus scrapes `kstat serve` every second while exactly N packets pass a
    socket filter loaded after kstat started: the counter it stores is N, and its rate agrees
    with kstat's own events/s."""
    port = free_port(socket.SOCK_STREAM)
    stream = tmp_path / "kstat.ndjson"
    with running_prometheus(tmp_path, port) as prometheus:
        kstat = KstatProcess(
            [
                "serve",
                "--interval",
                "500ms",
                "--sink",
                f"prometheus://127.0.0.1:{port}",
                "--sink",
                f"ndjson:{stream}",
            ]
        )
        kstat.wait_for_window()
        target = load_filter(f"{KT}prom")
        # By its id: another suite on the host may hold a program of the same name.
        series = f'kstat_program_runs_total{{id="{target.program.id}",job="kstat"}}'
        assert prometheus.wait_for(series, 0) == 0  # scraped before any traffic
        packets, rate_per_s, started = 0, 400, time.time()
        while time.time() - started < 8:  # a steady rate, in bursts of 20
            target.send(20)
            packets += 20
            time.sleep(max(0.0, started + packets / rate_per_s - time.time()))
        ended = time.time()
        assert prometheus.wait_for(series, packets) == packets
        middle = (started + ended) / 2 + 1
        prometheus_rate = prometheus.value(f"rate({series}[4s])", at=middle)
        # The queries docs/fleet.md gives for a fleet are valid PromQL over what was scraped
        # (asked at the end of the traffic, while the series are fresh).
        for expression in fleet_page_queries():
            prometheus.query(expression, at=ended)
        costliest = prometheus.query(
            "topk(10, sum by (instance, name) "
            f'(rate(kstat_program_run_time_seconds_total{{name=~"{KT}.*"}}[1m])))',
            at=ended,
        )
        info = prometheus.query(f'kstat_program_info{{id="{target.program.id}"}}', at=ended)
        kstat.signal(signal.SIGTERM)
        returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    lines = [json.loads(line) for line in stream.read_text().splitlines()]
    # kstat's own events/s over the intervals inside the same 4 s.
    inside = [
        line
        for line in lines
        if line["kind"] == "interval" and middle - 4 <= _unix(line["end_time"]) <= middle
    ]
    own_id = target.program.id
    kstat_rate = sum(
        stats["run_count"]
        for line in inside
        for stats in line["program_stats"].values()
        if stats["id"] == own_id
    ) / (sum(line["elapsed_ns"] for line in inside) / 1e9)
    assert prometheus_rate is not None
    assert prometheus_rate == pytest.approx(kstat_rate, rel=0.15)
    assert any(entry["metric"]["name"] == f"{KT}prom" for entry in costliest)
    assert info[0]["metric"]["kernel_name"] == f"{KT}prom"


def fleet_page_queries() -> list[str]:
    """The PromQL expressions of docs/fleet.md's ```promql block (comments dropped, lines joined)."""
    page = (Path(__file__).parents[1] / "docs" / "fleet.md").read_text()
    block = page.split("```promql\n", 1)[1].split("```", 1)[0]
    expressions = [
        " ".join(line.strip() for line in part.splitlines() if not line.startswith("#"))
        for part in block.split("\n\n")
    ]
    return [expression for expression in expressions if expression]


def test_the_fleet_page_has_fleet_queries() -> None:
    assert len(fleet_page_queries()) == 3


def _unix(timestamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as kstat writes it (UTC, up to ns)."""
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + float(f"0.{fraction or 0}")
