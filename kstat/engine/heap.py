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


# glibc's mallopt(M_ARENA_MAX, n) (malloc.h).
_M_ARENA_MAX: Final = -8


def one_malloc_arena() -> None:
    """For the command line's process, before its threads start: every thread allocates from
    glibc's main arena. A thread's first allocation otherwise makes it an arena of its own,
    whose pages what the main thread freed cannot serve: at 10,000 programs, the report encoded
    and written on a sink's thread took 2 MB more peak RSS so (MALLOC_ARENA_MAX=1 gives the
    same). kstat's threads allocate little and rarely at once, so one arena's lock costs
    nothing measurable. A libc without the call (or the option) is left as it is."""
    import ctypes  # noqa: PLC0415 - the command's process has it imported by now

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mallopt(_M_ARENA_MAX, 1)
