"""The command line: `kstat [flags]` collects (the Go tool's interface); `kstat SUBCOMMAND`
runs one of `demo`, `list`, `run`, `serve`, `top`, `compare`, `history` and `plot`. Each lives in
`kstat.commands`, with its own arguments; this module only dispatches, and turns errors into
one line and an exit status:

0 success, 1 a runtime failure (privileges, kernel, output, a sink, a file that is not a
report) or a regression found by `compare`, 2 a usage error, 130 interrupted before anything
could be collected; `run` exits with its command's status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final, Protocol, cast

from kstat._logging import configure_logging
from kstat.commands._options import EXIT_FAILURE, EXIT_INTERRUPTED, say, say_error
from kstat.errors import CommandNotRunnable, KstatError, UsageError


class Command(Protocol):
    """A subcommand module: its parser and its run. One whose arguments need more than the
    parser (`run`'s `--`, the filters) has a `parse(arguments) -> (parser, options)` too."""

    def build_parser(self) -> argparse.ArgumentParser: ...

    def run(self, options: argparse.Namespace) -> int: ...


# Subcommand -> module; imported only when chosen, so `kstat list` never loads matplotlib.
COMMANDS: Final = {
    "collect": "kstat.commands.collect",
    "demo": "kstat.commands.demo",
    "list": "kstat.commands.list",
    "run": "kstat.commands.run",
    "serve": "kstat.commands.serve",
    "top": "kstat.commands.top",
    "compare": "kstat.commands.compare",
    "history": "kstat.commands.history",
    "plot": "kstat.commands.plot",
}


def parse_command_line(
    arguments: Sequence[str],
) -> tuple[Command, argparse.ArgumentParser, argparse.Namespace]:
    """The subcommand and its parsed options; a usage error exits 2 (argparse's SystemExit)."""
    words = list(arguments)
    name = words.pop(0) if words and words[0] in COMMANDS else "collect"
    command = cast(Command, importlib.import_module(COMMANDS[name]))
    parse = getattr(command, "parse", None)
    if parse is not None:
        parser, options = parse(words)
    else:
        parser = command.build_parser()
        options = parser.parse_args(words)
    return command, parser, options


def main(argv: Sequence[str] | None = None) -> int:
    command, parser, options = parse_command_line(sys.argv[1:] if argv is None else argv)
    configure_logging(verbose=options.verbose)
    try:
        return command.run(options)
    except UsageError as error:
        parser.error(str(error))
    except CommandNotRunnable as error:
        say_error(str(error))
        return error.exit_status
    except KstatError as error:
        say_error(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        say("kstat: interrupted before the window started")
        return EXIT_INTERRUPTED
