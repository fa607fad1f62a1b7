"""`--sink SPEC` to a Sink: specs are `NAME` or `NAME:ARGUMENT`, names come from entry points.

Every sink is an entry point in the `kstat.sinks` group whose object is a factory
`(argument: str | None) -> Sink`; kstat registers its own there as a third-party package does.
A factory raises UsageError for a malformed argument, and OutputError (or another KstatError)
for a well-formed one that cannot work, such as an unwritable path.

kstat's own are also known here (`BUILT_IN_SINKS`, which a test holds to pyproject.toml's
table), so that a window with only those never scans the installed packages' metadata:
`importlib.metadata` and what it imports (email, zipfile, csv) are 3 MB and 25 ms of every start.
A name kstat has is kstat's.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from kstat.core.events import Sink
from kstat.errors import UsageError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP: Final = "kstat.sinks"
_NAME: Final = re.compile(r"[a-z][a-z0-9_+.-]*")

# kstat's own sinks, as pyproject.toml registers them: name -> `module:factory`.
BUILT_IN_SINKS: Final = {
    "stdout": "kstat.sinks.stdout:from_spec",
    "json": "kstat.sinks.json_file:from_spec",
    "ndjson": "kstat.sinks.ndjson:from_spec",
    "statsd": "kstat.sinks.statsd:from_spec",
    "prometheus": "kstat.sinks.prometheus:from_spec",
    "otlp": "kstat.sinks.otlp:from_spec",
    "otlp+http": "kstat.sinks.otlp:from_http_spec",
    "otlp+https": "kstat.sinks.otlp:from_https_spec",
}

SinkFactory = Callable[[str | None], Sink]


def available_sinks() -> dict[str, str]:
    """Every sink by name, as `module:factory`: kstat's own, then every other registered one
    (the first registration of a name wins)."""
    found = dict(BUILT_IN_SINKS)
    for entry_point in _entry_points():
        found.setdefault(entry_point.name, entry_point.value)
    return dict(sorted(found.items()))


def _entry_points() -> tuple[EntryPoint, ...]:
    from importlib.metadata import entry_points  # noqa: PLC0415 - see the module's docstring

    return tuple(entry_points(group=ENTRY_POINT_GROUP))


def _factory(value: str) -> SinkFactory:
    """An entry point's object (`module:attribute`), loaded as importlib.metadata loads it."""
    module, _, attribute = value.partition(":")
    found: object = importlib.import_module(module.strip())
    for part in attribute.strip().split("."):
        found = getattr(found, part)
    return cast(SinkFactory, found)


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

    def listing() -> str:
        return "available sinks: " + ", ".join(available_sinks())

    try:
        name, argument = split_spec(spec)
    except UsageError as error:
        raise UsageError(f"{error}; {listing()}") from None
    value = BUILT_IN_SINKS.get(name)
    if value is None:
        value = available_sinks().get(name)
    if value is None:
        raise UsageError(f"unknown sink {name!r} in {spec!r}; {listing()}")
    factory = _factory(value)
    try:
        sink = factory(argument)
    except UsageError as error:
        raise UsageError(f"malformed sink {spec!r}: {error}; {listing()}") from None
    if not isinstance(sink, Sink):
        raise UsageError(f"sink {name!r} from {value} does not implement kstat's Sink protocol")
    return sink
