"""Reading request bodies within the size limit, and small HTTP helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from mlport.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from mlport.protocols.jsonbody import loads

__all__ = ["BodyReader", "json_response", "media_type", "parse_json", "read_asgi_body", "read_body"]


class BodyReader:
    """The one body reader: collects a request's chunks, refused with 413 as soon as they (or ``declared``, the
    Content-Length) are known to exceed ``limit``. The Starlette routes and the ASGI fast path feed it."""

    __slots__ = ("_limit", "_parts", "_total")

    def __init__(self, declared: str | bytes | None, limit: int) -> None:
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise InvalidInput("Content-Length is not a number") from None
            if size > limit:
                raise PayloadTooLarge(f"the body is {size} bytes; the limit is {limit}")
        self._limit = limit
        self._parts: list[bytes] = []
        self._total = 0

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        if self._total > self._limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {self._limit} bytes")
        self._parts.append(chunk)

    def body(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_asgi_body(receive: Callable[[], Awaitable[MutableMapping[str, Any]]], declared: bytes | None,
                         limit: int) -> bytes | None:
    """The whole body of an ASGI request, read by :class:`BodyReader` as the server receives it; ``None`` when
    the client went away first."""
    reader = BodyReader(declared, limit)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        reader.add(message.get("body", b""))
        if not message.get("more_body", False):
            return reader.body()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit``."""
    reader = BodyReader(request.headers.get("content-length"), limit)
    async for chunk in request.stream():
        reader.add(chunk)
    return reader.body()


def media_type(request: Request) -> str:
    """The request's media type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("the request body is empty; expected JSON")
    return loads(body)


def require_json(request: Request) -> None:
    mt = media_type(request)
    if mt and mt != "application/json" and not mt.endswith("+json"):
        raise UnsupportedMediaType(f"unsupported Content-Type {mt!r}; send application/json")


_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=_JSON_OPTS), status_code, headers, media_type="application/json")
