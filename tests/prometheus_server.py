"""Debian's `prometheus` (installed by `make deps`) on 127.0.0.1 with a 1 s scrape, for tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from tests.statsd_daemon import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def require(tool: str) -> str:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian's prometheus package); run `make deps`")
    return tool


@frozen
class PrometheusServer:
    port: int

    def query(self, expression: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        parameters = {"query": expression}
        if at is not None:
            parameters["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?{urllib.parse.urlencode(parameters)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expression: str, at: float | None = None) -> float | None:
        """The single value a query gives, or None while it gives nothing."""
        result = self.query(expression, at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expression: str, wanted: float, timeout_s: float = 30.0) -> float | None:
        """Poll until the query gives `wanted` (or time is up); the last value seen."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.value(expression)
            if value == wanted:
                return value
            time.sleep(0.25)
        return value


@contextmanager
def running_prometheus(
    directory: Path, target_port: int, labels: dict[str, str] | None = None
) -> Iterator[PrometheusServer]:
    """`labels`: target labels, as a cluster's discovery adds them (`node`)."""
    require(PROMETHEUS)
    port = free_port(1)
    config = directory / "prometheus.yml"
    target_labels = "".join(f"          {name}: '{value}'\n" for name, value in (labels or {}).items())
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        "scrape_configs:\n  - job_name: kstat\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        + (f"        labels:\n{target_labels}" if target_labels else "")
    )
    log = (directory / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(
                        f"prometheus did not start: {(directory / 'prometheus.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        yield PrometheusServer(port)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
