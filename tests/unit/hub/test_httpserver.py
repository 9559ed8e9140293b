"""The hub's HTTP protocol: writes of one event-loop turn go out together, in order, and before a close."""

from __future__ import annotations

import asyncio

from mlport.hub.httpserver import _Coalescing


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
