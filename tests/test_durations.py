from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstat.durations import MAX_DURATION_NS, format_duration_ns, parse_duration_ns
from kstat.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        ("500ms", 500_000_000),
        ("30s", 30_000_000_000),
        ("5m", 300_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("2h45m30.25s", 9_930_250_000_000),
        ("10us", 10_000),
        ("10µs", 10_000),
        ("7ns", 7),
        ("0", 0),
        ("+3s", 3_000_000_000),
    ],
)
def test_parses_go_durations(text: str, expected_ns: int) -> None:
    assert parse_duration_ns(text) == expected_ns


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("5", "missing unit"),
        ("-5s", "negative"),
        ("5 s", "invalid"),
        ("5x", "invalid"),
        ("s", "invalid"),
        ("1h-1m", "invalid"),
        ("99999999999h", "too long"),
    ],
)
def test_rejects_malformed_durations(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        parse_duration_ns(text)


@pytest.mark.parametrize(
    ("duration_ns", "expected"),
    [(0, "0s"), (1_500_000, "1.5ms"), (90_000_000_000, "1m30s"), (3_600_000_000_000, "1h0m0s"), (7, "7ns")],
)
def test_formats_like_go(duration_ns: int, expected: str) -> None:
    assert format_duration_ns(duration_ns) == expected


@given(st.integers(min_value=0, max_value=MAX_DURATION_NS))
def test_format_then_parse_is_exact(duration_ns: int) -> None:
    assert parse_duration_ns(format_duration_ns(duration_ns)) == duration_ns
