"""The reference StatsD daemon (npm `statsd`, installed by `make deps`) on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from attrs import frozen

STATSD_DIR = Path(__file__).with_name("statsd")
STATSD_MAIN = STATSD_DIR / "node_modules" / "statsd" / "stats.js"
# util.inspect's dump of an object: one `'key': value,` (or `key: value`) per line.
_ENTRY = re.compile(r"^\s*\{?\s*'?(?P<key>[^':{}]+)'?:\s*(?P<value>-?[0-9.]+),?\s*\}?\s*$")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@frozen
class StatsdDaemon:
    udp_port: int
    tcp_port: int
    admin_port: int

    def admin(self, command: str) -> dict[str, float]:
        """Ask the admin port (`counters`, `gauges`) and parse its dump."""
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=5) as connection:
            connection.sendall(command.encode() + b"\n")
            received = b""
            while not received.rstrip().endswith(b"END"):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                received += chunk
        values: dict[str, float] = {}
        for line in received.decode().splitlines():
            match = _ENTRY.match(line)
            if match:
                values[match["key"].strip()] = float(match["value"])
        return values

    def counters(self) -> dict[str, float]:
        return self.admin("counters")

    def gauges(self) -> dict[str, float]:
        return self.admin("gauges")


@contextmanager
def running_statsd(tmp_path: Path) -> Iterator[StatsdDaemon]:
    if not STATSD_MAIN.exists():
        message = f"the reference StatsD daemon is not installed ({STATSD_MAIN}); run `make deps`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    daemon = StatsdDaemon(
        free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    )
    config = tmp_path / "statsd-config.js"
    # Flushes once an hour, so counters add up over the whole test; no backend, loopback only.
    config.write_text(
        "{ servers: ["
        f'{{ server: "./servers/udp", address: "127.0.0.1", port: {daemon.udp_port} }}, '
        f'{{ server: "./servers/tcp", address: "127.0.0.1", port: {daemon.tcp_port} }}], '
        f'mgmt_address: "127.0.0.1", mgmt_port: {daemon.admin_port}, '
        "flushInterval: 3600000, backends: [] }\n"
    )
    log_path = tmp_path / "statsd.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            ["node", str(STATSD_MAIN), str(config)], cwd=STATSD_MAIN.parent, stdout=log_file, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                daemon.counters()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"statsd did not start: {log_path.read_text()}") from None
                time.sleep(0.1)
        yield daemon
    finally:
        process.terminate()
        process.wait(10)
