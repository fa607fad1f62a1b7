"""Another process holding programs, as another tenant's agent would: tests/program_holder.py
(socket filters that obey commands) or tests/idle_holder.py (many idle ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from kstat.core.model import ProgramOwner
from kstat.text import from_host

REPO = Path(__file__).parents[1]


class HolderProcess:
    """`python -m MODULE ARGUMENTS...`, once it has said what it holds (its first line, kept in
    `said`); `detached` makes it a child of init (`setsid --fork`), outside the test's tree."""

    def __init__(self, module: str, *arguments: str, detached: bool = False) -> None:
        self.process = subprocess.Popen(
            [*(["setsid", "--fork"] if detached else []), sys.executable, "-m", module, *arguments],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.said: dict[str, Any] = json.loads(self.process.stdout.readline())

    @property
    def pid(self) -> int:
        return int(self.said["pid"])

    @property
    def ids(self) -> list[int]:
        return list(self.said.get("ids", []))

    @property
    def command(self) -> str:
        """Its comm as kstat shows it (kstat's one rule for host bytes)."""
        return from_host(Path(f"/proc/{self.pid}/comm").read_bytes().removesuffix(b"\n"))

    def owner(self) -> ProgramOwner:
        return ProgramOwner(self.pid, self.command)

    def ask(self, line: str) -> str:
        """A command (tests/program_holder.py's); the answer's value (empty for a bare `ok`)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        assert answer[:1] == ["ok"], answer
        return " ".join(answer[1:])

    def tell(self, line: str) -> None:
        self.ask(line)

    def send(self, count: int, index: int = 0) -> None:
        """`count` packets through its program `index`."""
        self.ask(f"send {index} {count}")

    def close(self, timeout_s: float = 60) -> None:
        """End its input: it unloads everything and exits."""
        if self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout_s)


def program_holder(*specs: str, comm: bytes | None = None, detached: bool = False) -> HolderProcess:
    """tests/program_holder.py holding socket filters (`NAME[:FUNCTION_NAME]` each), named
    `comm` (any bytes) if given."""
    named = ("--comm", comm.hex()) if comm is not None else ()
    return HolderProcess("tests.program_holder", *named, *specs, detached=detached)
