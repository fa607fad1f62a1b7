"""`--sink SPEC` to a Sink: specs are `NAME` or `NAME:ARGUMENT`, names come from entry points.

Built-in and third-party sinks are found the same way: each is an entry point in the
`kstat.sinks` group whose object is a factory `(argument: str | None) -> Sink`. A factory raises
UsageError for a malformed argument, and OutputError (or another KstatError) for a well-formed
one that cannot work, such as an unwritable path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Final, cast

from kstat.core.events import Sink
from kstat.errors import UsageError

ENTRY_POINT_GROUP: Final = "kstat.sinks"
_NAME: Final = re.compile(r"[a-z][a-z0-9_+.-]*")

SinkFactory = Callable[[str | None], Sink]


def available_sinks() -> dict[str, EntryPoint]:
    """Every registered sink by name (the first registration of a name wins)."""
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, entry_point)
    return dict(sorted(found.items()))


def split_spec(spec: str) -> tuple[str, str | None]:
    """`json:/tmp/r.json` -> ("json", "/tmp/r.json"); `stdout` -> ("stdout", None)."""
    name, colon, argument = spec.partition(":")
    if not _NAME.fullmatch(name):
        raise UsageError(f"malformed sink {spec!r}: expected NAME or NAME:ARGUMENT")
    return name, (argument if colon else None)


# `?name=value&name=value` at the end of an argument; values hold no `?`, `&` or `=`.
_OPTIONS: Final = re.compile(r"(?P<where>.*)\?(?P<options>[a-z_]+=[^?&=]*(?:&[a-z_]+=[^?&=]*)*)")


def split_options(argument: str) -> tuple[str, dict[str, str]]:
    """`/var/log/k.ndjson?layout=records` -> ("/var/log/k.ndjson", {"layout": "records"}).

    Only a trailing `?name=value[&...]` is options: a path may hold a `?` of its own."""
    found = _OPTIONS.fullmatch(argument)
    if found is None:
        return argument, {}
    options = dict(option.split("=", 1) for option in found["options"].split("&"))
    return found["where"], options


def make_sink(spec: str) -> Sink:
    """The sink a spec names, made now (so its own checks run before the window)."""
    registered = available_sinks()
    listing = "available sinks: " + ", ".join(registered) if registered else "no sinks are installed"
    try:
        name, argument = split_spec(spec)
    except UsageError as error:
        raise UsageError(f"{error}; {listing}") from None
    if name not in registered:
        raise UsageError(f"unknown sink {name!r} in {spec!r}; {listing}")
    factory = cast(SinkFactory, registered[name].load())
    try:
        sink = factory(argument)
    except UsageError as error:
        raise UsageError(f"malformed sink {spec!r}: {error}; {listing}") from None
    if not isinstance(sink, Sink):
        raise UsageError(
            f"sink {name!r} from {registered[name].value} does not implement kstat's Sink protocol"
        )
    return sink
