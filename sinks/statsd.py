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
"""

from __future__ import annotations

import re
import socket
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Final
from urllib.parse import parse_qs, urlsplit

import trio
from attrs import define, field, frozen

from kstat import sink

log = sink.get_logger(__name__)

DEFAULT_PORT: Final = 8125
DEFAULT_PREFIX: Final = "kstat"
DEFAULT_MTU: Final = 1432
_MAX_UDP_PAYLOAD: Final = 65_507
_WARNING_PERIOD_S: Final = 30.0
_CONNECT_TIMEOUT_S: Final = 2.0
_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_FULL_REFRESH_INTERVALS: Final = 60
# The catalogue's metrics for metrics systems: counters as StatsD counters (`|c`, summed by
# the server), rates and ratios as gauges (`|g`, last value kept).
_EXPORTED: Final = sink.in_view(sink.View.EXPORT)


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
    if not mtu_text.isdigit() or not 64 <= int(mtu_text) <= _MAX_UDP_PAYLOAD:
        raise sink.UsageError(
            f"statsd mtu must be a whole number from 64 to {_MAX_UDP_PAYLOAD}, not {mtu_text!r}"
        )
    return StatsdSettings(
        host=parts.hostname,
        port=port,
        prefix=prefix,
        dogstatsd_tags=tags == "dogstatsd",
        transport=transport,
        mtu=int(mtu_text),
    )


def _number(value: float) -> str:
    # StatsD reads plain decimals; exponents ("1e-05") are not valid everywhere.
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


@frozen
class ProgramName:
    """How a program is named in StatsD: its report key, or its name, id and type as tags."""

    key: str
    name: str
    id: int
    type: str
    # Where its owners run (pod, namespace, container, unit): more tags with dogstatsd.
    places: tuple[tuple[str, str], ...] = ()


def places_of(owners: Sequence[sink.ProgramOwner]) -> tuple[tuple[str, str], ...]:
    """(tag, value) pairs for where a program's owners run; the first owner that says wins."""
    found: dict[str, str] = {}
    for owner in owners:
        workload = owner.workload
        for tag, value in (
            ("pod", workload.pod),
            ("namespace", workload.namespace),
            ("container", workload.container_name),
            ("unit", workload.unit),
        ):
            if value is not None:
                found.setdefault(tag, value)
    return tuple(found.items())


def program_lines(
    program: ProgramName, values: Mapping[str, sink.Number], settings: StatsdSettings, metric_name: str
) -> list[str]:
    """One program's lines for one interval: every exported metric (the catalogue's).
    `metric_name` is its name among the others' (`kstat.sink.for_statsd_names`), used without tags."""
    if settings.dogstatsd_tags:
        stem = f"{settings.prefix}.program"
        name = sink.for_statsd_tag(program.name) or "unnamed"
        places = "".join(f",{tag}:{sink.for_statsd_tag(value)}" for tag, value in program.places)
        suffix = f"|#program:{name},id:{program.id},type:{sink.for_statsd_tag(program.type)}{places}"
    else:
        stem = f"{settings.prefix}.{metric_name}"
        suffix = ""
    # A footprint (code size, memory) is sent when the line carries it: once per program.
    return [
        _line(f"{stem}.{metric.name}", metric, values.get(metric.name, 0), suffix)
        for metric in _EXPORTED
        if metric.kind is not sink.Kind.PROPERTY or metric.name in values
    ]


def total_lines(totals: Mapping[str, sink.Number], settings: StatsdSettings) -> list[str]:
    return [
        _line(f"{settings.prefix}.total.{metric.name}", metric, totals[metric.name], "")
        for metric in _EXPORTED
        if metric.name in totals
    ]


def _line(name: str, metric: sink.Metric, value: sink.Number, suffix: str) -> str:
    if metric.kind is sink.Kind.COUNTER:
        return f"{name}:{int(value)}|c{suffix}"
    return f"{name}:{_number(float(value))}|g{suffix}"


