"""The command line: `kstat [flags]` collects (the Go tool's interface); `kstat SUBCOMMAND`
runs one of COMMANDS below. Each lives in `kstat.commands`, with its own arguments; this module
only dispatches (a mistyped command gets a "did you mean"), and turns errors into one line and
an exit status:

0 success, 1 a runtime failure (privileges, kernel, output, a sink, a file that is not a
report) or a regression found by `compare`, 2 a usage error, 130 interrupted before anything
could be collected; `run` exits with its command's status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol, cast

from kstat._deferred import deferred, libraries_found_without_ldconfig
from kstat._logging import configure_logging
from kstat._stdio import say, say_error
from kstat.commands import COMMANDS, DEFAULT_COMMAND
from kstat.commands._options import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from kstat.errors import CommandNotRunnable, KstatError, UsageError


class Command(Protocol):
    """A subcommand module: its parser and its run. One whose arguments need more than the
    parser (`run`'s `--`, the filters) has a `parse(arguments) -> (parser, options)` too."""

    def build_parser(self) -> argparse.ArgumentParser: ...

    def run(self, options: argparse.Namespace) -> int: ...


def command_module(name: str = DEFAULT_COMMAND) -> Command:
    module, _ = COMMANDS[name]
    # trio imports ssl and hmac (for its TLS streams and DTLS cookies, which no command uses)
    # and idna (for unicode host names): OpenSSL's libraries and idna's tables, 8 MB of every
    # window's memory, loaded only if something uses them. And it looks for libpthread at its
    # import, which ctypes does by running ldconfig.
    with deferred("ssl", "hmac", "idna"), libraries_found_without_ldconfig():
        return cast(Command, importlib.import_module(module))


def _unknown_command(parser: argparse.ArgumentParser, word: str) -> NoReturn:
    import difflib  # noqa: PLC0415 - for a mistyped command only

    close = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (commands: {', '.join(COMMANDS)})"
    parser.error(f"unknown command {word!r}{hint}")


def parse_command_line(
    arguments: Sequence[str],
) -> tuple[Command, argparse.ArgumentParser, argparse.Namespace]:
    """The subcommand and its parsed options; a usage error exits 2 (argparse's SystemExit)."""
    words = list(arguments)
    name = DEFAULT_COMMAND
    if words and not words[0].startswith("-"):
        if words[0] not in COMMANDS:
            _unknown_command(command_module().build_parser(), words[0])
        name = words.pop(0)
    if name == "help":
        return _help(words)
    command = command_module(name)
    parse = getattr(command, "parse", None)
    if parse is not None:
        parser, options = parse(words)
    else:
        parser = command.build_parser()
        options = parser.parse_args(words)
    return command, parser, options


def _help(words: list[str]) -> NoReturn:
    """`kstat help [COMMAND]`: the help `kstat [COMMAND] --help` prints, exit 0."""
    top = command_module().build_parser()
    if len(words) > 1:
        top.error("kstat help takes one command at most: kstat help COMMAND")
    if words and words[0] not in COMMANDS:
        _unknown_command(top, words[0])
    chosen = top if not words or words[0] == "help" else command_module(words[0]).build_parser()
    chosen.print_help()
    sys.exit(EXIT_OK)


def full_parser() -> argparse.ArgumentParser:
    """One parser holding every command's as a subcommand: what the shell completions and the
    manual page are generated from (kstat itself dispatches before parsing, see above)."""
    parser = command_module().build_parser()
    parser.epilog = None  # its list of commands: the subcommands say it here
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        if name == DEFAULT_COMMAND:
            continue
        if name == "help":
            helped = commands.add_parser(name, help=summary, description=summary)
            helped.add_argument("topic", nargs="?", choices=[*COMMANDS], metavar="COMMAND")
            continue
        built = command_module(name).build_parser()
        commands.add_parser(
            name,
            parents=[built],
            prog=built.prog,
            add_help=False,
            help=summary,
            description=built.description,
            usage=built.usage,
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    command, parser, options = parse_command_line(sys.argv[1:] if argv is None else argv)
    # A command that prints what it found (a table, a comparison) logs warnings only, unless
    # asked for more: its output is the point, not how kstat read the kernel.
    quiet = getattr(command, "PRINTS_ITS_RESULT", False) and not options.verbose
    configure_logging(verbose=options.verbose, quiet=quiet)
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
