"""Lines to a metrics server over UDP or TCP: a transport that never stops the collection.

UDP batches lines into datagrams of at most `mtu` bytes; TCP sends newline-terminated lines on
one connection. A server that is down, refuses or cannot be resolved costs a warning at most
every 30 s (with how many sends failed meanwhile); the next send starts afresh (a new lookup, a
new socket or connection).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from typing import Final

import trio
from attrs import define

from kstat._logging import get_logger

log = get_logger(__name__)

MAX_UDP_PAYLOAD: Final = 65_507
_WARNING_PERIOD_S: Final = 30.0
_CONNECT_TIMEOUT_S: Final = 2.0
PROTOCOLS: Final = ("udp", "tcp")


def batch_datagrams(lines: Sequence[str], mtu: int) -> Iterator[bytes]:
    """Newline-joined lines in datagrams of at most `mtu` bytes (a longer line goes alone).

    The lines are joined and encoded once, and each datagram is a slice of that, ending at the
    last newline that fits: found at C speed rather than line by line."""
    if not lines:
        return
    blob = "\n".join(lines).encode()
    if blob.count(b"\n") != len(lines) - 1:
        yield from _batched_one_by_one(lines, mtu)  # a line with a newline of its own
        return
    start, size = 0, len(blob)
    while size - start > mtu:
        end = blob.rfind(b"\n", start, start + mtu + 1)
        if end < 0:  # the next line alone is longer than a datagram: it goes alone
            end = blob.find(b"\n", start)
            if end < 0:
                break
        yield blob[start:end]
        start = end + 1
    yield blob[start:]


def _batched_one_by_one(lines: Sequence[str], mtu: int) -> Iterator[bytes]:
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


# UDP datagrams sent back to back at most, then a pause: about 3,200 a second at most, several
# times what announcing 10,000 idle programs over 60 intervals of 100 ms takes (about 500).
DATAGRAMS_A_BURST: Final = 16
BURST_PAUSE_S: Final = 0.005


class LineSender:
    """`send(lines)` to HOST:PORT by `protocol` (udp or tcp); failures are counted and said,
    never raised. `what` is the kind of server the warning names (e.g. "statsd"), `name` the
    server itself (its address by default)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: str = "udp",
        mtu: int = 1432,
        name: str = "",
        what: str = "the server",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be udp or tcp, not {protocol!r}")
        self.host, self.port, self.protocol, self.mtu = host, port, protocol, mtu
        self.name = name or f"{host}:{port}"
        self._udp: trio.socket.SocketType | None = None
        self._tcp: trio.SocketStream | None = None
        self._failed = _RateLimitedWarning(f"{what} unreachable; the lines of this interval are lost")
        self.sent_datagrams = 0
        self.failed_sends = 0

    async def send(self, lines: Sequence[str]) -> None:
        try:
            if self.protocol == "tcp":
                stream = await self._tcp_stream()
                await stream.send_all("".join(line + "\n" for line in lines).encode())
                self.sent_datagrams += 1
            else:
                udp = await self._udp_socket()
                for datagram in batch_datagrams(lines, self.mtu):
                    await udp.send(datagram)
                    self.sent_datagrams += 1
                    if self.sent_datagrams % DATAGRAMS_A_BURST == 0:
                        # A pause between bursts: a server whose receive buffer holds about 90
                        # datagrams (Linux's default 208 KiB) and that reads late on a busy
                        # host lost a turn's lines sent back to back with the next's.
                        await trio.sleep(BURST_PAUSE_S)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as error:
            self.failed_sends += 1
            self._failed.happened(server=self.name, error=str(error) or type(error).__name__)
            await self.aclose()

    async def _udp_socket(self) -> trio.socket.SocketType:
        if self._udp is None:
            family, kind, protocol, _, address = (
                await trio.socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            )[0]
            udp = trio.socket.socket(family, kind, protocol)
            # Connected, so that a refusing port (ICMP unreachable) shows as ECONNREFUSED.
            await udp.connect(address)
            self._udp = udp
        return self._udp

    async def _tcp_stream(self) -> trio.SocketStream:
        if self._tcp is None:
            with trio.fail_after(_CONNECT_TIMEOUT_S):
                self._tcp = await trio.open_tcp_stream(self.host, self.port)
        return self._tcp

    async def aclose(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            await self._tcp.aclose()
            self._tcp = None
