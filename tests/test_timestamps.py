"""Wall-clock times as kstat writes them (kstat/core/timestamps.py): RFC 3339 in UTC with the
nanoseconds Go's encoder would keep, one at a time or a column at a time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kstat.core.timestamps import format_timestamp, format_timestamps


def test_a_time_is_written_as_go_marshals_it() -> None:
    assert format_timestamp(1_705_314_600_123_000_000) == "2024-01-15T10:30:00.123Z"
    assert format_timestamp(1_705_314_600_000_000_001) == "2024-01-15T10:30:00.000000001Z"
    # On the second: no fraction, nor its dot.
    assert format_timestamp(1_705_314_600_000_000_000) == "2024-01-15T10:30:00Z"
    # Before the epoch's first second, too (a test's times).
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"
    assert format_timestamp(999_999_999) == "1970-01-01T00:00:00.999999999Z"


@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), max_size=50))
def test_a_column_of_times_is_each_written_alone(times: list[int]) -> None:
    assert format_timestamps(times) == [format_timestamp(time) for time in times]


def test_a_column_of_times_on_the_second_keeps_no_dot() -> None:
    times = [1_705_314_600_000_000_000, 1_705_314_600_100_000_000, 1_705_314_601_000_000_007]
    assert format_timestamps(times) == [
        "2024-01-15T10:30:00Z",
        "2024-01-15T10:30:00.1Z",
        "2024-01-15T10:30:01.000000007Z",
    ]
