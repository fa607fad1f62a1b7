"""The garbage collector as the commands set it for a running window."""

from __future__ import annotations

import gc

from kstat.engine.heap import WINDOW_COLLECTION_THRESHOLD, settle_heap


def test_a_running_window_freezes_what_it_keeps_and_collects_the_young_less_often() -> None:
    thresholds = gc.get_threshold()
    kept = [[index] for index in range(1_000)]  # a window's lasting state, in small
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold()[0] == max(thresholds[0], WINDOW_COLLECTION_THRESHOLD)
        assert gc.get_threshold()[1:] == thresholds[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
