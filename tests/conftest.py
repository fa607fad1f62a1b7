"""Shared fixtures: real eBPF programs loaded through kstat's own bpf(2) layer."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from kstat._logging import configure_logging
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.disks import tiny_filesystem
from tests.names import TOKEN
from tests.windows import LoadFilter

# CAP_SYS_ADMIN: what mounts, fs.* sysctls, loop devices and BPF_ENABLE_STATS all need.
_CAP_SYS_ADMIN = 21


def has_cap_sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN: root in a container that dropped it does not."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


def pytest_configure(config: pytest.Config) -> None:
    # The suite holds more than 1,024 fds at once (programs, maps, sockets, kstat's own): the
    # soft limit goes up to the hard one, as far as 65,536.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def pytest_report_header() -> str:
    # Imported above, the token is in the environment before any test starts a helper process.
    return f"kstat test token: {TOKEN} (what this suite creates on the host is named kt{TOKEN}...)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0 and has_cap_sys_admin():
        return
    if os.geteuid() == 0:
        kernel = pytest.mark.skip(
            reason="root without CAP_SYS_ADMIN: cannot load eBPF programs and read stats"
        )
        root = pytest.mark.skip(reason="root without CAP_SYS_ADMIN: cannot mount or set sysctls")
    else:
        kernel = pytest.mark.skip(reason="needs root: loads eBPF programs and reads kernel stats")
        root = pytest.mark.skip(reason="needs root (mounts, sysctls), though not eBPF")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(kernel)
        elif "root" in item.keywords:
            item.add_marker(root)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB filesystem of the test's own, to fill up."""
    with tiny_filesystem(tmp_path / "tiny") as mount_point:
        yield mount_point


@pytest.fixture
def load_filter() -> Iterator[LoadFilter]:
    """Load socket filters attached to loopback UDP sockets; all unloaded after the test."""
    with ExitStack() as stack:

        def load(name: str, work_instructions: int = 0) -> LoopbackTarget:
            program = stack.enter_context(SocketFilter(name, work_instructions))
            return stack.enter_context(LoopbackTarget(program))

        yield load


@pytest.fixture(autouse=True)
def _kstat_logs_to_stderr() -> None:
    # In-process collections log like the CLI does: to stderr, info and up. Set again for each
    # test, as a test that runs the CLI in process binds the log to its own captured stream.
    configure_logging(verbose=False)
