"""The bench's placing of a tool's counter reads from time-stamped sends (bench/traffic.py)."""

from __future__ import annotations

import pytest

from bench.traffic import Located, TrafficError, baseline_read, final_read, sent_between

# Sends every 100 ns from 1,000 to 1,900.
SENT_NS = [1_000 + 100 * index for index in range(10)]


def test_a_baseline_that_counted_the_last_three_lies_before_the_third_from_last() -> None:
    found = baseline_read(SENT_NS, 3)
    assert found == Located(1_600, 1_700)
    assert (found.at_ns, found.uncertainty_ns) == (1_650, 50)


def test_a_final_read_that_counted_the_first_four_lies_after_the_fourth() -> None:
    assert final_read(SENT_NS, 4) == Located(1_300, 1_400)


@pytest.mark.parametrize(
    ("place", "counted", "complaint"),
    [
        (baseline_read, 0, "its baseline came after them all"),
        (baseline_read, 10, "the read came before the traffic"),
        (final_read, 0, "the final read came before them"),
        (final_read, 10, "it stopped too early"),
    ],
)
def test_traffic_that_does_not_straddle_the_read_cannot_place_it(
    place: object, counted: int, complaint: str
) -> None:
    assert callable(place)
    with pytest.raises(TrafficError, match=complaint):
        place(SENT_NS, counted)


def test_sends_between_two_times_count_the_start_not_the_end() -> None:
    assert sent_between(SENT_NS, 1_100, 1_400) == 3
    assert sent_between(SENT_NS, 0, 10_000) == 10
    assert sent_between(SENT_NS, 1_450, 1_460) == 0
