"""JSON as a report can hold it, for readers of reports and streams that may come from anywhere:
no NaN or Infinity, no number of more than 24 characters (2^64 has 20 digits: a
100-million-digit number is refused before Python converts it), no nesting deeper than
MAX_DEPTH (a report is 6 deep). Pure: the text in, the value or one error out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from kstat.errors import KstatError

MAX_DEPTH: Final = 32
# The most characters a number in a report is written with: -18446744073709551616 is 21, and
# a float64 needs at most 24 (`-2.2250738585072014e-308`).
_MAX_NUMBER_CHARACTERS: Final = 24


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
