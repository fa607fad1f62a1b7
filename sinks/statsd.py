"""`statsd://HOST:PORT?prefix=P&tags=dogstatsd&transport=tcp&mtu=N`: metrics per interval.

Per program and interval, the metrics the catalogue marks for export: its counters as StatsD
counters (`run_count`, `runtime_ns`, `recursion_misses`) and its rates and ratios as gauges
(`avg_runtime_ns`, `estimated_cpu_percent`, `events_per_sec`); the same under `total`. Without
tags a metric is `PREFIX.PROGRAM.METRIC`, PROGRAM being the report key made safe for StatsD and
Graphite (and distinct: where two programs' keys become one name, as `kpr.col` and `kpr_col`
do, the one whose key changed gets `_<id>` too); with `tags=dogstatsd` it is
`PREFIX.program.METRIC|#program:NAME,id:ID,type:TYPE`.

UDP (the default) batches lines into datagrams of at most `mtu` bytes (default 1432: an
Ethernet frame less IP/UDP headers); TCP sends newline-terminated lines on one connection. A
server that is down, refuses or cannot be resolved costs a warning at most every 30 s (with
how many sends failed meanwhile) and never stops the collection.

The sink is the StatsD format (`kstat.sink.StatsdIntervalLines`, from `kstat.formats.statsd`)
over the UDP/TCP transport (`kstat.sink.LineSender`).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qs, urlsplit

import trio
from attrs import frozen

from kstat import sink

DEFAULT_PORT: Final = 8125
DEFAULT_PREFIX: Final = "kstat"
DEFAULT_MTU: Final = 1432
_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


@frozen
class StatsdSettings:
    host: str
    port: int = DEFAULT_PORT
    prefix: str = DEFAULT_PREFIX
    dogstatsd_tags: bool = False
    transport: str = "udp"
    mtu: int = DEFAULT_MTU


def parse_statsd_url(url: str) -> StatsdSettings:
    """Settings from `statsd://HOST[:PORT][?prefix=P&tags=dogstatsd&transport=udp|tcp&mtu=N]`."""
    try:
        parts = urlsplit(url)
    except ValueError as error:  # "Invalid IPv6 URL" and the like
        raise sink.UsageError(f"bad statsd URL {url!r}: {error}") from None
    if parts.scheme != "statsd" or not parts.netloc:
        raise sink.UsageError("expected statsd://HOST:PORT[?prefix=P&tags=dogstatsd&transport=tcp&mtu=N]")
    try:
        given_port = parts.port
    except ValueError:
        raise sink.UsageError(f"bad port in {url!r}") from None
    if given_port == 0:
        # Sending to port 0 is meaningless; it is not "the default" either.
        raise sink.UsageError(f"bad port in {url!r}: 0 is no port a server listens on")
    port = given_port or DEFAULT_PORT
    if not parts.hostname:
        raise sink.UsageError(f"no host in {url!r}")
    if parts.path not in ("", "/"):
        raise sink.UsageError(f"unexpected path {parts.path!r} in {url!r}")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(query) - {"prefix", "tags", "transport", "mtu"}
    if unknown:
        raise sink.UsageError(
            f"unknown statsd option(s) {', '.join(sorted(unknown))}; known: prefix, tags, transport, mtu"
        )

    def single(name: str, default: str) -> str:
        values = query.get(name, [default])
        if len(values) != 1:
            raise sink.UsageError(f"statsd option {name!r} given more than once")
        return values[0]

    prefix = single("prefix", DEFAULT_PREFIX)
    if not _PREFIX.fullmatch(prefix):
        raise sink.UsageError(
            f"statsd prefix {prefix!r} must be dot-separated words of letters, digits, _ and -"
        )
    tags = single("tags", "none")
    if tags not in ("none", "dogstatsd"):
        raise sink.UsageError(f"statsd tags must be none or dogstatsd, not {tags!r}")
    transport = single("transport", "udp")
    if transport not in ("udp", "tcp"):
        raise sink.UsageError(f"statsd transport must be udp or tcp, not {transport!r}")
    mtu_text = single("mtu", str(DEFAULT_MTU))
    if not mtu_text.isdigit() or not 64 <= int(mtu_text) <= sink.MAX_UDP_PAYLOAD:
        raise sink.UsageError(
            f"statsd mtu must be a whole number from 64 to {sink.MAX_UDP_PAYLOAD}, not {mtu_text!r}"
        )
    return StatsdSettings(
        host=parts.hostname,
        port=port,
        prefix=prefix,
        dogstatsd_tags=tags == "dogstatsd",
        transport=transport,
        mtu=int(mtu_text),
    )


class StatsdSink:
    def __init__(self, settings: StatsdSettings) -> None:
        self.settings = settings
        self._lines = sink.StatsdIntervalLines(settings)
        self._sender = sink.LineSender(
            settings.host,
            settings.port,
            protocol=settings.transport,
            mtu=settings.mtu,
            name=repr(self),
            what="statsd",
        )

    def __repr__(self) -> str:
        s = self.settings
        return f"statsd://{s.host}:{s.port}?prefix={s.prefix}&transport={s.transport}"

    @property
    def sent_datagrams(self) -> int:
        return self._sender.sent_datagrams

    @property
    def failed_sends(self) -> int:
        return self._sender.failed_sends

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        """Everything is sent per interval; the report adds nothing a metrics stack needs."""
        try:
            async for event in events:
                if isinstance(event, sink.WindowStarted):
                    self._lines.start(event)
                elif isinstance(event, sink.IntervalEnded):
                    await self._sender.send(
                        self._lines.lines_for(event.delta) + self._lines.owner_lines(event)
                    )
        finally:
            await self._sender.aclose()


def from_spec(argument: str | None) -> StatsdSink:
    if argument is None:
        raise sink.UsageError("expected statsd://HOST:PORT")
    return StatsdSink(parse_statsd_url("statsd:" + argument))
