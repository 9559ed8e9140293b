"""The servers' HTTP protocol: writes of one event-loop turn go out together, in order, and before a close."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

from mlport.deploy.procs import free_port
from mlport.protocols.http.wire import CoalescingHttpProtocol, _Coalescing
from tests.waiting import wait_for


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport


async def _pair() -> tuple[_Coalescing, asyncio.StreamReader, asyncio.Server]:
    accepted: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(reader)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(_Sink, "127.0.0.1", port)
    assert isinstance(transport, asyncio.Transport)
    return _Coalescing(transport, loop), await asyncio.wait_for(accepted, 10), server


async def _held_then_sent_in_order() -> None:
    out, reader, server = await _pair()
    try:
        out.write(b"head ")
        out.writelines([b"body", b""])
        assert out.get_write_buffer_size() == len(b"head body")  # held until the turn ends
        assert await asyncio.wait_for(reader.readexactly(9), 10) == b"head body"
        out.write(b" more")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b" more"
    finally:
        out.close()
        server.close()


async def _close_sends_held_first() -> None:
    out, reader, server = await _pair()
    try:
        out.write(b"last words")
        out.close()
        assert out.is_closing()
        assert await asyncio.wait_for(reader.read(), 10) == b"last words"  # then the end of the stream
    finally:
        server.close()


def test_writes_of_one_turn_are_held_then_sent_in_order() -> None:
    asyncio.run(_held_then_sent_in_order())


def test_close_sends_what_is_held_first() -> None:
    asyncio.run(_close_sends_held_first())


async def _flush_writes_now() -> None:
    out, reader, server = await _pair()
    try:
        out.write(b"whole answer")
        out.flush()
        assert out.get_write_buffer_size() == 0  # nothing held any more: written to the socket
        assert await asyncio.wait_for(reader.readexactly(12), 10) == b"whole answer"
    finally:
        out.close()
        server.close()


def test_flush_writes_what_is_held_at_once() -> None:
    asyncio.run(_flush_writes_now())


def test_a_complete_answer_goes_out_before_the_app_returns() -> None:
    """The answer is on the wire while the app still works after sending it (it blocks the loop here until the
    client has read the answer: held to the end of the loop's turn, the answer would never come before)."""
    read = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        read.wait(10)  # the loop's turn does not end before the client read the answer (or 10 s passed)

    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=CoalescingHttpProtocol,
                                           lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the server to start")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"ok"):
                chunk = sock.recv(4096)  # within the socket's 5 s, while the app waits up to 10
                assert chunk, got
                got += chunk
            read.set()
        assert got.startswith(b"HTTP/1.1 200")
    finally:
        read.set()
        server.should_exit = True
        thread.join(30)
