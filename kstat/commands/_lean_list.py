"""`kstat list`, `kstat list --json` and `kstat list --pretty`, on the lean path the console
script takes before it imports the CLI (`kstat._entry`): no argparse, no filters, no model, no
attrs or typing at run time. The programs are read by kstat's iterators and decoded straight
into the columns that are written (`kstat.commands._listed`).

Any other word (a filter, `-v`, `--host-root`, `--help`, a typo) is the command's parser's
(`kstat.commands.list`), and so is every listing this path cannot print: standard output
closed, or a kernel where kstat's iterators cannot be built (the command reads by syscalls and
/proc then, and says in its own words what went wrong). Both paths write the same bytes for
the same programs (`kstat.formats.listing`; a test compares them).
"""

from __future__ import annotations

import contextlib
import os
import sys

from kstat._logging import configure_logging
from kstat._stdio import print_stdout, say, say_error
from kstat.errors import KstatError
from kstat.formats.listing import listing_json, listing_table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Final, NoReturn

    from kstat.formats.listing import ListedColumns

# The words this path takes: the output's form (repeated, as the parser allows).
_FORMS: Final = frozenset({"--json", "--pretty"})
# With standard output closed: kstat list has no other place to write (it takes no -o).
ONLY_STDOUT: Final = "kstat list writes only there: redirect it to a file (> FILE)"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1


def run(arguments: Sequence[str]) -> None:
    """Print the listing `kstat list ARGUMENTS` asks for and end the process (exit status 0);
    return only where this path does not print it (the command then does, through its parser)."""
    if not _FORMS.issuperset(arguments) or sys.stdout is None:
        return
    # The command's settings: its output is the point, so warnings only (kstat.cli).
    configure_logging(verbose=False, quiet=True)
    # Imported here: the iterators' builders are a listing's, not the words' check's.
    from kstat.commands._listed import Listed  # noqa: PLC0415

    try:
        listed = Listed()
    except (OSError, KstatError):
        # Nothing written yet: the command reads again, by syscalls where kstat's iterators
        # cannot be built, and says what it cannot do in its own words.
        return
    columns = listed.columns()
    try:
        write_listing(columns, json="--json" in arguments, pretty="--pretty" in arguments, filtered=False)
    except KstatError as error:
        say_error(str(error))
        _end(EXIT_FAILURE)
    _end(EXIT_OK)


def _end(status: int) -> NoReturn:
    """End the process now, its output written: what is left of it is the listing's objects to
    free one by one (at 10,000 programs, a tenth of the listing's time), which the exit does at
    once. kstat registers no exit handler; the streams are flushed here."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(status)


def write_listing(columns: ListedColumns, *, json: bool, pretty: bool, filtered: bool) -> None:
    """The listing on standard output: JSON with `json` or `pretty` (indented, both written a
    piece at a time), else the table (and, when it has no program, why not on stderr)."""
    if json or pretty:
        for piece in listing_json(columns, pretty=pretty):
            print_stdout(piece, instead=ONLY_STDOUT)
        return
    print_stdout(listing_table(columns), instead=ONLY_STDOUT)
    if not columns:
        # On stderr, as bpftool says nothing: the table's header alone would look cut off.
        say("kstat: no eBPF program is loaded" + (" that the filter selects" if filtered else ""))
