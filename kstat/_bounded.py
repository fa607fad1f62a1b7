"""Reading files kstat did not write, with bounds: reports and NDJSON streams handed to
`compare`, `plot`, `history` and `load_report` may come from anywhere (a CI artifact, a PR).

- Only a regular file is read: a FIFO would hang the reader, `/dev/zero` fill its memory.
- At most MAX_INPUT_BYTES of it (256 MiB, some 100,000 programs' report); an NDJSON stream
  read for its report is read from its end, so that only its last line counts.
- Then parsed as JSON a report can hold (kstat.formats.bounded_json).

Each refusal is one line naming the file and the reason, as the error type the caller gives
(ReportFormatError for reports), so the command exits 1 without a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

from kstat._atomic import shown
from kstat.errors import KstatError, OutputError

MAX_INPUT_BYTES: Final = 256 * 1024 * 1024
_LIMIT: Final = f"{MAX_INPUT_BYTES // (1024 * 1024)} MiB"
_CHUNK_BYTES: Final = 1024 * 1024


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path, what: str, refused: type[KstatError], *, whole: bool) -> tuple[int, int]:
    """An fd of the regular file at `path` and its size (at most MAX_INPUT_BYTES if it is to
    be read `whole`). The open never waits (O_NONBLOCK: a FIFO with no writer would block it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket, or a device that is not there
            raise refused(f"{shown(path)} is not {what}: not a regular file") from None
        raise OutputError(f"cannot read {shown(path)}: {error.strerror}") from None
    found = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(found.st_mode):
        problem = f"it is {_kind(found.st_mode)}, not a regular file"
    elif whole and found.st_size > MAX_INPUT_BYTES:
        problem = f"{found.st_size:,} bytes, more than the {_LIMIT} kstat reads"
    if problem is not None:
        os.close(fd)
        raise refused(f"{shown(path)} is not {what}: {problem}")
    return fd, found.st_size


def _decode(data: bytes, path: Path, what: str, refused: type[KstatError]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise refused(f"{shown(path)} is not {what}: not text (UTF-8)") from None


def read_bounded(path: Path, what: str, refused: type[KstatError]) -> str:
    """The whole text of a regular file of at most MAX_INPUT_BYTES."""
    fd, _ = _open_regular(path, what, refused, whole=True)
    try:
        chunks, total = [], 0
        # Read to the end, not to the size fstat gave: a file that grows meanwhile is cut off
        # at the limit all the same.
        while chunk := os.read(fd, _CHUNK_BYTES):
            total += len(chunk)
            if total > MAX_INPUT_BYTES:
                raise refused(f"{shown(path)} is not {what}: more than the {_LIMIT} kstat reads")
            chunks.append(chunk)
    except OSError as error:
        raise OutputError(f"cannot read {shown(path)}: {error.strerror}") from None
    finally:
        os.close(fd)
    return _decode(b"".join(chunks), path, what, refused)


def read_last_line(path: Path, what: str, refused: type[KstatError]) -> str | None:
    """The last line that is not blank of a regular file of any size (an NDJSON stream of a long
    run), read from its end; None when it has none. The line is at most MAX_INPUT_BYTES."""
    fd, end = _open_regular(path, what, refused, whole=False)
    pieces: list[bytes] = []  # the line's, from its end back
    length = 0
    try:
        while end > 0:
            start = max(0, end - _CHUNK_BYTES)
            chunk = os.pread(fd, end - start, start)
            end = start
            if not pieces:
                chunk = chunk.rstrip()  # blank lines (and the final newline) after the last
                if not chunk:
                    continue
            newline = chunk.rfind(b"\n")
            pieces.append(chunk[newline + 1 :])
            length += len(pieces[-1])
            if length > MAX_INPUT_BYTES:
                problem = f"its last line is longer than the {_LIMIT} kstat reads"
                raise refused(f"{shown(path)} is not {what}: {problem}")
            if newline >= 0:
                break
    except OSError as error:
        raise OutputError(f"cannot read {shown(path)}: {error.strerror}") from None
    finally:
        os.close(fd)
    if not pieces:
        return None
    return _decode(b"".join(reversed(pieces)), path, what, refused)
