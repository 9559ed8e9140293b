"""The servers' HTTP/1.1 protocol for uvicorn: its httptools protocol, with an answer's head and body in one write.

uvicorn writes an answer's head to the socket as soon as the app starts the answer, and its body when the app
sends it: two system calls and two TCP segments for an answer the app has whole in hand (an inference answer,
a refusal, the gateway's forwarded answer); a system call on a loopback socket costs more than the rest of a
refusal.  The runtime (``mlport serve``) and the hub both serve HTTP/1.1 with it.  Here the writes
made during one turn of the event loop are held and written together at the end of that turn (or before the
connection is closed), or as soon as the answer is complete: the bytes and their order are unchanged, and a
streamed answer's parts still go out as they are sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpProtocol", "write_now"]

_Buffer = bytes | bytearray | memoryview


class _Coalescing(asyncio.Transport):
    """A transport whose writes are held until the end of the event loop's turn, then written at once."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[_Buffer] | None = None

    # -- writing -------------------------------------------------------------------------------------------
    def write(self, data: _Buffer) -> None:
        if not data:
            return
        held = self._held
        if held is None:
            self._held = [data]
            self._loop.call_soon(self._flush)
        else:
            held.append(data)

    def writelines(self, list_of_data: Iterable[_Buffer]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is held now."""
        self._flush()

    def write_now(self, data: _Buffer) -> None:
        """Write what is held, then ``data``, now (a whole answer: nothing to wait for)."""
        if self._held:
            self._held.append(data)
            self._flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            if len(held) == 1:
                self._transport.write(held[0])
            else:
                self._transport.writelines(held)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held or ())

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    # -- closing -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    # -- the rest, as the transport does it ------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()


def write_now(transport: asyncio.BaseTransport, data: _Buffer) -> None:
    """``data`` written now, after what ``transport`` holds (a whole answer)."""
    if isinstance(transport, _Coalescing):
        transport.write_now(data)
    else:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(data)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through :class:`_Coalescing` (``uvicorn.Config(http=...)``).

    A complete answer is written at once, when its last part is sent, before the app's work after it
    (metrics, logs) and without waiting for the end of the loop's turn."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control, addresses and TLS from the socket's own transport
        self.transport = _Coalescing(transport, self.loop)

    def on_response_complete(self) -> None:
        transport = self.transport
        if isinstance(transport, _Coalescing):
            transport.flush()
        super().on_response_complete()
