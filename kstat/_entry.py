"""The console scripts' entry point, kept free of imports that take time.

Until kstat's own signal handling is running, Ctrl-C or SIGTERM must still end it with one
clear line and no traceback, even in the middle of importing trio; so the handlers go in
before any import. Once a window runs, kstat's own handlers take over (and put these back).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: see below
if TYPE_CHECKING:
    from signal import SIGINT, SIGTERM
    from signal import signal as set_handler
    from types import FrameType
else:
    # Not signal, which imports enum for its names (with functools and collections): all that
    # is imported before the baseline read delays it (BENCHMARKS.md, launch to the baseline
    # read). _signal is what signal wraps (it has no stubs of its own, hence the names above).
    from _signal import SIGINT, SIGTERM
    from _signal import signal as set_handler

_SWITCH_INTERVAL_S = 0.001
_EARLY_SIGNAL_NAMES: dict[int, str] = {SIGINT: "SIGINT", SIGTERM: "SIGTERM"}


def _interrupted_early(signal_number: int, frame: FrameType | None) -> None:
    # Nothing has been switched on or written yet: leaving at once leaves nothing behind.
    name = _EARLY_SIGNAL_NAMES.get(signal_number, f"signal {signal_number}")
    os.write(2, f"kstat: {name} before the window started; nothing was collected\n".encode())
    os._exit(128 + signal_number)


def main() -> None:
    set_handler(SIGINT, _interrupted_early)
    set_handler(SIGTERM, _interrupted_early)
    # Before the CLI is even imported: the window's baseline (`kstat._baseline`), so that what a
    # load test does right after launching kstat is inside the window.
    from kstat import _baseline  # noqa: PLC0415 - only after the handler is in place

    if _baseline.collects(sys.argv[1:]):
        _baseline.take()
        # The counter clock's thread waits for the interpreter's lock whenever it wakes: up to
        # a switch interval behind another thread's Python (5 ms by default, and more than once
        # when several are runnable). A shorter one keeps its reads on time (bench/busy_host.py);
        # a command line's process is kstat's own to tune, a library caller's is not.
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        from kstat.engine.heap import one_malloc_arena  # noqa: PLC0415

        one_malloc_arena()
    elif sys.argv[1:2] == ["list"]:
        # `kstat list` without a filter prints (and ends) before the CLI is imported, by a path
        # that imports only what it reads and writes with (kstat.commands._lean_list).
        from kstat.commands import _lean_list  # noqa: PLC0415

        _lean_list.run(sys.argv[2:])
    from kstat.cli import main as cli_main  # noqa: PLC0415

    status = cli_main()
    _baseline.discard()
    sys.exit(status)
