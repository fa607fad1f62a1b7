"""Standard output as a destination: closed streams and vanished readers as clear errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from kstat.errors import OutputClosed, OutputError


def require_stdout() -> None:
    """Fail before the window when there is no standard output to write to (`>&-`)."""
    if sys.stdout is None:
        raise OutputError("standard output is closed; write to a file instead (-o FILE, ndjson:PATH)")


def write_stdout(data: bytes | Iterable[bytes], *, what: str = "standard output") -> None:
    """Write and flush `data` (bytes, or its pieces in order); OutputClosed when the reader has
    gone (`| head`)."""
    if sys.stdout is None:
        raise OutputError("standard output is closed; write to a file instead (-o FILE, ndjson:PATH)")
    try:
        for piece in (data,) if isinstance(data, bytes) else data:
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosed(f"{what}: the reader closed the stream") from None
    except OSError as error:
        raise OutputError(f"cannot write {what}: {error.strerror}") from None


def silence_stdout() -> None:
    """Point fd 1 at /dev/null once its reader has gone.

    Python flushes stdout again at exit; without this, that flush raises a second
    BrokenPipeError after kstat has already ended cleanly.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
