"""The iterator's kernel offsets, worked out from the kernel's BTF once per kernel and kept on disk.

Parsing vmlinux BTF takes half a second of Python; the offsets it yields (a dozen numbers for
each of kstat's iterators) are the same for every boot of the same kernel build. So the first
kstat on a kernel parses it and keeps the offsets in `/var/cache/kstat` (`KSTAT_CACHE_DIR`
elsewhere), named by a SHA-256 of the BTF itself: a different kernel, even of the same version
string, has a different file. Later runs read a few hundred bytes instead, which is what lets
the command line take its baseline by iterator at launch (one read for every program, stamped
at that read) rather than by a syscall walk that, at 10,000 programs, reads the first program a
hundred milliseconds before the last.

The file steers what kstat's kernel programs read, as root: it is trusted only when it is a
regular file (no link followed) owned by root or by kstat's own user, writable by no one else,
in a directory that is the same; anything else, or any field out of shape, and the BTF is parsed
again and the file replaced (written exclusively, then renamed: `kstat._atomic`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from kstat.errors import KstatError

CACHE_DIR: Final = Path("/var/cache/kstat")
# Bumped whenever an offsets class means something new: older files are then not read.
_VERSION: Final = 1
_LARGEST: Final = 64 * 1024

Offsets = TypeVar("Offsets")


def cache_directory() -> Path:
    return Path(os.environ.get("KSTAT_CACHE_DIR") or CACHE_DIR)


def _cache_file(btf: Path) -> Path:
    status = btf.stat()
    digest = _digest(btf, status.st_ino, status.st_size, status.st_mtime_ns)
    return cache_directory() / f"kernel-offsets-{digest}.json"


@functools.cache
def _digest(btf: Path, inode: int, size: int, mtime_ns: int) -> str:
    """The BTF's SHA-256 (5 MB read and hashed: about 8 ms), once per process for a file that
    has not changed; each of kstat's iterators asks."""
    return hashlib.sha256(btf.read_bytes()).hexdigest()[:32]


def _trusted(status: os.stat_result) -> bool:
    return status.st_uid in (0, os.geteuid()) and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read_trusted(path: Path) -> dict[str, Any]:
    """The cache file's sections, or nothing for a file that is missing, untrusted or not JSON."""
    try:
        if not _trusted(os.stat(path.parent, follow_symlinks=False)):
            return {}
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    with open(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode) or not _trusted(status) or status.st_size > _LARGEST:
            return {}
        try:
            found: Any = json.loads(file.read(_LARGEST))
        except (OSError, ValueError):
            return {}
    return found if isinstance(found, dict) and found.get("version") == _VERSION else {}


def _decode(kind: type[Offsets], found: object) -> Offsets | None:
    """An offsets value from its section, or None for anything but exactly its shape: every
    field there, each an int (bool where the class says so) below 2^32, or null."""
    fields = attrs.fields_dict(kind)  # type: ignore[arg-type]
    if not isinstance(found, dict) or set(found) != set(fields):
        return None
    for name, value in found.items():
        flag = fields[name].type in (bool, "bool")
        if flag != isinstance(value, bool):
            return None
        if not flag and value is not None and not (isinstance(value, int) and 0 <= value < 2**32):
            return None
    return kind(**found)


def offsets(kind: type[Offsets], parse: Callable[[Path], Offsets], btf: Path) -> Offsets:
    """This kernel's `kind` of offsets: from the cache, else `parse(btf)` (then kept for next
    time where kstat may write; a cache it cannot write only costs the parse again)."""
    try:
        path = _cache_file(btf)
    except OSError:
        return parse(btf)  # no BTF: the parse says so in its own words
    sections = _read_trusted(path)
    found = _decode(kind, sections.get(kind.__name__))
    if found is not None:
        return found
    parsed = parse(btf)
    # Imported here: only a first run on this kernel writes (tempfile and secrets are slow to
    # import, and a start that reads the cache needs neither).
    from kstat._atomic import make_directory, write_atomically  # noqa: PLC0415

    with contextlib.suppress(OSError, ValueError, KstatError):
        directory = cache_directory()
        make_directory(directory)
        if _trusted(os.stat(directory, follow_symlinks=False)):
            sections = {**sections, "version": _VERSION, kind.__name__: attrs.asdict(parsed)}  # type: ignore[arg-type]
            write_atomically(path, json.dumps(sections, sort_keys=True).encode() + b"\n")
    return parsed


def cached(kind: type[Offsets], btf: Path) -> bool:
    """Whether the cache has this kernel's `kind` of offsets (nothing parsed, nothing written)."""
    try:
        return _decode(kind, _read_trusted(_cache_file(btf)).get(kind.__name__)) is not None
    except OSError:
        return False
