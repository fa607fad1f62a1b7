"""Text kstat did not choose, in and out: the one rule for reading names from the host, one
escaping function per output medium, and cutting names to a terminal's width.

A process's comm, a cgroup path, a systemd unit, a pod or container name from the kubelet's log
file names, a BTF or kernel program name, a network device name: the host (or another tenant on
it) picked those bytes. They may not be UTF-8 (the kernel cuts a 15-byte comm in the middle of
a character), may hold escape sequences, newlines or 10 kB of anything. So:

- in: `from_host` turns them into text once, where they are read, and never raises: a byte that
  is not UTF-8 becomes U+FFFD (as Go's JSON encoder and bpftool show it). Control characters
  are kept: they are the data, and every medium below carries or escapes them.
- out: each medium escapes for itself, here and nowhere else. JSON and NDJSON need nothing more
  than `json.dumps` (it escapes every control character); a terminal has `for_terminal` (the
  one way a host-provided name reaches one: a control character is shown, never obeyed),
  Markdown `for_markdown`, charts `for_chart`, StatsD `for_statsd_names` and `for_statsd_tag`.
- `shortened` cuts a name to a width in the middle, where names of one agent differ least, so
  that both its start (whose it is) and its end (`_ipv4` or `_ipv6`) stay readable.
"""

from __future__ import annotations

import functools
import operator
import os
import re
import unicodedata
from collections import Counter

# Not `typing.TYPE_CHECKING`: every command imports this module, and `kstat list` imports
# nothing of typing at run time (it costs a start milliseconds).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Final

ELLIPSIS: Final = "…"
# Categories a terminal could be steered by: controls (ESC, CR, newline, the C1 set), format
# characters (bidirectional overrides), line and paragraph separators, lone surrogates.
_UNSHOWABLE: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def from_host(raw: bytes | str) -> str:
    """Host bytes as text, never an exception: UTF-8, each byte that is not part of a valid
    character as U+FFFD.

    A str is accepted too, as `os.listdir`, `os.walk` and `os.readlink` return them (undecodable
    bytes kept as lone surrogates, "surrogateescape"): a path kept that way still opens, but it
    cannot be written as UTF-8, so it passes through here where it becomes a name.
    """
    if isinstance(raw, str):
        if raw.isascii():
            return raw
        raw = raw.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "replace")


def from_host_each(raws: Iterable[bytes]) -> list[str]:
    """`from_host` of each of many byte strings, at C speed (`kstat list` decodes 10,000
    program names)."""
    return list(map(_decoded_from_host, raws))


# from_host's rule for bytes, as one call.
_decoded_from_host: Final = operator.methodcaller("decode", "utf-8", "replace")


def host_path(raw: bytes) -> str:
    """A path read from the host that must still open: decoded as the os module does, every
    byte kept (undecodable ones as lone surrogates). Pass it through `from_host` where it
    becomes a name in a report."""
    return os.fsdecode(raw)


def _escaped(character: str) -> str:
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a surrogate-escaped byte (os strings): the byte itself
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


def for_terminal_each(texts: Sequence[str]) -> list[str]:
    """`for_terminal` of each of many texts, at C speed where they are printable (`kstat list`
    shows 10,000 program names)."""
    if all(map(str.isprintable, texts)):
        return list(texts)
    return list(map(for_terminal, texts))


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


@functools.cache
def _pattern(expression: str) -> re.Pattern[str]:
    """A pattern of the media below, compiled at its first use: compiling them all at import
    would cost milliseconds of every start, `kstat list`'s too, which writes none of them."""
    return re.compile(expression)


# Markdown (GitHub's flavour, where compare's reports are posted): characters that could end a
# table cell (`|`), open code, emphasis, strikethrough or a link, start HTML (a comment would
# hide the rest of the page) or an entity, or escape what follows. Each gets a backslash, which
# Markdown drops when it shows the character (GitHub's tables unescape `\|` the same way). An
# underscore between two letters or digits (`new_only`) opens nothing and is left as it is.
_MARKDOWN_SPECIAL: Final = r"[\\`*\[\]<|~&]|(?<![^\W_])_|_(?![^\W_])"
# What makes a line a heading, a block quote or a list item when it starts one: `# x`, `> x`,
# `- x`, `+ x`, `= x` (under a line, a heading), `1. x`, `1) x`.
_MARKDOWN_BLOCK_START: Final = r"^(\d{1,9}(?=[.)])|(?=[#>+=-]))"


def for_markdown(text: str) -> str:
    """`text` as literal inline Markdown, for a table cell or a line of prose: shown as it is,
    never read as markup. Control characters and line breaks are shown as `for_terminal` shows
    them (so a name cannot add a row or a line), every character Markdown or HTML could read as
    syntax is escaped with a backslash (`|` is `\\|`), and so is what would start a block."""
    escaped = _pattern(_MARKDOWN_SPECIAL).sub(lambda match: "\\" + match.group(), for_terminal(text))
    return _pattern(_MARKDOWN_BLOCK_START).sub(lambda match: match.group() + "\\", escaped, count=1)


def for_chart(text: str) -> str:
    """`text` for a matplotlib label or title: one line, control characters shown as
    `for_terminal` shows them, and each `$` escaped so that a name is never read as mathtext
    (half a formula in a name stops the whole chart from being drawn)."""
    return for_terminal(text).replace("$", r"\$")


# StatsD and Graphite split names on `.` and read `:`, `|`, `@` and `#` as syntax; tags also
# allow `.`, `:` and `/`.
_UNSAFE_IN_STATSD_NAME: Final = r"[^A-Za-z0-9_-]"
_UNSAFE_IN_STATSD_TAG: Final = r"[^A-Za-z0-9_.:/-]"


def for_statsd_tag(text: str) -> str:
    """A tag value (`program:NAME`): what StatsD servers accept, anything else as `_`."""
    return _pattern(_UNSAFE_IN_STATSD_TAG).sub("_", text)


def for_statsd_name(key: str) -> str:
    """A report key as one StatsD name component, alone: anything but letters, digits, `_` and
    `-` as `_` (empty for an empty key). Among others' names, `for_statsd_names` keeps it distinct."""
    return _pattern(_UNSAFE_IN_STATSD_NAME).sub("_", key)


def for_statsd_names(keys: Sequence[str], ids: Sequence[int]) -> list[str]:
    """One StatsD name component per program (its report key, with the id of the same program
    beside it), each a distinct one: anything but letters, digits, `_` and `-` becomes `_`,
    and where that makes two programs' names one (`kpr.col` and `kpr_col`), the one whose key
    changed gets `_<id>` as well (as two programs of one name get `#<id>` in their keys), so
    that the server never adds two programs up."""
    safe = [for_statsd_name(key) or "unnamed" for key in keys]
    claimed = Counter(safe)
    if len(claimed) == len(safe):
        return safe  # the usual case: no collision
    names: list[str] = []
    # Keys that were safe already keep their names; the others yield to them.
    taken = {name for name, key in zip(safe, keys, strict=True) if name == key}
    for name, key, program_id in zip(safe, keys, ids, strict=True):
        if claimed[name] == 1 or name == key:
            names.append(name)
            continue
        candidate = f"{name}_{program_id}"
        while candidate in taken or claimed[candidate]:
            candidate += "_"
        taken.add(candidate)
        names.append(candidate)
    return names
