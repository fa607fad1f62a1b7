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

Reading it is on the command line's path to its baseline (`kstat._baseline`): no attrs, pathlib
or typing at run time (an offsets class declares its fields by its annotations, attrs or not),
nor json, contextlib or functools, which bring re, enum and collections (`_read_json`); writing
it imports what it needs then. Nor is the BTF hashed at every launch (5 MB read from
sysfs a page at a time, and OpenSSL loaded, to hash it: tens of milliseconds on a busy host):
the BTF cannot change while the kernel runs, so the first kstat of each boot notes the digest
in a small file named by the boot's id (`boot-ID.json`, trusted like the others, the previous
boot's removed), and later ones of the same boot read it there.
"""

from __future__ import annotations

import os
import stat

from kstat.errors import KstatError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, Final, TypeVar

    Offsets = TypeVar("Offsets")
    # A file's path: a string too (pathlib is slow to import).
    FilePath = str | os.PathLike[str]

CACHE_DIR: Final = "/var/cache/kstat"
# Bumped whenever an offsets class means something new: older files are then not read.
_VERSION: Final = 1
_LARGEST: Final = 64 * 1024
_BOOT_ID: Final = "/proc/sys/kernel/random/boot_id"


def cache_directory() -> Path:
    from pathlib import Path  # noqa: PLC0415 - see the module's docstring

    return Path(_cache_directory())


def _cache_directory() -> str:
    return os.environ.get("KSTAT_CACHE_DIR") or CACHE_DIR


def _cache_file(btf: FilePath) -> str:
    return os.path.join(_cache_directory(), f"kernel-offsets-{_digest(*_btf_key(btf))}.json")


def _btf_key(btf: FilePath) -> tuple[str, int, int, int]:
    """Which BTF a file holds now: its path, inode, size and modification time."""
    status = os.stat(btf)
    return os.fspath(btf), status.st_ino, status.st_size, status.st_mtime_ns


# Each BTF's digest, by `_btf_key`: once per process for a file that has not changed.
_digests: dict[tuple[str, int, int, int], str] = {}


def _digest(btf: str, inode: int, size: int, mtime_ns: int) -> str:
    """The BTF's SHA-256, as this boot's note has it, else worked out (5 MB read and hashed);
    once per process for a file that has not changed: each of kstat's iterators asks."""
    key = (btf, inode, size, mtime_ns)
    if key not in _digests:
        _digests[key] = _noted_digest(*key) or _hashed(btf)
    return _digests[key]


def _noted_digest(btf: str, inode: int, size: int, mtime_ns: int) -> str | None:
    noted = _boot_note().get(_note_key(btf, inode, size, mtime_ns))
    if isinstance(noted, str) and len(noted) == 32 and all(c in "0123456789abcdef" for c in noted):
        return noted
    return None


