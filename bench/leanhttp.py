"""A minimal HTTP/1.1 client for benches: one keep-alive connection, one request at a time, answers parsed by
httptools.

A general client (aiohttp) spends a few hundred microseconds of CPU on each request; when hundreds of clients
send in the same instant on the machine that runs the server, the clients' own queue then makes most of a
latency measured in milliseconds.  This one sends prepared bytes and reads the status, one header and the
body: what it adds to a measured latency is small against the server's share.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools


def post_bytes(host: str, port: int, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """The bytes of one keep-alive POST request."""
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


def get_bytes(host: str, port: int, path: str) -> bytes:
    """The bytes of one keep-alive GET request."""
    return f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode("ascii")


class Answer:
    __slots__ = ("body", "retry_after", "status")

    def __init__(self, status: int, retry_after: str | None, body: bytes) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body


class Connection(asyncio.Protocol):
    """One connection; :meth:`send` one request and wait for its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._retry: str | None = None
        self._chunks: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, conn = await asyncio.get_running_loop().create_connection(cls, host, port)
        return cast(Connection, conn)

    async def send(self, request: bytes) -> Answer:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._retry, self._chunks = None, []
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio and httptools callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"not HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(str(exc) if exc else "closed by the server"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self._parser.get_status_code(), self._retry, b"".join(self._chunks)))
        if not self._parser.should_keep_alive():
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
