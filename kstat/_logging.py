"""structlog to stderr: readable on a terminal, JSON lines for machines everywhere else."""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TextIO

from kstat.text import for_terminal


class _ImportedWhenUsed(ModuleType):
    """Stands in for a module in one importer's namespace: the real one is imported at its
    first use (structlog's asyncio, used only by its async logging methods, which kstat never
    calls: 1.5 MB of asyncio a window would otherwise hold)."""

    def __getattr__(self, name: str) -> Any:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(self.__name__), name)


def _structlog_without_rich() -> ModuleType:
    """structlog, imported without letting it reach for rich: its development renderer imports
    rich's traceback printer, and that pygments' lexers (5 MB and 0.1-0.4 s a start, for
    exceptions kstat turns into one line anyway). kstat top imports rich itself, later. Its
    `import asyncio` gets a stand-in that imports asyncio when structlog first uses it."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog  # noqa: PLC0415

        return structlog
    sys.modules["rich"] = None  # type: ignore[assignment]
    stand_in = None
    if "asyncio" not in sys.modules:
        stand_in = sys.modules["asyncio"] = _ImportedWhenUsed("asyncio")
    try:
        import structlog  # noqa: PLC0415
    finally:
        del sys.modules["rich"]
        if stand_in is not None and sys.modules.get("asyncio") is stand_in:
            del sys.modules["asyncio"]
    return structlog


if TYPE_CHECKING:
    import structlog
else:
    structlog = _structlog_without_rich()


def configure_logging(*, verbose: bool, stream: TextIO | None = None, quiet: bool = False) -> None:
    """Log to `stream` (stderr): debug and up with `verbose`, info and up otherwise, warnings
    and up when `quiet`."""
    if stream is None:
        # A closed stderr (`2>&-`) leaves Python with none: logs then go nowhere, quietly.
        stream = sys.stderr if sys.stderr is not None else open(os.devnull, "w")  # noqa: SIM115
    renderers: list[structlog.types.Processor]
    if stream.isatty():
        renderers = [_shown_on_terminal, structlog.dev.ConsoleRenderer(colors=True)]
    else:
        renderers = [structlog.processors.JSONRenderer()]  # JSON escapes control characters
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def _shown_on_terminal(
    _logger: Any, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """A log line's text values (a path, a program or pod name) as a terminal may show them:
    their control characters spelt out, so that a name cannot move, retitle or clear the
    screen. Other values are shown by repr, which escapes them already."""
    return {key: for_terminal(value) if isinstance(value, str) else value for key, value in event.items()}


class LibraryLogger:
    """What kstat's modules log through: structlog's logger once the application has configured
    structlog (the CLI does, and so may a host program); until then only warnings and errors,
    to stderr. A library says nothing else unasked, and never on stdout."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _logger(self) -> Any:
        if structlog.is_configured():
            return structlog.get_logger(self._name)
        return _UNCONFIGURED

    def debug(self, event: str, **values: Any) -> None:
        self._logger().debug(event, **values)

    def info(self, event: str, **values: Any) -> None:
        self._logger().info(event, **values)

    def warning(self, event: str, **values: Any) -> None:
        self._logger().warning(event, **values)

    def error(self, event: str, **values: Any) -> None:
        self._logger().error(event, **values)


class _StderrLogger:
    """Prints to whatever stderr is at the moment (a test may have replaced it)."""

    def msg(self, message: str) -> None:
        if sys.stderr is not None:
            print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = error = critical = msg


_UNCONFIGURED: Final = structlog.wrap_logger(
    _StderrLogger(),
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    processors=[
        structlog.processors.add_log_level,
        _shown_on_terminal,
        structlog.dev.ConsoleRenderer(colors=False),
    ],
)


def get_logger(name: str) -> LibraryLogger:
    return LibraryLogger(name)
