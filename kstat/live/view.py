"""`kstat top`'s screen as a sink: one more consumer of the window's events, plus the keys.

It never holds the window up: like any sink, when it is still drawing it gets the intervals it
missed merged into the next one. Quitting asks the window to end, and the terminal is given back
(alternate screen left, keys mode undone) before the window's report is written anywhere.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import trio
from rich.console import Console
from rich.live import Live

from kstat.core.events import Event, IntervalEnded, WindowEnded, WindowStarted
from kstat.live.screen import render, visible_columns
from kstat.live.state import TopState
from kstat.live.terminal import keys_mode, read_keys

# Fields of the state that are the user's, carried over when a paused screen resumes.
_SETTINGS = ("sort_key", "reverse", "filter_text", "typing", "selected", "screen", "quit", "visible_columns")


class TopView:
    def __init__(
        self, on_quit: Callable[[], None], *, console: Console | None = None, input_fd: int = 0
    ) -> None:
        self.state = TopState()
        # What is drawn: the state itself, or a copy frozen when the screen was paused.
        self.shown = self.state
        self._on_quit = on_quit
        self._console = console or Console()
        self._input_fd = input_fd

    async def consume(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        with keys_mode(self._input_fd), Live(console=self._console, screen=True, auto_refresh=False) as live:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_keys, live)
                async for event in events:
                    if isinstance(event, WindowStarted):
                        self.state.apply_start(event)
                    elif isinstance(event, IntervalEnded):
                        self.state.apply_interval(event)
                    elif isinstance(event, WindowEnded):
                        break
                    self._draw(live)
                nursery.cancel_scope.cancel()
        # The rest of the events (none after WindowEnded) are the channel's to close.
        async for _ in events:
            pass

    async def _read_keys(self, live: Live) -> None:
        while True:
            try:
                keys = await trio.to_thread.run_sync(read_keys, self._input_fd, abandon_on_cancel=True)
            except EOFError:
                self._on_quit()
                return
            for key in keys:
                self._press(key)
            if keys:
                self._draw(live)

    def _press(self, key: str) -> None:
        was_paused = self.shown.paused
        self.shown.press(key)
        if self.shown.paused and not was_paused:
            # Frozen as it is now; the collection goes on in `state`.
            self.shown = copy.deepcopy(self.state)
            self.shown.paused = True
        elif was_paused and not self.shown.paused:
            for name in _SETTINGS:
                setattr(self.state, name, getattr(self.shown, name))
            self.state.paused = False
            self.shown = self.state
        if self.shown.quit:
            self._on_quit()

    def _draw(self, live: Live) -> None:
        try:
            # The terminal's own size, now (it may have been resized): not $COLUMNS, which
            # rich would prefer and which a parent process may have set for itself.
            width, height = os.get_terminal_size(self._console.file.fileno())
            self._console.size = (width, height)
        except (OSError, ValueError):
            width, height = self._console.size
        # The digit keys sort by the columns this width shows.
        self.state.visible_columns = self.shown.visible_columns = visible_columns(width)
        live.update(render(self.shown, width, height), refresh=True)
