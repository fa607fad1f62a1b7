"""Files kstat writes: whole or not at all, and safely, though kstat runs as root among other
users' files. The one place that opens a file for writing (sinks, `plot -o`, `history -o`).

What another user may have planted where kstat writes (a world-writable directory, `/tmp`):

- a symbolic link: followed only when kstat's own user or root owns it (`/dev/stdout` is
  root's); anyone else's is refused, whatever `fs.protected_symlinks` says, as the kernel does
  in sticky directories;
- a device: only FIFOs, terminals and the harmless memory devices (`/dev/null`, `/dev/zero`,
  `/dev/full`) are written to; a disk, `/dev/mem`, a socket or a directory is refused;
- a hard link to another file: refused for appends (a rename replaces only the name);
- a swap of the temporary file: it is created with O_EXCL|O_NOFOLLOW under a random name, its
  mode set on the open fd (never by path), and the rename (by the directory's fd) is checked:
  the name must still be the file written, before and after.

Modes are 0644 at most, whatever the umask (less where the umask says so); the fallback file,
made when a report cannot go where it was asked, is 0600 in a new 0700 directory of a random
name (mkdtemp), so that nobody can plant anything at its path beforehand.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final, TypeAlias

from kstat._writev import write_pieces
from kstat.errors import OutputError

# The most any file kstat makes may allow, and what the fallback (a report someone else's
# command could not take) allows.
FILE_MODE: Final = 0o644
PRIVATE_MODE: Final = 0o600
# Character devices that take writes and do nothing else with them: (major, minor) of
# /dev/null, /dev/zero and /dev/full.
_HARMLESS_DEVICES: Final = frozenset({(1, 3), (1, 5), (1, 7)})
# Terminals: virtual consoles and serial lines (4), /dev/tty, console and ptmx (5), pseudo
# terminals (136-143).
_TERMINAL_MAJORS: Final = frozenset({4, 5, *range(136, 144)})
_NEW_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMPORARY_NAME_ATTEMPTS: Final = 100
# What a write takes: the bytes, or the pieces of them as an encoder makes them (a report of
# 10,000 programs is 12 MB: streamed, it is never held whole).
Data: TypeAlias = bytes | Iterable[bytes]
# Pieces are gathered up to this much before they are written: a few syscalls, a bounded list.
_WRITE_BUFFER_BYTES: Final = 1 << 18


def shown(path: Path | str) -> str:
    """A path as an error line shows it: quoted when it holds a newline or another control
    character, so that the error stays one line whatever the name."""
    text = str(path)
    return text if text.isprintable() else repr(text)


# --- what is at the path ---------------------------------------------------------------------


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _refused(path: Path, reason: str, verb: str = "write") -> OutputError:
    return OutputError(f"cannot {verb} {shown(path)}: {reason}")


def _trusted_link(link: os.stat_result) -> bool:
    """A link kstat may follow: its own user's or root's, not one another user planted."""
    return link.st_uid in (0, os.geteuid())


def _stream_kind(status: os.stat_result) -> str | None:
    """ "fifo", "terminal" or "device" for what kstat writes in place; None for anything else."""
    mode = status.st_mode
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        major, minor = os.major(status.st_rdev), os.minor(status.st_rdev)
        if major in _TERMINAL_MAJORS:
            return "terminal"
        if (major, minor) in _HARMLESS_DEVICES:
            return "device"
    return None


def _what(status: os.stat_result) -> str:
    mode = status.st_mode
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISFIFO, "a FIFO"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class _Target:
    """What is at a path kstat is asked to write: nothing yet, a regular file, or a stream
    (FIFO, terminal, /dev/null...) to write in place. Raises OutputError for what kstat must
    not write: another user's symbolic link, a disk, a directory, a socket."""

    def __init__(self, path: Path, verb: str = "write") -> None:
        self.path = path
        self.verb = verb
        # Whether the path's last component is a link kstat trusts (so opens may follow it).
        self.follow = False
        self.stream: str | None = None
        self.exists = False
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as error:
            raise _refused(path, error.strerror or str(error), verb) from None
        if stat.S_ISLNK(found.st_mode):
            if not _trusted_link(found):
                raise _refused(
                    path,
                    f"it is a symbolic link owned by uid {found.st_uid}, neither kstat's user nor root: "
                    "not followed (name the file itself)",
                    verb,
                )
            self.follow = True
            try:
                found = os.stat(path)
            except FileNotFoundError:
                return  # a dangling link of kstat's own: replaced by the new file
            except OSError as error:
                raise _refused(path, error.strerror or str(error), verb) from None
        self.exists = True
        if stat.S_ISREG(found.st_mode):
            return
        self.stream = _stream_kind(found)
        if self.stream is None:
            raise _refused(path, f"it is {_what(found)}; kstat writes files, FIFOs and terminals only", verb)

    @property
    def flags(self) -> int:
        return os.O_CLOEXEC | os.O_NOCTTY | (0 if self.follow else os.O_NOFOLLOW)

    def open_stream(self) -> int | None:
        """An fd to write the stream in place; None for a FIFO no reader has open yet (opening
        it would block until one comes, and nothing, not even a signal, could stop the wait)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | self.flags)
        except OSError as error:
            if error.errno == errno.ENXIO:
                return None
            if error.errno == errno.ELOOP:
                raise _refused(self.path, "it became a symbolic link; not followed", self.verb) from None
            raise _refused(self.path, error.strerror or str(error), self.verb) from None
        # What was opened, not what was looked at: it may have been swapped in between.
        if _stream_kind(os.fstat(fd)) is None:
            found = os.fstat(fd)
            os.close(fd)
            raise _refused(self.path, f"it became {_what(found)}", self.verb)
        os.set_blocking(fd, True)
        return fd


def _same_file(one: os.stat_result, other: os.stat_result) -> bool:
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def _is_ours(name: str, directory_fd: int, written: os.stat_result) -> bool:
    """Whether `name` (in the directory, not followed) is the file kstat wrote."""
    try:
        return _same_file(os.stat(name, dir_fd=directory_fd, follow_symlinks=False), written)
    except OSError:
        return False  # removed meanwhile


def _write_bytes(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_all(fd: int, data: Data) -> None:
    if isinstance(data, bytes | bytearray):
        _write_bytes(fd, data)
        return
    # The pieces as they come, written together by writev(2) once they add up: never copied
    # into one buffer (which, grown past its size, was 1.2 MB of a 10,000-program report's peak).
    pending: list[bytes | memoryview] = []
    size = 0
    for piece in data:
        pending.append(piece)
        size += len(piece)
        if size >= _WRITE_BUFFER_BYTES:
            write_pieces(fd, pending)
            pending, size = [], 0
    write_pieces(fd, pending)


# --- the writes --------------------------------------------------------------------------------


def check_writable(path: Path) -> None:
    """Fail now, with a one-line reason, if `write_atomically(path, ...)` (or an append) could
    not succeed later.

    Proves it by creating (and removing) a temporary file in the target's directory, which is
    exactly what the real write will need.
    """
    target = _Target(path)
    if target.stream is not None:
        if not os.access(path, os.W_OK):
            raise _refused(path, "permission denied")
        return
    directory = path.parent
    if not directory.is_dir():
        raise _refused(path, f"directory {shown(directory)} does not exist")
    try:
        with _directory(path) as directory_fd:
            fd, name = _new_temporary(path.name, directory_fd, ".probe")
            os.close(fd)
            os.unlink(name, dir_fd=directory_fd)
    except OSError as error:
        if target.exists:
            # The file is there; what fails is making the new one that will replace it.
            raise _refused(
                path, f"no new file can be made in {shown(directory)} to replace it ({error.strerror})"
            ) from None
        raise _refused(path, error.strerror or str(error)) from None


def is_fifo(path: Path) -> bool:
    """Whether the path is a FIFO (itself, or through a link kstat trusts)."""
    try:
        return _Target(path).stream == "fifo"
    except OutputError:
        return False


def open_fifo_without_waiting(path: Path) -> int | None:
    """An fd to write a FIFO, or None while no reader has it open."""
    return _Target(path).open_stream()


def write_fd(fd: int, data: Data, path: Path) -> None:
    """Write all of `data` to an fd (closing it), as a FIFO's reader wants it."""
    try:
        with os.fdopen(fd, "wb") as stream:
            for piece in (data,) if isinstance(data, bytes | bytearray) else data:
                stream.write(piece)
    except OSError as error:
        raise _refused(path, error.strerror or str(error)) from None


