"""One module per subcommand, each owning its arguments and its run; `kstat.cli` dispatches."""

from __future__ import annotations

# Not `typing.TYPE_CHECKING`: `kstat list`'s lean path (kstat.commands._lean_list) imports
# nothing of typing at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# Subcommand -> (module, what it does); imported only when chosen, so `kstat list` never
# loads matplotlib. The usage line, `kstat help`, "did you mean" and the completions read it.
COMMANDS: Final = {
    "collect": ("kstat.commands.collect", "collect one window (the same as no command)"),
    "demo": ("kstat.commands.demo", "load three demo programs, drive them, report"),
    "list": ("kstat.commands.list", "the loaded programs, their owners and attachments"),
    "run": ("kstat.commands.run", "collect for exactly the lifetime of a command"),
    "serve": ("kstat.commands.serve", "collect until stopped; Prometheus by default"),
    "top": ("kstat.commands.top", "a live table of every program's cost, recording"),
    "compare": ("kstat.commands.compare", "reports (or runs of them) side by side, a verdict for CI"),
    "history": ("kstat.commands.history", "a job's reports over time"),
    "plot": ("kstat.commands.plot", "PNG charts of a report or a stream"),
    "completion": ("kstat.commands.completion", "a shell completion script: bash, zsh or fish"),
    "help": ("kstat.cli", "this help, or a command's: kstat help COMMAND"),
}
# Without a command word, kstat collects one window: the Go tool's interface.
DEFAULT_COMMAND: Final = "collect"