def metric_lines(report: sink.Report, settings: StatsdSettings) -> list[str]:
    """Every StatsD line for a report's programs and totals (each program, idle or not)."""
    lines: list[str] = []
    programs = report.program_stats
    names = sink.for_statsd_names(list(programs), [line.id for line in programs.values()])
    for (key, line), metric_name in zip(programs.items(), names, strict=True):
        named = ProgramName(key, line.name, line.id, line.type, places_of(line.owners))
        lines += program_lines(named, line.metrics, settings, metric_name)
    return lines + total_lines(report.totals, settings)


def batch_datagrams(lines: list[str], mtu: int) -> Iterator[bytes]:
    """Newline-joined lines in datagrams of at most `mtu` bytes (a longer line goes alone)."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        encoded = line.encode()
        added = len(encoded) + (1 if batch else 0)
        if batch and size + added > mtu:
            yield b"\n".join(batch)
            batch, size, added = [], 0, len(encoded)
        batch.append(encoded)
        size += added
    if batch:
        yield b"\n".join(batch)


@define
class _RateLimitedWarning:
    """A warning logged at most once a period, saying how often it happened meanwhile."""

    event: str
    period_s: float = _WARNING_PERIOD_S
    _last_logged: float = float("-inf")
    _suppressed: int = 0

    def happened(self, **details: object) -> None:
        now = time.monotonic()
        if now - self._last_logged >= self.period_s:
            log.warning(self.event, failures_since_last_warning=self._suppressed + 1, **details)
            self._last_logged = now
            self._suppressed = 0
        else:
            self._suppressed += 1


@define
class IntervalLines:
    """The lines of each interval, for a window: what a StatsD server needs to know, and no more.

    A program with no runs has zero counters and zero gauges; saying so once is enough (a
    StatsD server keeps a gauge's last value), so on a host where most programs are idle each
    interval costs little. Each idle program is sent once every _FULL_REFRESH_INTERVALS, a
    share of them each interval, so that a server started late or restarted catches up without
    a burst. The programs' names are kept up to date from the deltas' changes, so an
    interval costs what changed, not what is loaded.
    """

    settings: StatsdSettings
    intervals: int = 0
    # Every program loaded, by identity, with its StatsD name.
    programs: dict[sink.ProgramIdentity, ProgramName] = field(factory=dict)
    # Programs that had lines in the previous interval (their gauges are not yet zero).
    active: set[sink.ProgramIdentity] = field(factory=set)
    # Every program by its turn to be sent again (its id modulo _FULL_REFRESH_INTERVALS).
    turns: dict[int, set[sink.ProgramIdentity]] = field(factory=lambda: defaultdict(set))
    # Each program's name in the lines, distinct among every program's; worked out again only
    # when programs come, go or change keys.
    _metric_names: dict[sink.ProgramIdentity, str] = field(factory=dict)
    _names_stale: bool = True

    def start(self, event: sink.WindowStarted) -> None:
        programs = event.snapshot.programs
        for program in programs:
            self.turns[program.id % _FULL_REFRESH_INTERVALS].add(program.identity)
        self.programs = {
            program.identity: ProgramName(
                key,
                program.name,
                program.id,
                program.type,
                places_of(program.details.owners),
            )
            for program, key in zip(programs, sink.program_keys(programs), strict=True)
        }
        self._names_stale = True

    def _name(self, identity: sink.ProgramIdentity, named: ProgramName) -> None:
        if self.programs.get(identity) != named:
            if identity not in self.programs or self.programs[identity].key != named.key:
                self._names_stale = True
            self.programs[identity] = named

    def _names(self) -> dict[sink.ProgramIdentity, str]:
        if self._names_stale:
            identities = list(self.programs)
            named = [self.programs[identity] for identity in identities]
            found = sink.for_statsd_names([name.key for name in named], [name.id for name in named])
            self._metric_names = dict(zip(identities, found, strict=True))
            self._names_stale = False
        return self._metric_names

    def lines_for(self, delta: sink.IntervalDelta) -> list[str]:
        settings = self.settings
        # Each idle program once every _FULL_REFRESH_INTERVALS, in turns by id, from the first
        # interval on: no interval carries them all (at 10,000 programs that burst overflowed the
        # reference server's UDP receive buffer: 1,592 programs arrived).
        turn = self.intervals % _FULL_REFRESH_INTERVALS
        self.intervals += 1
        sent: list[tuple[sink.ProgramIdentity, Mapping[str, sink.Number]]] = []
        active: set[sink.ProgramIdentity] = set()
        gone: list[sink.ProgramIdentity] = []
        for key, line in delta.lines.items():
            change = delta.active[key]
            identity = change.last.identity
            if identity not in self.programs and not change.unloaded:
                self.turns[line.id % _FULL_REFRESH_INTERVALS].add(identity)
            # A program that went is still named among the others for its last lines.
            self._name(identity, ProgramName(key, line.name, line.id, line.type, places_of(line.owners)))
            sent.append((identity, line.metrics))
            if change.unloaded:
                gone.append(identity)
            else:
                active.add(identity)
        sent += [
            (identity, {})
            for identity in (self.active | self.turns[turn]) - active
            if identity in self.programs
        ]
        names = self._names()
        lines: list[str] = []
        for identity, values in sent:
            lines += program_lines(self.programs[identity], values, settings, names[identity])
        for identity in gone:
            self.programs.pop(identity, None)
            self._names_stale = True
            self.turns[identity.id % _FULL_REFRESH_INTERVALS].discard(identity)
        self.active = active
        return lines + total_lines(delta.totals, settings)


class StatsdSink:
    def __init__(self, settings: StatsdSettings) -> None:
        self.settings = settings
        self._lines = IntervalLines(settings)
        self._udp: trio.socket.SocketType | None = None
        self._tcp: trio.SocketStream | None = None
        self._failed = _RateLimitedWarning("statsd unreachable; metrics for this interval are lost")
        self.sent_datagrams = 0
        self.failed_sends = 0

    def __repr__(self) -> str:
        s = self.settings
        return f"statsd://{s.host}:{s.port}?prefix={s.prefix}&transport={s.transport}"

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        """Everything is sent per interval; the report adds nothing a metrics stack needs."""
        try:
            async for event in events:
                if isinstance(event, sink.WindowStarted):
                    self._lines.start(event)
                elif isinstance(event, sink.IntervalEnded):
                    await self._send(self._lines.lines_for(event.delta))
        finally:
            await self._close()

    async def _send(self, lines: list[str]) -> None:
        settings = self.settings
        try:
            if settings.transport == "tcp":
                stream = await self._tcp_stream()
                await stream.send_all("".join(line + "\n" for line in lines).encode())
                self.sent_datagrams += 1
            else:
                udp = await self._udp_socket()
                for datagram in batch_datagrams(lines, settings.mtu):
                    await udp.send(datagram)
                    self.sent_datagrams += 1
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as error:
            self.failed_sends += 1
            self._failed.happened(server=repr(self), error=str(error) or type(error).__name__)
            # Start afresh next interval: a new lookup, a new socket or connection.
            await self._close()

    async def _udp_socket(self) -> trio.socket.SocketType:
        if self._udp is None:
            settings = self.settings
            family, kind, protocol, _, address = (
                await trio.socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_DGRAM)
            )[0]
            udp = trio.socket.socket(family, kind, protocol)
            # Connected, so that a refusing port (ICMP unreachable) shows as ECONNREFUSED.
            await udp.connect(address)
            self._udp = udp
        return self._udp

    async def _tcp_stream(self) -> trio.SocketStream:
        if self._tcp is None:
            with trio.fail_after(_CONNECT_TIMEOUT_S):
                self._tcp = await trio.open_tcp_stream(self.settings.host, self.settings.port)
        return self._tcp

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            await self._tcp.aclose()
            self._tcp = None


def from_spec(argument: str | None) -> StatsdSink:
    if argument is None:
        raise sink.UsageError("expected statsd://HOST:PORT")
    return StatsdSink(parse_statsd_url("statsd:" + argument))
