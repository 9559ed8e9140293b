"""The gateway's HTTP/1.1 client to replicas: keep-alive connections on asyncio, responses parsed by httptools.

A general client (httpx on httpcore and anyio) cost the gateway more than a small model's prediction: its pool
scans every connection on each request, and each request goes through several layers of objects.  This
client does only what the gateway needs: one request at a time per connection, the whole body sent at once,
the whole answer read within a size limit, and the connection kept for the next request when both sides
allow it.  A request's deadline is kept by one timer for all the requests in flight (set for the earliest
deadline), not by a timer of its own: with the gateway's one timeout, each new deadline falls after those
already in flight, so the timer is seldom moved.

:meth:`Upstream.request` raises :class:`TimeoutError` when its deadline passed before the whole answer came,
:class:`ConnectionFailed` when no byte of an answer arrived (the connection could not be made, or broke before
the answer began: the gateway may send the request again), and
:class:`mlport.errors.MlportError` (``BAD_GATEWAY``) when an answer broke off or was too large.  A request
sent on a kept connection that the replica had closed meanwhile is sent once more on a new connection.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from mlport.errors import ErrorCode, MlportError

__all__ = ["Answer", "ConnectionFailed", "Upstream"]

#: The answer headers kept (lower case); the others are dropped as they arrive.
KEPT_HEADERS = frozenset({b"content-type", b"inference-header-content-length", b"x-request-id", b"retry-after"})
#: Idle connections kept per replica.
MAX_IDLE = 256
#: Bodies up to this size are sent in the same buffer as the request's head.
_JOIN_BELOW = 64 * 1024
#: How early the deadlines' timer may find a deadline passed (the loop's clock may count whole milliseconds).
_EARLY_S = 0.001
_FIXED = b"user-agent: mlport-gateway\r\naccept-encoding: identity\r\n"


class ConnectionFailed(Exception):
    """The connection failed before any byte of an answer arrived."""


@dataclass(frozen=True)
class Answer:
    status: int
    #: the :data:`KEPT_HEADERS` the replica sent (lower-case names)
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection to a replica; one request at a time."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        #: when the request in flight must have its answer (the loop's clock); inf when none is in flight
        self.deadline = math.inf
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._started = False
        self._head_only = False
        self._keep = False

    # -- asyncio -------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's subclasses

    def data_received(self, data: bytes) -> None:
        self._started = True
        if self._waiter is None:  # bytes nobody asked for: the connection is not usable any more
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(MlportError(f"the replica's answer is not valid HTTP: {exc}", ErrorCode.BAD_GATEWAY))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._started:
                self._waiter.set_exception(MlportError("the replica's answer broke off", ErrorCode.BAD_GATEWAY))
            else:
                self._waiter.set_exception(ConnectionFailed(str(exc) if exc else "the replica closed the connection"))

    # -- httptools callbacks -----------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in KEPT_HEADERS:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head_only:  # no body follows an answer to HEAD, whatever its length says
            self._done(keep=False)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_bytes:
            self._fail(MlportError(f"the replica's answer exceeds {self._max_bytes} bytes", ErrorCode.BAD_GATEWAY))
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._done(keep=self._parser.should_keep_alive())

    # -- use -------------------------------------------------------------------------------------------------
    def send(self, data: Iterable[bytes], head_only: bool, deadline: float = math.inf) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._reset()
        self._head_only = head_only
        self.deadline = deadline
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _done(self, keep: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        waiter.set_result(Answer(self._parser.get_status_code(), self._headers, body))
        if not keep:
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def expire(self) -> None:
        """The deadline passed: the answer will not be waited for (the connection's state is unknown)."""
        self._fail(TimeoutError("no answer before the deadline"))


@dataclass(frozen=True)
class _Origin:
    host: str
    port: int
    tls: bool
    authority: bytes


class Upstream:
    """Keep-alive connections to replicas, by base URL (``http://host:port`` or ``https://...``).

    ``verify``: how replicas' certificates are checked over HTTPS (``True``: the system's CAs, or a context).
    ``connect_timeout_s`` bounds making a connection.  Use from one event loop; :meth:`aclose` at the end.
    """

    def __init__(self, *, max_response_bytes: int, verify: bool | ssl.SSLContext = True,
                 connect_timeout_s: float = 5.0, max_idle: int = MAX_IDLE) -> None:
        self._max_bytes = max_response_bytes
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._connect_timeout_s = connect_timeout_s
        self._max_idle = max_idle
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        #: the one timer of the deadlines of the requests in flight, and when it fires (the loop's clock)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def request(self, base: str, method: str, target: bytes, headers: Iterable[tuple[bytes, bytes]],
                      body: bytes, deadline: float = math.inf) -> Answer:
        """One request to the replica at ``base``; ``target`` is the percent-encoded path and query.
        ``deadline`` (the loop's clock) bounds it all, connecting included: :class:`TimeoutError` after it."""
        origin = self._origin(base)
        lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", origin.authority, b"\r\n", _FIXED]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        lines += [b"content-length: ", str(len(body)).encode("ascii"), b"\r\n\r\n"]
        if len(body) <= _JOIN_BELOW:  # one write (one system call) for the usual small request
            lines.append(body)
            data = [b"".join(lines)]
        else:
            data = [b"".join(lines), body]
        head_only = method == "HEAD"
        conn = self._take(origin)
        if conn is not None:
            try:
                return await self._exchange(origin, conn, data, head_only, deadline)
            except ConnectionFailed:
                pass  # the replica closed the kept connection meanwhile: once more on a new connection
        return await self._exchange(origin, await self._connect(origin, deadline), data, head_only, deadline)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()

    # -- internals -------------------------------------------------------------------------------------------
    def _origin(self, base: str) -> _Origin:
        origin = self._origins.get(base)
        if origin is None:
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise MlportError(f"a replica's address is not an http(s) URL: {base!r}", ErrorCode.INTERNAL)
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            origin = _Origin(parts.hostname, port, tls, parts.netloc.encode("ascii"))
            if len(self._origins) > 4096:
                self._origins.clear()
            self._origins[base] = origin
        return origin

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self, origin: _Origin, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        max_bytes = self._max_bytes
        until = min(loop.time() + self._connect_timeout_s, deadline)
        try:
            async with asyncio.timeout_at(until):
                _, conn = await loop.create_connection(lambda: _Connection(max_bytes), origin.host, origin.port,
                                                       ssl=self._context() if origin.tls else None)
        except TimeoutError:
            if until >= deadline:
                raise
            raise ConnectionFailed(f"no connection within {self._connect_timeout_s:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionFailed(str(exc) or type(exc).__name__) from None
        return conn

    async def _exchange(self, origin: _Origin, conn: _Connection, data: list[bytes], head_only: bool,
                        deadline: float) -> Answer:
        self._busy.add(conn)
        if deadline < self._timer_at:
            self._arm(deadline)
        try:
            answer = await conn.send(data, head_only, deadline)
        except BaseException:
            conn.close()  # cancelled, past its deadline or failed: the connection's state is unknown
            raise
        finally:
            conn.deadline = math.inf
            self._busy.discard(conn)
        if not conn.closed:
            idle = self._idle.setdefault(origin, deque())
            if len(idle) < self._max_idle:
                idle.append(conn)
            else:
                conn.close()
        return answer

    def _arm(self, at: float) -> None:
        """The deadlines' timer, to fire at ``at`` (earlier than it was set for)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(at, self._expire)

    def _expire(self) -> None:
        """Fail the requests past their deadline; the timer again for the earliest deadline still ahead."""
        self._timer, self._timer_at = None, math.inf
        now = asyncio.get_running_loop().time()
        ahead = math.inf
        for conn in list(self._busy):
            if conn.deadline <= now + _EARLY_S:
                conn.expire()
            elif conn.deadline < ahead:
                ahead = conn.deadline
        if ahead < math.inf:
            self._arm(ahead)

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._ssl = self._verify
            else:
                self._ssl = ssl.create_default_context()
                if not self._verify:
                    self._ssl.check_hostname = False
                    self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl
