"""Names the host chose, shown to people: escaped for a terminal, and cut to a width.

`for_terminal` is the one way a host-provided name (a program's, a process's comm, a pod's)
reaches a terminal: a control character in it is shown, never obeyed. `shortened` cuts a name
to a width in the middle, where names of one agent differ least, so that both its start (whose
it is) and its end (`_ipv4` or `_ipv6`) stay readable.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Final

ELLIPSIS: Final = "…"
# Categories a terminal could be steered by: controls (ESC, CR, newline, the C1 set), format
# characters (bidirectional overrides), line and paragraph separators, lone surrogates.
_UNSHOWABLE: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escaped(character: str) -> str:
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def for_terminal(text: str) -> str:
    """`text` with every character that could move the cursor, clear the screen or reorder
    what follows shown visibly (`\\x1b`, `\\u202e`); printable text unchanged."""
    if text.isprintable():
        return text
    return "".join(
        _escaped(character) if unicodedata.category(character) in _UNSHOWABLE else character
        for character in text
    )


def cells(text: str) -> int:
    """How many terminal cells `text` takes (East Asian wide characters take two)."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(character) in "WF" else 1 for character in text)


def shortened(text: str, width: int, *, end_share: float = 1 / 3) -> str:
    """`text` in at most `width` cells, cut in the middle with one `…`: `end_share` of the room
    for its end (a third by default), the rest for its start."""
    if cells(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    room = width - 1
    tail_room = int(room * end_share)
    head, used = "", 0
    for character in text:
        size = cells(character)
        if used + size > room - tail_room:
            break
        head, used = head + character, used + size
    tail, tail_used = "", 0
    for character in reversed(text):
        size = cells(character)
        if tail_used + size > room - used:
            break
        tail, tail_used = character + tail, tail_used + size
    return head + ELLIPSIS + tail


def common_affixes(texts: Sequence[str]) -> tuple[int, int]:
    """How many characters all of `texts` share at their start, and at their end (never
    overlapping in the shortest): where a set of one agent's names differs least."""
    if not texts:
        return 0, 0
    prefix = _shared_start(texts)
    suffix = _shared_start([text[::-1] for text in texts])
    shortest = min(len(text) for text in texts)
    return prefix, min(suffix, shortest - prefix)


def _shared_start(texts: Sequence[str]) -> int:
    """How many characters every one of `texts` starts with (characters, not path parts)."""
    first = min(texts)
    last = max(texts)
    for index, character in enumerate(first):
        if index >= len(last) or last[index] != character:
            return index
    return len(first)


def shortened_among(text: str, width: int, prefix: int, suffix: int) -> str:
    """`text` in at most `width` cells, cut with one `…` inside the start (`prefix` characters)
    or the end (`suffix`) it shares with the names beside it, the longer first, so that what
    tells it from them stays whole (`kux_flow…rse_udp_1999`, `kstat_demo_medium_socket…lter`).
    Where neither shared part has the room, as `shortened` cuts."""
    if cells(text) <= width:
        return text
    if not text.isascii() or width < 8:
        return shortened(text, width, end_share=0.5)
    cut = len(text) + 1 - width  # characters the ellipsis replaces
    for start, length in sorted(((0, prefix), (len(text) - suffix, suffix)), key=lambda part: -part[1]):
        if length >= cut + 2:
            kept = length - cut
            head = (kept * 2 + 2) // 3  # more of the shared part's start than of its end
            return text[: start + head] + ELLIPSIS + text[start + head + cut :]
    return shortened(text, width, end_share=0.5)
