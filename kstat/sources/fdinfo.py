"""One number from a /proc fdinfo file. A pass reads one for every program it meets for the first
time (its `memlock`) and the owner walk one for every bpf fd of every process (its `prog_id`),
so this reads raw bytes: Python's text layer doubles the cost of such a small read."""

from __future__ import annotations

import os

# Ample: a program's or a link's fdinfo is a dozen short lines.
_LARGEST_FDINFO = 8192


def fdinfo_number(path: str, key: bytes) -> int | None:
    """The integer after `key:` in the fdinfo file at `path` (`/proc/PID/fdinfo/FD`); None when
    the file cannot be read (the fd was closed meanwhile) or has no such line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # A leading newline makes the first line findable like every other one.
        text = b"\n" + os.read(fd, _LARGEST_FDINFO)
    except OSError:
        return None
    finally:
        os.close(fd)
    label = b"\n" + key + b":"
    start = text.find(label)
    if start < 0:
        return None
    start += len(label)
    end = text.find(b"\n", start)
    try:
        return int(text[start:] if end < 0 else text[start:end])
    except ValueError:
        return None
