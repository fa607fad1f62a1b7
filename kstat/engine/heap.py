"""The garbage collector, set for a running window: a process's own choice, so the commands'
(`kstat`, `kstat serve`), never a library caller's."""

from __future__ import annotations

import gc
from typing import Final

# Objects allocated between two collections of the youngest generation, once a window runs.
# Each collection walks the young lists of a pass (every program's reading): at 20,000-30,000
# programs and 200 busy, 4-7 collections an interval took 2-9 ms of it (bench.steady_interval);
# a steady window frees about what it allocates, so with this many it goes minutes without one.
WINDOW_COLLECTION_THRESHOLD: Final = 20_000


def settle_heap() -> None:
    """For a process whose window has started (the CLI's, not a library's caller's): what it
    built to stay (every program's reading, facts and names, the summary's sightings) moves out
    of the garbage collector's way (`gc.freeze`), and the youngest generation is collected
    less often. Freed objects are still freed at once (by their counts); only garbage cycles
    among the frozen objects would stay uncollected."""
    gc.freeze()
    threshold, *older = gc.get_threshold()
    gc.set_threshold(max(threshold, WINDOW_COLLECTION_THRESHOLD), *older)


def window_is_over() -> None:
    """For the same process, once its window is read: no more collections. What the end makes
    (the report, a line per program, and its encoding) is freed by reference counts; a
    collection then would only walk it, and at 10,000 programs a full one added a tenth of a
    second to some reports."""
    gc.disable()
