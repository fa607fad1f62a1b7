"""Reading files kstat did not write, with bounds: reports and NDJSON streams handed to
`compare`, `plot`, `history` and `load_report` may come from anywhere (a CI artifact, a PR).

- Only a regular file is read: a FIFO would hang the reader, `/dev/zero` fill its memory.
- At most MAX_INPUT_BYTES of it (256 MiB, some 100,000 programs' report); an NDJSON stream
  read for its report is read from its end, so that only its last line counts.
- JSON as a report can hold it: no NaN or Infinity, no number of more than 24 characters
  (2^64 has 20 digits: a 100-million-digit number is refused before Python converts it), no
  nesting deeper than MAX_DEPTH (a report is 6 deep).

Each refusal is one line naming the file and the reason, as the error type the caller gives
(ReportFormatError for reports), so the command exits 1 without a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from kstat._atomic import shown
from kstat.errors import KstatError, OutputError

MAX_INPUT_BYTES: Final = 256 * 1024 * 1024
_LIMIT: Final = f"{MAX_INPUT_BYTES // (1024 * 1024)} MiB"
MAX_DEPTH: Final = 32
# The most characters a number in a report is written with: -18446744073709551616 is 21, and
# a float64 needs at most 24 (`-2.2250738585072014e-308`).
_MAX_NUMBER_CHARACTERS: Final = 24
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


class _Refused(Exception):
    """Raised inside json.loads's hooks; turned into the caller's error outside them."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number a report holds")


def _integer(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARACTERS:
        raise _Refused(f"a number of {len(text):,} digits is not one a report holds")
    return int(text)


def _float(text: str) -> float:
    if len(text) > _MAX_NUMBER_CHARACTERS:
        raise _Refused(f"a number written with {len(text):,} characters is not one a report holds")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"{text} is beyond any number a report holds")
    return value


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (without recursion: it may be deep)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        pending += [(child, depth + 1) for child in children]
    return deepest


def parse_json(text: str, refused: type[KstatError]) -> Any:
    """JSON as a report can hold it; `refused` ("not JSON: ...", "...") otherwise."""
    try:
        data = json.loads(text, parse_constant=_constant, parse_int=_integer, parse_float=_float)
    except json.JSONDecodeError as error:
        raise refused(f"not JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    except _Refused as error:
        raise refused(str(error)) from None
    except RecursionError:
        raise refused(f"nested deeper than the {MAX_DEPTH} levels a report can have") from None
    if _depth(data) > MAX_DEPTH:
        raise refused(f"nested deeper than the {MAX_DEPTH} levels a report can have")
    return data
