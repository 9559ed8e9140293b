"""The gateway's replica client against small raw HTTP servers on 127.0.0.1 (real sockets, scripted answers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from mlport.deploy.upstream import ConnectionFailed, Upstream
from mlport.errors import ErrorCode, MlportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head, await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-secret: no\r\n" + extra
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A server calling ``handler`` for each request of each connection until it returns False; counts
    connections."""
    connections: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while await handler(reader, writer, len(connections)):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", connections


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())


def test_keep_alive_headers_and_body() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        head, body = await read_request(reader)
        seen.append((head, body))
        writer.write(answer(b'{"n": %d}' % len(body)))
        await writer.drain()
        return True

    async def main() -> None:
        server, url, connections = await serve(echo)
        up = Upstream(max_response_bytes=1000)
        for body in (b"x" * 10, b"y" * 100_000):
            a = await up.request(url, "POST", b"/v2/models/m/infer?a=1", [(b"content-type", b"application/json")],
                                 body)
            assert a.status == 200 and a.body == b'{"n": %d}' % len(body)
            assert a.headers == [(b"content-type", b"application/json")]  # only the kept headers
        assert len(connections) == 1
        assert seen[0][0].startswith(b"POST /v2/models/m/infer?a=1 HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"content-type: application/json\r\n" in seen[0][0] and seen[1][1] == b"y" * 100_000
        await up.aclose()
        server.close()

    run(main)


def test_a_kept_connection_closed_by_the_replica_is_replaced() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        return False  # closes after each answer, without saying so

    async def main() -> None:
        server, url, connections = await serve(once)
        up = Upstream(max_response_bytes=1000)
        for _ in range(3):
            assert (await up.request(url, "GET", b"/", [], b"")).status == 200
        assert len(connections) == 3
        await up.aclose()
        server.close()

    run(main)


@pytest.mark.parametrize("reply, words", [
    (answer(b"x" * 2000), "exceeds 1000 bytes"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "broke off"),
    (b"NOT HTTP AT ALL\r\n\r\n", "not valid HTTP"),
])
def test_broken_answers_are_bad_gateway(reply: bytes, words: str) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        return False

    async def main() -> None:
        server, url, _ = await serve(bad)
        up = Upstream(max_response_bytes=1000)
        with pytest.raises(MlportError, match=words) as info:
            await up.request(url, "GET", b"/", [], b"")
        assert info.value.code is ErrorCode.BAD_GATEWAY
        await up.aclose()
        server.close()

    run(main)


def test_no_answer_is_a_connection_failure() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await read_request(reader)
        return False  # closes without a byte

    async def main() -> None:
        server, url, _ = await serve(silent)
        up = Upstream(max_response_bytes=1000)
        with pytest.raises(ConnectionFailed):
            await up.request(url, "POST", b"/", [], b"{}")
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionFailed):  # nothing listens any more
            await up.request(url, "POST", b"/", [], b"{}")
        await up.aclose()

    run(main)


def test_head_answers_have_no_body() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        await writer.drain()
        return True

    async def main() -> None:
        server, url, _ = await serve(head)
        up = Upstream(max_response_bytes=1000)
        a = await asyncio.wait_for(up.request(url, "HEAD", b"/", [], b""), 10)
        assert (a.status, a.body) == (200, b"")
        await up.aclose()
        server.close()

    run(main)


def test_deadlines_fail_late_answers_and_spare_the_others() -> None:
    """Requests in flight share one timer: the one past its deadline fails with TimeoutError (its connection
    dropped), while an earlier and a later one still get their answers."""
    async def by_path(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        head, _ = await read_request(reader)
        if b" /never " in head:
            await asyncio.sleep(30)  # no answer before the client gives up
            return False
        if b" /late " in head:
            await asyncio.sleep(0.5)
        writer.write(answer(b"{}"))
        await writer.drain()
        return True

    async def main() -> None:
        server, url, _ = await serve(by_path)
        up = Upstream(max_response_bytes=1000)
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = asyncio.ensure_future(up.request(url, "GET", b"/late", [], b"", now + 20))
        never = asyncio.ensure_future(up.request(url, "GET", b"/never", [], b"", now + 0.2))
        soon = await up.request(url, "GET", b"/soon", [], b"", now + 10)
        assert soon.status == 200
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(never, 10)
        assert loop.time() - now < 10  # its own deadline, not the others'
        assert (await asyncio.wait_for(late, 10)).status == 200
        assert (await up.request(url, "GET", b"/again", [], b"", loop.time() + 10)).status == 200
        await up.aclose()
        server.close()

    run(main)


def test_a_deadline_bounds_connecting() -> None:
    async def main() -> None:
        up = Upstream(max_response_bytes=1000, connect_timeout_s=30)
        loop = asyncio.get_running_loop()
        # a listening socket that never accepts: with a full backlog the connection cannot complete
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(0)
            port = sock.getsockname()[1]
            fillers = []
            with contextlib.suppress(OSError):  # until the backlog is full (its size is the kernel's)
                for _ in range(8):
                    fillers.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            try:
                started = loop.time()
                with pytest.raises(TimeoutError):  # the deadline, not the 30 s of connecting
                    await up.request(f"http://127.0.0.1:{port}", "GET", b"/", [], b"", started + 0.3)
                assert loop.time() - started < 10
            finally:
                for f in fillers:
                    f.close()
        await up.aclose()

    run(main)