def _hashed(btf: str) -> str:
    import hashlib  # noqa: PLC0415 - see the module's docstring

    with open(btf, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()[:32]


def _note_key(btf: str, inode: int, size: int, mtime_ns: int) -> str:
    return f"{btf} {inode} {size} {mtime_ns}"


def _boot_note_file() -> str | None:
    """This boot's note of BTF digests, or None where the kernel gives no boot id."""
    try:
        # Bytes, decoded after: a text file would import its codec's module (the launch's path).
        with open(_BOOT_ID, "rb") as file:
            boot_id = file.read(64).decode("ascii").strip()
    except (OSError, ValueError):
        return None
    if not boot_id or not all(c in "0123456789abcdef-" for c in boot_id):
        return None
    return os.path.join(_cache_directory(), f"boot-{boot_id}.json")


def _boot_note() -> dict[str, Any]:
    path = _boot_note_file()
    return {} if path is None else _read_trusted(path)


def _write_boot_note(btf: FilePath) -> None:
    """Notes `btf`'s digest for this boot's later kstats (once a boot), and lets the previous
    boots' notes go. Called where the cache is being written anyway, or was found."""
    path = _boot_note_file()
    key = _note_key(*_btf_key(btf))
    note = _boot_note()
    if path is None or note.get(key) == _digest(*_btf_key(btf)):
        return
    import contextlib  # noqa: PLC0415 - see the module's docstring
    import json  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from kstat._atomic import write_atomically  # noqa: PLC0415

    with contextlib.suppress(OSError, ValueError, KstatError):
        directory = os.path.dirname(path)
        if not _trusted(os.stat(directory, follow_symlinks=False)):
            return
        note = {**note, "version": _VERSION, key: _digest(*_btf_key(btf))}
        write_atomically(Path(path), json.dumps(note, sort_keys=True).encode() + b"\n")
        for name in os.listdir(directory):
            if name.startswith("boot-") and name.endswith(".json") and name != os.path.basename(path):
                os.unlink(os.path.join(directory, name))


def _trusted(status: os.stat_result) -> bool:
    return status.st_uid in (0, os.geteuid()) and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read_trusted(path: str) -> dict[str, Any]:
    """The cache file's sections, or nothing for a file that is missing, untrusted or not JSON."""
    try:
        if not _trusted(os.stat(os.path.dirname(path), follow_symlinks=False)):
            return {}
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    with open(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode) or not _trusted(status) or status.st_size > _LARGEST:
            return {}
        try:
            found = _read_json(file.read(_LARGEST))
        except (OSError, ValueError):
            return {}
    return found if isinstance(found, dict) and found.get("version") == _VERSION else {}


_WHITESPACE: Final = " \t\n\r"  # JSON's


class _Strict:
    """json.loads' settings, for `_json.make_scanner`: no NaN or Infinity, no hooks."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not a number a cache file holds")


def _read_json(data: bytes) -> object:
    """One JSON document, as json.loads reads it, by the C scanner json.loads itself runs:
    importing json would import re (and enum, functools and collections with it) on the
    launch's path. Where the C module is missing (another Python), json.loads."""
    try:
        from _json import make_scanner  # noqa: PLC0415
    except ImportError:
        import json  # noqa: PLC0415

        return json.loads(data)
    text = data.decode()  # UnicodeDecodeError is a ValueError
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        # The C scanner reads only these settings; typeshed asks for a whole JSONDecoder.
        found, end = make_scanner(_Strict())(text, start)  # type: ignore[arg-type]
    except StopIteration:
        raise ValueError("not a JSON document") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError("more than one JSON document")
    return found


def _fields(kind: type[Offsets]) -> dict[str, object]:
    """An offsets class's fields and their annotations (a string under postponed evaluation)."""
    return dict(kind.__annotations__)


def section_name(kind: type[Offsets]) -> str:
    """Where a file keeps `kind`: under its name and its fields, so that two kstat versions
    whose classes differ (a field added) keep each their own section in one file, rather than
    each replacing the other's at every start (as the bench's baseline and change did, each
    start then parsing the BTF and taking its baseline by syscalls)."""
    return f"{kind.__name__}({','.join(sorted(_fields(kind)))})"


def _decode(kind: type[Offsets], found: object) -> Offsets | None:
    """An offsets value from its section, or None for anything but exactly its shape: every
    field there, each an int (bool where the class says so) below 2^32, or null."""
    fields = _fields(kind)
    if not isinstance(found, dict) or set(found) != set(fields):
        return None
    for name, value in found.items():
        flag = fields[name] in (bool, "bool")
        if flag != isinstance(value, bool):
            return None
        if not flag and value is not None and not (isinstance(value, int) and 0 <= value < 2**32):
            return None
    return kind(**found)


def offsets(kind: type[Offsets], parse: Callable[[Path], Offsets], btf: FilePath) -> Offsets:
    """This kernel's `kind` of offsets: from the cache, else `parse(btf)` (then kept for next
    time where kstat may write; a cache it cannot write only costs the parse again)."""
    try:
        path = _cache_file(btf)
    except OSError:
        path = None
    sections = {} if path is None else _read_trusted(path)
    found = _decode(kind, sections.get(section_name(kind)))
    if found is not None:
        _write_boot_note(btf)
        return found
    from pathlib import Path  # noqa: PLC0415 - see the module's docstring

    parsed = parse(Path(btf))  # where there is no BTF, the parse says so in its own words
    if path is None:
        return parsed
    # Imported here: only a first run on this kernel writes (tempfile and secrets are slow to
    # import, and a start that reads the cache needs neither).
    import contextlib  # noqa: PLC0415
    import json  # noqa: PLC0415

    from kstat._atomic import make_directory, write_atomically  # noqa: PLC0415

    with contextlib.suppress(OSError, ValueError, KstatError):
        directory = cache_directory()
        make_directory(directory)
        if _trusted(os.stat(directory, follow_symlinks=False)):
            values = {name: getattr(parsed, name) for name in _fields(kind)}
            sections = {**sections, "version": _VERSION, section_name(kind): values}
            write_atomically(Path(path), json.dumps(sections, sort_keys=True).encode() + b"\n")
            _write_boot_note(btf)
    return parsed


def cached(kind: type[Offsets], btf: FilePath) -> bool:
    """Whether the cache has this kernel's `kind` of offsets (nothing parsed, nothing written)."""
    try:
        return _decode(kind, _read_trusted(_cache_file(btf)).get(section_name(kind))) is not None
    except OSError:
        return False