def write_atomically(path: Path, data: Data, *, mode: int = FILE_MODE) -> None:
    """Write `data` (bytes, or its pieces in order) to `path` so that readers see the old file
    or the whole new one, never part.

    The temporary file lives in the same directory (a rename is only atomic within a
    filesystem) and is fsynced before the rename, so a crash leaves either version intact. A
    stream (a FIFO with a reader, a terminal, /dev/null) is written in place: renaming over it
    would replace it with a plain file.
    """
    target = _Target(path)
    if target.stream is not None:
        fd = target.open_stream()
        if fd is None:
            raise _refused(path, "it is a FIFO that no one is reading")
        write_fd(fd, data, path)
        return
    try:
        with _directory(path) as directory_fd:
            _replace(path, data, mode & ~_umask(), directory_fd)
    except OSError as error:
        raise _refused(path, error.strerror or str(error)) from None


@contextlib.contextmanager
def _directory(path: Path) -> Iterator[int]:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _new_temporary(name: str, directory_fd: int, suffix: str) -> tuple[int, str]:
    """A new file beside `name`, made by kstat alone: O_EXCL|O_NOFOLLOW under a random name
    (a link or a file planted at the name is never opened), mode 0600 until it is whole."""
    stem = name[:180]  # with the random part and the suffix, within NAME_MAX
    for _ in range(_TEMPORARY_NAME_ATTEMPTS):
        temporary = f".{stem}.{os.urandom(8).hex()}{suffix}"
        try:
            return os.open(temporary, _NEW_FILE_FLAGS, PRIVATE_MODE, dir_fd=directory_fd), temporary
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no temporary name was free")


