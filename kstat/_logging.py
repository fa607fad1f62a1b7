"""structlog to stderr: readable on a terminal, JSON lines for machines everywhere else.

structlog itself is imported on the first line logged at a level that is shown (it pulls in
asyncio: a tenth of a second of a start), so a command that logs nothing (`kstat list`, most
runs of `compare`) never imports it.
"""

from __future__ import annotations

import os
import sys

from kstat._deferred import deferred
from kstat.text import for_terminal

# Not `typing.TYPE_CHECKING`: the sources log through this module, and `kstat list` imports
# nothing of typing at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Final, TextIO


def _structlog_without_rich() -> ModuleType:
    """structlog, imported without letting it reach for rich: its development renderer imports
    rich's traceback printer, and that pygments' lexers (5 MB and 0.1-0.4 s a start, for
    exceptions kstat turns into one line anyway). kstat top imports rich itself, later. Its
    `import asyncio` gets a stand-in that imports asyncio when structlog first uses it."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog  # noqa: PLC0415

        return structlog
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        # Its asyncio is used only by its async logging methods, which kstat never calls: 1.5 MB
        # a window would otherwise hold.
        with deferred("asyncio"):
            import structlog  # noqa: PLC0415
    finally:
        del sys.modules["rich"]
    return structlog


if TYPE_CHECKING:
    import structlog

# The levels as the logging module numbers them (it is not imported for four numbers).
_DEBUG, _INFO, _WARNING, _ERROR = 10, 20, 30, 40
# The level of each of LibraryLogger's methods.
_LEVELS: Final = {"debug": _DEBUG, "info": _INFO, "warning": _WARNING, "error": _ERROR}


class _Settings:
    """What `configure_logging` asked for, applied to structlog when it is first needed."""

    def __init__(self, level: int, stream: TextIO) -> None:
        self.level = level
        self.stream = stream
        self.applied = False


_settings: list[_Settings] = []


def configure_logging(*, verbose: bool, stream: TextIO | None = None, quiet: bool = False) -> None:
    """Log to `stream` (stderr): debug and up with `verbose`, info and up otherwise, warnings
    and up when `quiet`. structlog is configured so when a line is first logged at one of
    those levels (or now, when it is imported already)."""
    if stream is None:
        # A closed stderr (`2>&-`) leaves Python with none: logs then go nowhere, quietly.
        stream = sys.stderr if sys.stderr is not None else open(os.devnull, "w")  # noqa: SIM115
    level = _DEBUG if verbose else _WARNING if quiet else _INFO
    _settings[:] = [_Settings(level, stream)]
    if "structlog" in sys.modules:
        _apply(_settings[0])


def _apply(settings: _Settings) -> None:
    module: Any = _structlog_without_rich()
    stream = settings.stream
    renderers: list[structlog.types.Processor]
    if stream.isatty():
        renderers = [_shown_on_terminal, module.dev.ConsoleRenderer(colors=True)]
    else:
        renderers = [module.processors.JSONRenderer()]  # JSON escapes control characters
    module.configure(
        processors=[
            module.contextvars.merge_contextvars,
            module.processors.add_log_level,
            module.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=module.make_filtering_bound_logger(settings.level),
        logger_factory=module.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    settings.applied = True


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

    def _logger(self, method: str) -> Any:
        """The logger for a line at `method`'s level, or None when it would not be shown (the
        configured level, or a library's warnings and up): structlog left unimported."""
        level = _LEVELS[method]
        if _settings:
            settings = _settings[0]
            if level < settings.level:
                return None
            if not settings.applied:
                _apply(settings)
        elif "structlog" not in sys.modules and level < _WARNING:
            return None
        module: Any = _structlog_without_rich()
        if module.is_configured():
            return module.get_logger(self._name)
        return _unconfigured()

    def debug(self, event: str, **values: Any) -> None:
        logger = self._logger("debug")
        if logger is not None:
            logger.debug(event, **values)

    def info(self, event: str, **values: Any) -> None:
        logger = self._logger("info")
        if logger is not None:
            logger.info(event, **values)

    def warning(self, event: str, **values: Any) -> None:
        logger = self._logger("warning")
        if logger is not None:
            logger.warning(event, **values)

    def error(self, event: str, **values: Any) -> None:
        logger = self._logger("error")
        if logger is not None:
            logger.error(event, **values)


class _StderrLogger:
    """Prints to whatever stderr is at the moment (a test may have replaced it)."""

    def msg(self, message: str) -> None:
        if sys.stderr is not None:
            print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = error = critical = msg


_unconfigured_logger: list[Any] = []


def _unconfigured() -> Any:
    """Where a library's warnings go while nobody configured structlog."""
    if not _unconfigured_logger:
        module: Any = _structlog_without_rich()
        _unconfigured_logger.append(
            module.wrap_logger(
                _StderrLogger(),
                wrapper_class=module.make_filtering_bound_logger(_WARNING),
                processors=[
                    module.processors.add_log_level,
                    _shown_on_terminal,
                    module.dev.ConsoleRenderer(colors=False),
                ],
            )
        )
    return _unconfigured_logger[0]


def get_logger(name: str) -> LibraryLogger:
    return LibraryLogger(name)
