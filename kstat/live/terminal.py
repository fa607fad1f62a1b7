"""The terminal under `kstat top`: keys in cbreak mode, the alternate screen, and putting both
back however kstat ends (q, Ctrl-C, SIGTERM, an error).

Keys are read on a worker thread with a short `select` timeout rather than through a
non-blocking file descriptor: the terminal's file description is shared with the shell, and
one left non-blocking would break it after kstat exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Final, TextIO

# Escape sequences of the keys `TopState.press` knows by name.
_SEQUENCES: Final = {
    "\x1b[A": "up",
    "\x1b[B": "down",
    "\x1b[C": "right",
    "\x1b[D": "left",
    "\x1bOA": "up",
    "\x1bOB": "down",
    "\x1bOC": "right",
    "\x1bOD": "left",
    "\x1b[5~": "pageup",
    "\x1b[6~": "pagedown",
    "\x1b[H": "home",
    "\x1b[F": "end",
    "\x1b[1~": "home",
    "\x1b[4~": "end",
    "\x1bOH": "home",
    "\x1bOF": "end",
}
_SINGLE: Final = {"\r": "enter", "\n": "enter", "\x7f": "backspace", "\x08": "backspace", "\x1b": "escape"}


def decode(data: str) -> list[str]:
    """Keys from what one read returned: characters, or names for the special ones."""
    keys = []
    index = 0
    while index < len(data):
        if data[index] == "\x1b":
            for sequence, name in _SEQUENCES.items():
                if data.startswith(sequence, index):
                    keys.append(name)
                    index += len(sequence)
                    break
            else:
                keys.append("escape")
                index += 1
                # An unknown sequence: skip the rest of it rather than read it as keys.
                if index < len(data) and data[index] in "[O":
                    index += 1
                    while index < len(data) and not data[index].isalpha() and data[index] != "~":
                        index += 1
                    index += 1
            continue
        character = data[index]
        keys.append(_SINGLE.get(character, character))
        index += 1
    return keys


def read_keys(fd: int, timeout_s: float = 0.1) -> list[str]:
    """The keys pressed within `timeout_s` (none: an empty list). Blocking: for a thread."""
    ready, _, _ = select.select([fd], [], [], timeout_s)
    if not ready:
        return []
    data = os.read(fd, 64)
    if not data:
        raise EOFError("the terminal closed")
    return decode(data.decode(errors="replace"))


def open_terminal() -> TextIO | None:
    """Where the screen is drawn: the controlling terminal itself, so that standard output can
    still take the report (`kstat top > report.json`); None without one, or without keys."""
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    try:
        return open("/dev/tty", "w", encoding="utf-8")  # the caller closes it when the screen goes
    except OSError:
        return None


@contextlib.contextmanager
def keys_mode(fd: int) -> Iterator[None]:
    """cbreak (keys at once, no echo; Ctrl-C still a signal), then the settings as they were."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
