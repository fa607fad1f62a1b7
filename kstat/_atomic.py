"""Files that appear whole or not at all: written beside their target, then renamed over it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from pathlib import Path

from kstat.errors import KstatError, OutputError


def shown(path: Path) -> str:
    """A path as an error line shows it: quoted when it holds a newline or another control
    character, so that the error stays one line whatever the name."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def read_text(path: Path, what: str, not_text: type[KstatError]) -> str:
    """A file's text. OutputError when it cannot be read; `not_text` ("PATH is not WHAT: not
    text") when it holds something other than UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise OutputError(f"cannot read {shown(path)}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise not_text(f"{shown(path)} is not {what}: not text (UTF-8)") from None


def check_writable(path: Path) -> None:
    """Fail now, with a one-line reason, if `write_atomically(path, ...)` could not succeed later.

    Proves it by creating (and removing) a temporary file in the target's directory, which is
    exactly what the real write will need.
    """
    if path.is_dir():
        raise OutputError(f"cannot write {shown(path)}: it is a directory")
    if _is_special(path):
        if not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {shown(path)}: permission denied")
        return
    directory = path.parent
    if not directory.is_dir():
        raise OutputError(f"cannot write {shown(path)}: directory {shown(directory)} does not exist")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=directory)
    except OSError as error:
        if path.exists():
            # The file is there; what fails is making the new one that will replace it.
            raise OutputError(
                f"cannot write {shown(path)}: no new file can be made in {shown(directory)} "
                f"to replace it ({error.strerror})"
            ) from None
        raise OutputError(f"cannot write {shown(path)}: {error.strerror}") from None
    os.close(handle)
    os.unlink(probe)


def is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


def open_fifo_without_waiting(path: Path) -> int | None:
    """An fd to write a FIFO, or None while no reader has it open (opening would block until
    one comes, and nothing, not even a signal's handler, could stop the wait)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:
            return None
        raise OutputError(f"cannot write {shown(path)}: {error.strerror}") from None
    os.set_blocking(fd, True)
    return fd


def write_fd(fd: int, data: bytes, path: Path) -> None:
    """Write all of `data` to an fd (closing it), as a FIFO's reader wants it."""
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
    except OSError as error:
        raise OutputError(f"cannot write {shown(path)}: {error.strerror}") from None


def write_fallback(data: bytes, what: str) -> Path:
    """Somewhere safe for output that could not go where it was asked: a new file in the
    temporary directory (`$TMPDIR`, else /tmp), named by the time and kstat's pid."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = Path(tempfile.gettempdir()) / f"kstat-{what}-{stamp}-{os.getpid()}.json"
    write_atomically(path, data)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never part.

    The temporary file lives in the same directory (a rename is only atomic within a
    filesystem) and is fsynced before the rename, so a crash leaves either version intact.
    """
    if _is_special(path):
        # /dev/stdout, a FIFO, /dev/null: written in place; renaming over them would replace
        # the device or pipe with a plain file.
        try:
            with path.open("wb") as stream:
                stream.write(data)
        except OSError as error:
            raise OutputError(f"cannot write {shown(path)}: {error.strerror}") from None
        return
    directory = path.parent
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise OutputError(f"cannot write {shown(path)}: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates 0600; give the report the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise OutputError(f"cannot write {shown(path)}: {error.strerror}") from None
    directory_handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_handle)
    finally:
        os.close(directory_handle)


def _is_special(path: Path) -> bool:
    """An existing path that is not a regular file (a device, a FIFO, a socket)."""
    return path.exists() and not path.is_file()
