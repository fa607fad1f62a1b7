"""structlog to stderr: readable on a terminal, JSON lines for machines everywhere else."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog


def configure_logging(*, verbose: bool, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr): debug and up with `verbose`, info and up otherwise."""
    if stream is None:
        # A closed stderr (`2>&-`) leaves Python with none: logs then go nowhere, quietly.
        stream = sys.stderr if sys.stderr is not None else open(os.devnull, "w")  # noqa: SIM115
    renderer: structlog.types.Processor
    if stream.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
