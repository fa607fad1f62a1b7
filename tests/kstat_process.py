"""Running the real `kstat` command in a child process and following its log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tests.names import KT

KSTAT = [sys.executable, "-m", "kstat"]
# Under emulation (the kernel matrix's VMs, tests/kernels) Python runs about twelve times
# slower: what a test waits for gets that much longer.
PATIENCE: Final = 10.0 if os.environ.get("KSTAT_TEST_EMULATED") else 1.0
# The flags that select programs (kstat.commands._options).
_SELECTING: Final = frozenset(
    {"--name", "--id", "--pid", "--comm", "--type", "--unit", "--attached", "--attach-type"}
    | {"--container", "--pod", "--namespace"}
)


def own_programs(arguments: Sequence[str]) -> list[str]:
    """The window command (`kstat`, `kstat serve`) over this suite's programs only, unless the
    arguments select programs themselves: a busy host's every program (another suite's, a
    benchmark's 30,000) would make each pass take seconds, and the test would measure them."""
    window = not arguments or arguments[0].startswith("-") or arguments[0] == "serve"
    if not window or any(argument.split("=")[0] in _SELECTING for argument in arguments):
        return list(arguments)
    return [*arguments, "--name", f"^{KT}"]


class KstatProcess:
    """`python -m kstat ARGS` with its stderr log parsed as it arrives (JSON lines, no TTY)."""

    def __init__(
        self,
        arguments: Sequence[str],
        *,
        prefix: Sequence[str] = (),
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        whole_host: bool = False,
    ) -> None:
        """Over this suite's own programs (`own_programs`) unless `whole_host`."""
        self.process = subprocess.Popen(
            [*prefix, *KSTAT, *(arguments if whole_host else own_programs(arguments))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.log: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        self._events_seen: set[str] = set()
        self._event_arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr_lines.append(line)
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.log.append(entry)
            with self._event_arrived:
                self._events_seen.add(str(entry.get("event")))
                self._event_arrived.notify_all()

    def wait_for_event(self, event: str, timeout_s: float = 30) -> None:
        """Wait until kstat has logged `event` ("window started", "command started", ...)."""
        with self._event_arrived:
            if not self._event_arrived.wait_for(lambda: event in self._events_seen, timeout_s * PATIENCE):
                self.process.kill()
                raise AssertionError(f"kstat never logged {event!r}: {self.stderr_lines}")

    def wait_for_window(self, timeout_s: float = 30) -> None:
        """Until its baseline reading is taken (what --ready-file says too)."""
        self.wait_for_event("baseline taken", timeout_s)

    def signal(self, signal_number: signal.Signals) -> None:
        self.process.send_signal(signal_number)

    def finish(self, timeout_s: float = 60) -> tuple[int, str]:
        """Wait for exit; return the exit status and standard output."""
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()
        returncode = self.process.wait(timeout_s * PATIENCE)
        self._reader.join(timeout_s * PATIENCE)
        return returncode, stdout.decode()

    def errors(self) -> list[str]:
        """stderr lines that are not structured log entries (the one-line errors)."""
        return [line for line in self.stderr_lines if not line.startswith("{")]


def wait_until_ready(
    ready_file: Path, process: subprocess.Popen[Any] | None = None, timeout_s: float = 30
) -> dict[str, Any]:
    """Wait for kstat's `--ready-file` (its baseline reading is taken); what it says."""
    deadline = time.monotonic() + timeout_s * PATIENCE
    while not ready_file.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"kstat exited ({process.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise AssertionError(f"kstat never wrote {ready_file}")
        time.sleep(0.005)  # polling for the file: how long it takes is not what is tested
    found: dict[str, Any] = json.loads(ready_file.read_text())
    return found


def run_kstat(
    arguments: Sequence[str],
    *,
    prefix: Sequence[str] = (),
    timeout_s: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *KSTAT, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout_s * PATIENCE,
        check=False,
        env={**os.environ, **(env or {})},
    )


def line_of(report: Mapping[str, Any], program_id: int) -> dict[str, Any]:
    """A report's line for one program, by its id: a test run twice in a suite (parametrized)
    can meet the program of its previous run still being freed under the same name, and then
    the lines are keyed `name#id`."""
    lines = [line for line in report["program_stats"].values() if line.get("id") == program_id]
    assert len(lines) == 1, f"program {program_id} is in {len(lines)} lines of the report"
    found: dict[str, Any] = lines[0]
    return found