def _replace(path: Path, data: Data, mode: int, directory_fd: int) -> None:
    fd, temporary = _new_temporary(path.name, directory_fd, ".tmp")
    renamed = False
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)  # on the fd: a path could lead elsewhere by now
        os.fsync(fd)
        written = os.fstat(fd)
        # In a directory others may write to, the name could have been swapped for their link
        # or file: rename only what was written, and check that it is what now has the name.
        if not _is_ours(temporary, directory_fd, written):
            raise _refused(path, "its temporary file was replaced by someone else")
        try:
            os.rename(temporary, path.name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
        except FileNotFoundError:
            raise _refused(path, "its temporary file was replaced by someone else") from None
        renamed = True
        if not _is_ours(path.name, directory_fd, written):
            # Someone's link or file, swapped in just before the rename, which then put it at
            # the name: kstat takes away what it put there (unlinking follows nothing).
            with contextlib.suppress(OSError):
                os.unlink(path.name, dir_fd=directory_fd)
            raise _refused(path, "it was replaced by someone else as kstat wrote it")
        os.fsync(directory_fd)
    except BaseException:
        if not renamed and _is_ours(temporary, directory_fd, os.fstat(fd)):
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory_fd)
        raise
    finally:
        os.close(fd)


def write_fallback(data: Data, what: str) -> Path:
    """Somewhere safe for output that could not go where it was asked: a new 0600 file in a
    new directory of kstat's own (0700, a random name, made by mkdtemp in `$TMPDIR`, else
    /tmp), so that nothing can have been planted at its path."""
    import tempfile  # noqa: PLC0415 - only here: it imports shutil, with bz2 and lzma (0.6 MB)

    try:
        directory = Path(tempfile.mkdtemp(prefix=f"kstat-{what}-"))
    except OSError as error:
        raise OutputError(
            f"cannot make a directory in {shown(tempfile.gettempdir())}: {error.strerror}"
        ) from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{what}-{stamp}-{os.getpid()}.json"
    try:
        fd = os.open(path, _NEW_FILE_FLAGS, PRIVATE_MODE)
        try:
            os.fchmod(fd, PRIVATE_MODE)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise _refused(path, error.strerror or str(error)) from None
    return path


def open_for_append(path: Path, *, verb: str = "write") -> BinaryIO:
    """`path` opened to append (created 0644 at most if missing), or a stream to write in
    place; refused as `_Target` refuses, and when the file has other hard links (appending
    would write into whatever file they name). A FIFO no one reads is refused, not waited for."""
    target = _Target(path, verb)
    try:
        if target.stream is not None:
            fd = target.open_stream()
            if fd is None:
                raise OutputError(f"cannot {verb} {shown(path)}: it is a FIFO that no one is reading")
            return os.fdopen(fd, "ab", buffering=0)
        # Read and write: whether the file ends in a whole line is read through the same fd.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | target.flags, FILE_MODE)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OutputError(
                f"cannot {verb} {shown(path)}: it became a symbolic link; not followed"
            ) from None
        raise OutputError(f"cannot {verb} {shown(path)}: {error.strerror}") from None
    opened = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(opened.st_mode) and _stream_kind(opened) is None:
        problem = f"it became {_what(opened)}"
    elif stat.S_ISREG(opened.st_mode) and opened.st_nlink > 1:
        problem = f"it has {opened.st_nlink - 1} other hard link(s): appending would write another file"
    if problem is not None:
        os.close(fd)
        raise OutputError(f"cannot {verb} {shown(path)}: {problem}")
    return os.fdopen(fd, "ab", buffering=0)


def make_directory(path: Path) -> None:
    """A directory for kstat's files (`plot -o DIR`), made if missing (0755 at most): refused
    when it is another user's symbolic link, or not a directory."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        try:
            path.mkdir(parents=True, mode=0o755)
        except FileExistsError:
            pass  # made meanwhile: looked at below
        except OSError as error:
            raise OutputError(f"cannot write into {shown(path)}: {error.strerror}") from None
        found = os.lstat(path)
    except OSError as error:
        raise OutputError(f"cannot write into {shown(path)}: {error.strerror}") from None
    if stat.S_ISLNK(found.st_mode):
        if not _trusted_link(found):
            raise OutputError(
                f"cannot write into {shown(path)}: it is a symbolic link owned by uid {found.st_uid}, "
                "neither kstat's user nor root: not followed"
            )
        found = os.stat(path)
    if not stat.S_ISDIR(found.st_mode):
        raise OutputError(f"cannot write into {shown(path)}: it is not a directory")
