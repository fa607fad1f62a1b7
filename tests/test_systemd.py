"""kstat under systemd: the sd_notify protocol against real listening sockets (a path and the
abstract namespace), `kstat serve` saying READY=1, WATCHDOG=1 and STOPPING=1, and
deploy/kstat.service checked by `systemd-analyze verify` and `security`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kstat.commands._systemd import Notifier
from tests.kstat_process import KstatProcess
from tests.names import KT
from tests.statsd_daemon import free_port
from tests.windows import LoadFilter

UNIT = Path(__file__).parents[1] / "deploy" / "kstat.service"
# The exposure `systemd-analyze security` gives the unit (docs/fleet.md quotes it).
MOST_EXPOSURE = 3.0


@contextmanager
def listening(address: str | bytes) -> Iterator[socket.socket]:
    """A unix datagram socket listening at `address`, as systemd's NOTIFY_SOCKET does."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.bind(address)
        receiver.settimeout(30)
        yield receiver
    finally:
        receiver.close()


def test_a_message_reaches_a_socket_by_path(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with listening(str(path)) as receiver:
        assert Notifier({"NOTIFY_SOCKET": str(path)}).notify("READY=1", "STATUS=collecting")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=collecting"


def test_a_message_reaches_a_socket_in_the_abstract_namespace() -> None:
    name = f"kstat-test-{os.getpid()}-{time.monotonic_ns()}"
    with listening(b"\0" + name.encode()) as receiver:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("STOPPING=1")
        assert receiver.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_nothing_is_sent_and_a_dead_socket_is_no_error(tmp_path: Path) -> None:
    assert not Notifier({}).enabled
    assert Notifier({}).notify("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).notify("READY=1") is False


def test_the_watchdog_is_ours_only_when_it_names_us() -> None:
    assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_s == 2.0
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 2.0
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_s is None


def messages_until(receiver: socket.socket, wanted: bytes, timeout_s: float = 30) -> list[bytes]:
    found: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        receiver.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = receiver.recv(4096)
        except TimeoutError:
            break
        found.append(message)
        if wanted in message:
            return found
    raise AssertionError(f"no {wanted!r} in {found}")


@pytest.mark.kernel
def test_serve_is_ready_after_its_baseline_pings_the_watchdog_and_says_it_stops(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    target = load_filter(f"{KT}notify")
    path = tmp_path / "notify"
    with listening(str(path)) as receiver:
        kstat = KstatProcess(
            [
                "serve",
                "--interval",
                "100ms",
                "--sink",
                f"prometheus://127.0.0.1:{free_port(socket.SOCK_STREAM)}",
                "-o",
                str(tmp_path / "report.json"),
            ],
            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"},
        )
        ready = messages_until(receiver, b"READY=1")  # on the baseline read: the window follows
        kstat.wait_for_window()
        target.send(25)
        pings = messages_until(receiver, b"WATCHDOG=1") + messages_until(receiver, b"WATCHDOG=1")
        kstat.signal(signal.SIGTERM)
        stopping = messages_until(receiver, b"STOPPING=1")
        returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert ready[-1] == b"READY=1\nSTATUS=collecting: the window's baseline is taken"
    assert pings.count(b"WATCHDOG=1") >= 2
    assert stopping[-1] == b"STOPPING=1\nSTATUS=stopping: SIGTERM"


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package); run `make deps`")
    return tool


def installed_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart= at this checkout's kstat: verify requires that the command
    exists, and here kstat is in the virtualenv, not /usr/local/bin."""
    kstat = Path(sys.executable).parent / "kstat"
    assert kstat.exists()
    unit = tmp_path / "kstat.service"
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/kstat serve " in text
    unit.write_text(text.replace("/usr/local/bin/kstat", str(kstat)))
    return unit


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    checked = subprocess.run(
        [systemd_analyze(), "verify", str(installed_unit(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""


def test_the_unit_is_notify_bounded_and_scores_well_in_systemd_analyze_security(tmp_path: Path) -> None:
    text = UNIT.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["CapabilityBoundingSet"] == "CAP_SYS_ADMIN CAP_SYS_PTRACE"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ExecStart"].split()[1] == "serve"
    checked = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", str(installed_unit(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for kstat\.service: (\d+\.\d+)", checked.stdout)
    assert found is not None, checked.stdout + checked.stderr
    assert float(found.group(1)) <= MOST_EXPOSURE
