"""Whole lines appended to a file (or written to standard output): the NDJSON transport.

A file is opened for appending as log files are, never through a link another user planted,
into a disk or another file's hard link (`kstat._atomic.open_for_append`); a file whose last
line was cut short is ended with a newline first, so two records are never glued. Each write is
one `write` of whole lines (O_APPEND keeps concurrent writers' lines whole) and, if it cannot be
completed (a full disk), the file is cut back to where it was: no reader, and no later run
appending, meets half a line. `reopen()` follows a rotation.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from kstat._atomic import check_writable, open_for_append, shown
from kstat._logging import get_logger
from kstat._stdio import require_stdout, write_stdout
from kstat.errors import OutputClosed, OutputError

log = get_logger(__name__)


class LineStream:
    """Appends to `path`, or writes to standard output when `path` is None; `what` names it in
    errors about standard output."""

    def __init__(self, path: Path | None, *, what: str = "standard output") -> None:
        self.path, self.what = path, what
        self._stream: BinaryIO | None = None
        if path is None:
            require_stdout()
            return
        check_writable(path)
        self._stream = open_for_append(path)
        try:
            _terminate_a_partial_line(self._stream, path)
        except OSError as error:
            self._stream.close()
            raise OutputError(f"cannot write {shown(path)}: {error.strerror}") from None

    def reopen(self) -> None:
        """After a rotation: the old name now holds what was written; a new file takes the rest."""
        if self.path is None or self._stream is None:
            return
        # What is at the name now is whatever the rotation (or someone else) put there: it is
        # opened as carefully as the first time.
        stream = open_for_append(self.path, verb="reopen")
        self._stream.close()
        self._stream = stream
        log.info("reopened", path=str(self.path))

    def write(self, data: bytes) -> None:
        """Whole lines, in one write; OutputClosed when the reader went, OutputError otherwise."""
        self.write_pieces((data,))

    def write_pieces(self, pieces: Iterable[bytes]) -> None:
        """Whole lines given in pieces (a line of 10 MB need not be held whole): written in
        turn, and on a failure the file is cut back to where these lines began, as `write`."""
        if self._stream is None:
            for piece in pieces:
                write_stdout(piece, what=self.what)
            return
        stream = self._stream
        whole_lines_end = os.fstat(stream.fileno()).st_size if stream.seekable() else None
        try:
            for piece in pieces:
                # The loop only matters for a pipe or FIFO that takes part of it.
                view = memoryview(piece)
                while view:
                    view = view[stream.write(view) or 0 :]
        except OSError as error:
            if whole_lines_end is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(stream.fileno(), whole_lines_end)
            if error.errno == errno.EPIPE:
                raise OutputClosed("the reader closed the stream") from None
            # The failure is reported under the sink's name: no need to say it twice.
            raise OutputError(f"cannot write: {error.strerror}") from None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _terminate_a_partial_line(stream: BinaryIO, path: Path) -> None:
    if not stream.seekable():
        return
    size = os.fstat(stream.fileno()).st_size
    if size == 0:
        return
    # Through the fd kstat appends to: the path could lead elsewhere by now.
    if os.pread(stream.fileno(), 1, size - 1) == b"\n":
        return
    stream.write(b"\n")
    log.warning("the file ended in a partial line; terminated it before appending", path=str(path))
