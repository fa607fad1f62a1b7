"""Durations at the edges: parsed from and formatted to Go's notation (500ms, 30s, 5m, 1h30m).

Inside kstat every duration is an int of nanoseconds.
"""

from __future__ import annotations

import re
from typing import Final

from kstat.errors import UsageError

_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN, as Go accepts
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_TERM: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
# Go's time.Duration is an int64 of nanoseconds; anything longer overflows there.
MAX_DURATION_NS: Final = 2**63 - 1


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration ("1h30m", "500ms", "1.5s", "0") into nanoseconds.

    Raises UsageError with a one-line reason. Negative durations are rejected: nothing in kstat
    can last less than nothing.
    """
    original = text
    if text != text.strip():
        # Go's flag package refuses " 5s" too; a stray space is more likely a mistake.
        raise UsageError(f"invalid duration {original!r}: spaces around it")
    if text.startswith("+"):
        text = text[1:]
    if text.startswith("-"):
        raise UsageError(f"duration {original!r} is negative")
    if text == "0":
        return 0
    if not text:
        raise UsageError("empty duration")
    total_ns = 0
    position = 0
    for match in _TERM.finditer(text):
        if match.start() != position:
            break
        number, unit = match.groups()
        whole, _, fraction = number.partition(".")
        scale = _UNIT_NS[unit]
        term_ns = int(whole or "0") * scale
        if fraction:
            term_ns += int(fraction) * scale // 10 ** len(fraction)
        total_ns += term_ns
        position = match.end()
    if position != len(text) or position == 0:
        if re.fullmatch(r"\d+(\.\d*)?", text):
            raise UsageError(f"missing unit in duration {original!r} (for example {text}s)")
        raise UsageError(f"invalid duration {original!r} (examples: 500ms, 30s, 5m, 1h30m)")
    if total_ns > MAX_DURATION_NS:
        raise UsageError(f"duration {original!r} is too long")
    return total_ns


def format_duration_ns(duration_ns: int) -> str:
    """Nanoseconds in Go's notation, shortest exact form: 90 s -> "1m30s", 1.5 ms -> "1.5ms"."""
    if duration_ns == 0:
        return "0s"
    sign = "-" if duration_ns < 0 else ""
    remaining = abs(duration_ns)
    if remaining < 1_000_000_000:
        for unit, scale in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if remaining >= scale:
                return sign + _decimal(remaining, scale) + unit
    hours, remaining = divmod(remaining, _UNIT_NS["h"])
    minutes, remaining = divmod(remaining, _UNIT_NS["m"])
    text = ""
    if hours:
        text += f"{hours}h"
    if hours or minutes:
        text += f"{minutes}m"
    return sign + text + _decimal(remaining, _UNIT_NS["s"]) + "s"


def _decimal(value: int, scale: int) -> str:
    whole, fraction = divmod(value, scale)
    if not fraction:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")
