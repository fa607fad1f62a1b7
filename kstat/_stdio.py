"""Standard output as a destination: closed streams and vanished readers as clear errors; and
the one-line messages the commands say on stderr. No argparse, attrs or typing at run time:
`kstat list`'s lean path writes through here."""

from __future__ import annotations

import os
import sys

from kstat.errors import OutputClosed, OutputError
from kstat.text import for_terminal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


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


def print_stdout(text: str, *, instead: str) -> None:
    """A command's output, as text; a reader that went away (`| head`) ends it quietly.
    `instead` says what to do when there is no standard output, as true for the command as it
    can be. OutputError when it cannot be written (a full disk it was sent to)."""
    if sys.stdout is None:
        raise OutputError(f"standard output is closed; {instead}")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    except OSError as error:
        # What is left in the stream's buffer would fail again at the exit's flush, as a
        # second error after kstat's own line.
        silence_stdout()
        raise OutputError(f"cannot write standard output: {error.strerror}") from None


def say(line: str) -> None:
    """A line on stderr, if there is a stderr (a closed one leaves only the exit status)."""
    if sys.stderr is not None:
        print(for_terminal(line), file=sys.stderr)


def say_error(message: str) -> None:
    say(f"kstat: error: {message}")
