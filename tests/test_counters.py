"""Counters arithmetic: a total over many programs, counter by counter."""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from kstat.core.counters import ZERO, Counters, added, summed

_PER_CPU = st.one_of(st.none(), st.lists(st.integers(0, 1_000), max_size=4).map(tuple))
_COUNTERS = st.builds(
    Counters,
    st.integers(0, 10**12),
    st.integers(0, 10**9),
    st.one_of(st.none(), st.integers(0, 99)),
    _PER_CPU,
    _PER_CPU,
)


def test_a_total_is_each_counter_summed_none_where_one_lacks_it() -> None:
    with_vectors = [Counters(100, 2, 1, (60, 40), (1, 1)), Counters(50, 1, None, (0, 0, 50), (0, 0, 1))]
    # Vectors summed CPU by CPU, to the longer one's length.
    assert summed(with_vectors) == Counters(150, 3, None, (60, 40, 50), (1, 1, 1))
    # A program read without per-CPU counters: the total has none either.
    assert summed([*with_vectors, Counters(7, 1, 3)]) == Counters(157, 4, None)
    assert summed([]) == ZERO


@given(st.lists(_COUNTERS, max_size=6), st.lists(_COUNTERS, max_size=6))
def test_a_total_in_two_parts_is_the_total_of_the_whole(
    first: list[Counters], second: list[Counters]
) -> None:
    assert summed(second, summed(first)) == summed(first + second)


@given(st.lists(_COUNTERS, max_size=8))
def test_a_total_is_what_adding_each_in_turn_gives(many: list[Counters]) -> None:
    # `added`, the pairwise sum every other total is held to, folded from ZERO.
    assert summed(many) == reduce(added, many, ZERO)
