"""A small HTTP/1.1 endpoint for answers kept in memory: the transport of kstat's `/metrics`.

Built so that nothing a client does reaches the collector:
- the handler is a plain function that answers from memory (no thread, no await): what it
  serves was made beforehand, so 500 scrapes at once cost 500 sends, not 500 renders;
- connections are bounded (`max_connections`, and never more than the open-file limit leaves
  after a reserve of `fd_reserve` descriptors for the sampler, its sinks and their files);
  when the endpoint is full, the oldest connection that has waited `idle_s` without sending a
  request is closed to make room (a scraper asks at once; one that idles is a slow or hostile
  client), and when there is none such the newcomer gets `503` at once and is closed (gently:
  what it sent is read first, so that the close does not reset the connection before the client
  has read the 503; a quarter of a second at most); beyond as many refusals again, newcomers
  wait in the kernel's backlog, which costs kstat no descriptor, until a connection ends;
- a request must arrive within `head_timeout_s` and its answer be taken within
  `answer_timeout_s`, or the connection is dropped;
- when `accept` itself finds no descriptor left (EMFILE, the rest of the process used them
  up), a spare descriptor held for the purpose is given up for long enough to accept the
  waiting connection and close it, so the backlog drains instead of spinning.

Every answer closes its connection (`Connection: close`): a scraper reconnects per scrape,
and nothing is held between scrapes.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import resource
import socket
from collections.abc import Callable, Iterable
from typing import Final

import trio
from attrs import define, field, frozen

from kstat._logging import get_logger
from kstat.errors import OutputError

log = get_logger(__name__)

DEFAULT_MAX_CONNECTIONS: Final = 64
DEFAULT_FD_RESERVE: Final = 64
DEFAULT_HEAD_TIMEOUT_S: Final = 5.0
DEFAULT_ANSWER_TIMEOUT_S: Final = 30.0
# A connection that has sent nothing for this long may be closed to make room for another (a
# request delayed by a retransmitted handshake still arrives well within it).
DEFAULT_IDLE_S: Final = 1.0
_REQUEST_LIMIT_BYTES: Final = 16 * 1024
# Connections the kernel queues before kstat accepts them: they cost kstat no descriptor, and a
# queue that overflows drops handshakes, which clients then retry for seconds.
_BACKLOG: Final = 1024
# How long a refused connection may take to be closed gently.
_LINGER_S: Final = 0.25
_OUT_OF_DESCRIPTORS: Final = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_STATUS_TEXT: Final = {
    200: "OK",
    400: "Bad HttpRequest",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@frozen
class HttpRequest:
    method: str
    # Without its query.
    path: str
    # Lower-cased names.
    headers: dict[str, str]


@frozen
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    # HEAD: the head alone (its Content-Length still the body's).
    head_only: bool = False

    def head(self) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {_STATUS_TEXT.get(self.status, 'Unknown')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


Handler = Callable[[HttpRequest], HttpResponse]

# Sent, without waiting, to a connection the endpoint has no room for.
_FULL: Final = HttpResponse(503, b"too many connections\n", headers=(("Retry-After", "1"),))
_FULL_BYTES: Final = _FULL.head() + _FULL.body


def parse_request(data: bytes) -> HttpRequest | None:
    """The request line and headers of an HTTP/1.x request head (None when it is not one)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return HttpRequest(parts[0], parts[1].split("?", 1)[0], headers)


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connection_budget(wanted: int, reserve: int) -> int:
    """How many connections may be held (and as many refused ones closed gently): `wanted`,
    or fewer where the open-file limit, less what is open now and the reserve, leaves less
    (at least 1)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (soft - open_descriptors() - reserve) // 2))


@define
class EndpointStatistics:
    connections: int = 0
    # Closed unanswered: refused when full, evicted while waiting, or shed on EMFILE.
    refused: int = 0
    requests: int = 0


@define
class _Connection:
    number: int
    stream: trio.SocketStream
    # The same socket as the stream's, to look at without reading.
    raw: socket.socket
    accepted_at: float
    closed_for_room: bool = False

    def has_asked(self) -> bool:
        """Has the client sent something (that its task has not read yet)?"""
        try:
            return bool(self.raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return True  # gone: its task finds out and ends


@define
class HttpEndpoint:
    """An endpoint bound at construction (a port in use fails before the window), serving
    `handler` from `serve()` until cancelled."""

    host: str
    port: int
    handler: Handler
    # What it serves, for the error when it cannot ("metrics": "cannot serve metrics on ...").
    serves: str = "HTTP"
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    fd_reserve: int = DEFAULT_FD_RESERVE
    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S
    answer_timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S
    idle_s: float = DEFAULT_IDLE_S
    statistics: EndpointStatistics = field(factory=EndpointStatistics)
    _listener: socket.socket = field(init=False)
    # Connections still waiting for their request, oldest first: the ones to close for room.
    _waiting: dict[int, _Connection] = field(init=False, factory=dict)
    _spare_fd: int = field(init=False, default=-1)
    _next_connection: int = field(init=False, default=0)
    # Refused connections being closed gently (`_linger`): at most as many as connections.
    _refusing: int = field(init=False, default=0)
    # Set when a connection or a refusal ends: the accept loop may go on.
    _room: trio.Event = field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(_BACKLOG)
        except OSError as error:
            listener.close()
            raise OutputError(f"cannot serve {self.serves} on {self.address}: {error.strerror}") from None
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and answer until cancelled; the listener is closed then."""
        limit = connection_budget(self.max_connections, self.fd_reserve)
        if limit < self.max_connections:
            log.warning(
                "fewer connections than asked: the open-file limit leaves no more beside kstat's reserve",
                asked=self.max_connections,
                allowed=limit,
            )
        self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    while not self._has_room(limit):
                        # Full, refusals too: the rest wait in the kernel's backlog, which holds
                        # no descriptor of kstat's, until a connection ends or one idles.
                        self._room = trio.Event()
                        with trio.move_on_after(self.idle_s / 2):
                            await self._room.wait()
                    await trio.lowlevel.wait_readable(self._listener)
                    for connection in self._accept_waiting():
                        self._admit(connection, limit, nursery)
                        if not self._has_room(limit):
                            break
                    await trio.lowlevel.checkpoint()
        finally:
            self._listener.close()
            os.close(self._spare_fd)

    def _has_room(self, limit: int) -> bool:
        """Can a newcomer be answered, or at least refused gently?"""
        if self.statistics.connections < limit or self._refusing < limit:
            return True
        return self._idlest() is not None

    def _idlest(self) -> _Connection | None:
        """The connection that has waited longest without sending anything, if it has waited
        `idle_s` (one whose request has come, though its task has not read it yet on a busy
        loop, is no idler)."""
        now = trio.current_time()
        for held in itertools.islice(self._waiting.values(), 8):
            if now - held.accepted_at < self.idle_s:
                return None
            if not held.has_asked():
                return held
        return None

    def _freed(self) -> None:
        self._room.set()

    def _accept_waiting(self) -> Iterable[socket.socket]:
        """The connections in the backlog now (a few at a time, so others get the loop)."""
        for _ in range(16):
            try:
                connection, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                self._shed()
                return
            yield connection

    def _shed(self) -> None:
        """No descriptor left to accept with: give up the spare, accept the oldest waiting
        connection and close it at once, and take the spare back."""
        os.close(self._spare_fd)
        try:
            connection, _ = self._listener.accept()
            connection.close()
            self.statistics.refused += 1
        except OSError:
            pass
        finally:
            self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        log.warning("out of file descriptors: a connection was refused")

    def _admit(self, connection: socket.socket, limit: int, nursery: trio.Nursery) -> None:
        statistics = self.statistics
        now = trio.current_time()
        if statistics.connections >= limit:
            # Room for the newcomer: the connection that has idled longest, if any has idled
            # long enough to be no scraper.
            idlest = self._idlest()
            if idlest is not None:
                del self._waiting[idlest.number]
                idlest.closed_for_room = True
                idlest.stream.socket.close()  # its descriptor is free now; its task ends soon
                statistics.connections -= 1
                statistics.refused += 1
        if statistics.connections >= limit:
            statistics.refused += 1
            with contextlib.suppress(OSError):
                connection.send(_FULL_BYTES)  # fits in an empty socket buffer: never blocks
            self._refusing += 1
            nursery.start_soon(self._linger, connection)
            return
        connection.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(connection))
        held = _Connection(self._next_connection, stream, connection, now)
        self._next_connection += 1
        self._waiting[held.number] = held
        statistics.connections += 1
        nursery.start_soon(self._answer, held)

    async def _linger(self, connection: socket.socket) -> None:
        """A refused connection closed gently: the 503 is sent, and what the client sent is
        read (for a moment at most: a client asks the moment it is connected) before closing,
        so that the close does not reset the connection and destroy the 503 unread."""
        try:
            connection.shutdown(socket.SHUT_WR)
            with trio.move_on_after(_LINGER_S):
                while True:
                    await trio.lowlevel.wait_readable(connection)
                    if not connection.recv(4096):
                        break
        except OSError:
            pass
        finally:
            connection.close()
            self._refusing -= 1
            self._freed()

    async def _answer(self, held: _Connection) -> None:
        stream = held.stream
        try:
            with trio.move_on_after(self.answer_timeout_s):
                with trio.fail_after(self.head_timeout_s):
                    request = await self._read_head(stream)
                if held.closed_for_room:
                    return
                del self._waiting[held.number]
                response = self._respond(request)
                self.statistics.requests += 1
                await stream.send_all(response.head())
                if not response.head_only and response.body:
                    await stream.send_all(response.body)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # a client that went away, never finished asking, or was closed for room
        finally:
            if not held.closed_for_room:
                self._waiting.pop(held.number, None)
                self.statistics.connections -= 1
                stream.socket.close()
                self._freed()

    def _respond(self, request: HttpRequest | None) -> HttpResponse:
        if request is None:
            return HttpResponse(400, b"bad request\n")
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(405, b"GET only\n", headers=(("Allow", "GET, HEAD"),))
        response = self.handler(request)
        if request.method == "HEAD":
            return HttpResponse(response.status, response.body, response.content_type, response.headers, True)
        return response

    @staticmethod
    async def _read_head(stream: trio.SocketStream) -> HttpRequest | None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < _REQUEST_LIMIT_BYTES:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
        return parse_request(data)
