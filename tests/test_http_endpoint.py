"""kstat's HTTP transport (`kstat.sink.HttpEndpoint`) without root: answers from memory, room
made by closing idlers, a 503 that the client reads when there is none, and a descriptor left
for the rest of the process when the open-file limit is tight."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import trio

from kstat._http import HttpEndpoint, HttpRequest, HttpResponse, connection_budget


def answer(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, f"you asked for {request.path}\n".encode())


async def ask(port: int, path: str = "/x") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    return data


async def test_an_idler_is_closed_to_make_room_and_a_full_endpoint_says_503() -> None:
    endpoint = HttpEndpoint("127.0.0.1", 0, answer, max_connections=2, fd_reserve=0, idle_s=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.serve)
        idlers = [await trio.open_tcp_stream("127.0.0.1", endpoint.port) for _ in range(2)]
        while endpoint.statistics.connections < 2:
            await trio.sleep(0.01)
        # Both idled only a moment: no room, so the newcomer is refused, and reads why.
        refused = await ask(endpoint.port)
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert refused.endswith(b"too many connections\n")
        await trio.sleep(0.3)
        # Now they have idled: the oldest is closed for the newcomer, which is answered.
        answered = await ask(endpoint.port, "/y")
        assert answered.startswith(b"HTTP/1.1 200 OK\r\n") and answered.endswith(b"you asked for /y\n")
        assert await idlers[0].receive_some(10) == b""  # closed by the endpoint
        assert endpoint.statistics.refused == 2
        for idler in idlers:
            await idler.aclose()
        nursery.cancel_scope.cancel()


async def test_a_request_that_never_comes_times_out() -> None:
    endpoint = HttpEndpoint("127.0.0.1", 0, answer, head_timeout_s=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.serve)
        silent = await trio.open_tcp_stream("127.0.0.1", endpoint.port)
        with trio.fail_after(5):
            assert await silent.receive_some(10) == b""
        await silent.aclose()
        nursery.cancel_scope.cancel()


def test_the_budget_leaves_the_reserve_under_a_tight_limit() -> None:
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
        from kstat._http import connection_budget, open_descriptors
        print(open_descriptors(), connection_budget(1000, 64))
        """
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    open_now, budget = map(int, completed.stdout.split())
    assert abs(budget - (200 - open_now - 64) // 2) <= 1  # the listing holds a descriptor of its own
    assert connection_budget(64, 64) <= 64
