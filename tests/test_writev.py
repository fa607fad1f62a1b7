"""kstat._writev: pieces written whole and in order through a real pipe, which takes part of a
writev(2) whenever its buffer fills, in more pieces than one writev(2) takes."""

from __future__ import annotations

import os
import threading

from kstat._writev import MOST_PER_CALL, write_pieces


def test_every_piece_arrives_whole_and_in_order_through_partial_writes() -> None:
    pieces: list[bytes | memoryview] = [
        bytes([index % 251]) * (1 + index % 997) for index in range(3 * MOST_PER_CALL)
    ]
    expected = b"".join(pieces)
    read_end, write_end = os.pipe()
    received = bytearray()

    def read_all() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    try:
        write_pieces(write_end, pieces)
    finally:
        os.close(write_end)
        reader.join()
        os.close(read_end)
    # Far more than a pipe's buffer (64 KiB): writev(2) took part of them, more than once.
    assert len(expected) > 16 * 65536
    assert bytes(received) == expected
