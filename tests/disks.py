"""Full disks for tests, made for real: a 16 KiB tmpfs mounted for the test (needs root)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tiny_filesystem(mount_point: Path) -> Iterator[Path]:
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "kstat-test", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill_up(path: Path) -> None:
    """Write `path` until its filesystem is full."""
    with path.open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"x" * 1024)
        except OSError:
            pass
