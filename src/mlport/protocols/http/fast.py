"""The ASGI fast path of the hottest route, OIP ``POST /v2/models/{name}[/versions/{v}]/infer``.

The request goes straight from the ASGI scope to :func:`routes_oip.run_infer`, without Starlette's request,
routing and response objects, which cost more than a small model's prediction.  It answers exactly as
the Starlette route does (same codec, same errors and statuses, same headers); any other request, or
one the fast path does not take (an app mounted under a root path), goes through Starlette.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from mlport.core.ids import new_request_id
from mlport.errors import MlportError, RetryLater
from mlport.protocols.http.body import read_asgi_body
from mlport.protocols.http.errors import HTTP_STATUS
from mlport.protocols.http.routes_oip import parse_header_length, parse_timeout, run_infer
from mlport.protocols.http.state import AppState
from mlport.protocols.oip import EncodedResponse

__all__ = ["INFER_PATH", "InferHead", "Receive", "Scope", "Send", "answered", "error_answer", "failed",
           "failure_answer", "log_failure", "retry_after", "serve_infer"]

log = logging.getLogger("mlport.protocols.http.app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The paths of the infer route (path parameters match as Starlette's default converter: no '/').
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")

_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_MAX_REQUEST_ID = 128


def log_failure(rid: str, method: str, path: str, status: int, exc: BaseException) -> None:
    """One log line per failed request, with its request id (never a traceback for the client's errors)."""
    if isinstance(exc, MlportError):
        if getattr(exc, "quiet", False):  # overload refusals: counted by the metrics, not a line each
            log.debug("request %s %s %s refused (%d): %s", rid, method, path, status, exc.message)
        elif status >= 500:
            log.warning("request %s %s %s failed (%d): %s", rid, method, path, status, exc.message)
        else:
            log.info("request %s %s %s refused (%d): %s", rid, method, path, status, exc.message)
    else:
        log.error("request %s %s %s failed", rid, method, path, exc_info=exc)


def error_answer(exc: BaseException, rid: str) -> tuple[int, bytes]:
    """Status and ``{"error": ...}`` body of a failure (internal errors name only the request id)."""
    if isinstance(exc, MlportError):
        return HTTP_STATUS[exc.code], orjson.dumps({"error": exc.message})
    return 500, orjson.dumps({"error": f"internal error (request id {rid})"})


def failure_answer(exc: BaseException, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a failure's answer (:func:`error_answer`, its request id, ``Retry-After``)."""
    status, payload = error_answer(exc, rid)
    headers = [(b"content-type", _JSON), (b"content-length", str(len(payload)).encode()),
               (b"x-request-id", rid.encode("latin-1", "replace"))]
    retry = retry_after(exc)
    if retry is not None:
        headers.append((b"retry-after", retry.encode()))
    return status, headers, payload


def retry_after(exc: BaseException) -> str | None:
    """The ``Retry-After`` header of a failure worth retrying soon (a model loading, a full queue), in whole
    seconds."""
    if isinstance(exc, RetryLater):
        return str(max(1, math.ceil(exc.retry_after_s)))
    return None


class InferHead:
    """What the infer route reads from a request's headers (lower-case names, as ASGI and uvicorn give them)."""

    __slots__ = ("declared", "header_length", "request_id", "routing_key", "timeout")

    def __init__(self, headers: Iterable[tuple[bytes, bytes]], st: AppState) -> None:
        declared = header_length = rid = routing_key = timeout = None
        for key, value in headers:
            if key == b"content-length":
                declared = value
            elif key == b"inference-header-content-length":
                header_length = value
            elif key == b"x-request-id":
                rid = value
            elif key == b"x-routing-key":
                routing_key = value
            elif key == b"x-request-timeout":
                timeout = value
        self.declared: bytes | None = declared
        self.header_length: bytes | None = header_length
        self.routing_key: bytes | None = routing_key
        self.timeout: bytes | None = timeout
        request_id = rid.decode("latin-1") if rid is not None else None
        if request_id is None and st.service.access_log is not None:
            request_id = new_request_id()  # the access log's line, the answer's id and an error's x-request-id agree
        self.request_id: str | None = request_id

    def arguments(self) -> tuple[int | None, str | None, str | None, float | None]:
        """:func:`routes_oip.run_infer`'s header length, request id, routing key and timeout (checked)."""
        routing_key = self.routing_key
        return (parse_header_length(self.header_length), self.request_id,
                routing_key.decode("latin-1") if routing_key is not None else None,
                None if self.timeout is None else parse_timeout(self.timeout))


def answered(encoded: EncodedResponse) -> list[tuple[bytes, bytes]]:
    """The headers of a successful answer."""
    headers = [(b"content-length", str(len(encoded.body)).encode())]
    if encoded.header_length is None:
        headers.append((b"content-type", _JSON))
    else:
        headers.append((b"content-type", _OCTETS))
        headers.append((b"inference-header-content-length", str(encoded.header_length).encode()))
    return headers


def failed(exc: BaseException, head: InferHead, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a failed infer request, logged with its request id."""
    request_id = head.request_id
    rid = request_id if request_id and len(request_id) <= _MAX_REQUEST_ID else new_request_id()
    status, headers, payload = failure_answer(exc, rid)
    log_failure(rid, "POST", path, status, exc)
    return status, headers, payload


async def serve_infer(
    st: AppState, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    head = InferHead(scope["headers"], st)
    try:
        body = await read_asgi_body(receive, head.declared, st.limits.max_body_bytes)
        if body is None:
            return
        encoded = await run_infer(st, name, version, body, *head.arguments(), receive)
    except Exception as exc:
        status, headers, payload = failed(exc, head, scope["path"])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    await send({"type": "http.response.start", "status": 200, "headers": answered(encoded)})
    await send({"type": "http.response.body", "body": encoded.body})
