"""Early refusals: OIP infer requests to a model whose queue is full refused by the HTTP protocol, before the app.

uvicorn hands every request to the app in a task of its own, through its ASGI objects; for a refusal that
machinery costs several times the refusal itself, and in a storm (hundreds of clients meeting a full queue in
the same instant) each refusal waits for all those before it.  The runtime's protocol
(:mod:`mlport.protocols.http.lane`) holds the body of an OIP infer request
(``POST /v2/models/{name}[/versions/{v}]/infer``); while the server's gates have refused requests lately
(:class:`mlport.runtime.admission.Refusals`, so that no request pays for the look otherwise), once the body is
all in, a request its model would refuse at the default priority is refused on the spot
(:func:`refusal_answer`, by :func:`mlport.protocols.refusal.refuse_unread`) with the answer the app gives: the
same status (503, or 429 as configured), ``Retry-After``, ``x-request-id`` and JSON error.

Not refused early (it goes on to be read and run, or refused, as usual): a request whose body mentions
``priority`` (it may outrank a waiting one), one larger than :data:`HOLD_MAX_BYTES`, one with a request id the
app must judge, one the queue has room for by the time its body is in, and one to a model whose requests are
logged.  The JSON access log (``--access-log-format json``) has its line for an early refusal as for any
refusal.
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass, field

import httptools

from mlport.core.ids import new_request_id
from mlport.protocols.http.fast import INFER_PATH, failure_answer, log_failure
from mlport.protocols.refusal import refuse_unread
from mlport.protocols.service import InferenceService

__all__ = ["HOLD_MAX_BYTES", "Held", "answer_bytes", "infer_target", "refusal_answer"]

#: Bodies held for an early refusal, at most; a larger one goes to the app as it comes.
HOLD_MAX_BYTES = 64 * 1024
_MAX_REQUEST_ID = 128
#: What a header value may not hold (as uvicorn checks the app's headers).
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in http.HTTPStatus}


@dataclass(slots=True)
class Held:
    """An OIP infer request whose body is held by the protocol: its path, model, version and body so far."""

    path: str
    name: str
    version: str | None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def body(self) -> bytes:
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def infer_target(url: bytes) -> tuple[str, str, str | None] | None:
    """``(path, model, version)`` of an OIP infer URL; ``None`` for any other (or a percent-encoded one)."""
    try:
        path = httptools.parse_url(url).path.decode("ascii")
    except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
        return None
    if "%" in path:
        return None
    found = INFER_PATH.fullmatch(path)
    return None if found is None else (path, found[1], found[2])


def refusal_answer(service: InferenceService, held: Held, headers: list[tuple[bytes, bytes]],
                   default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes | None:
    """The whole HTTP answer of an early refusal of ``held`` (``headers``: the request's), or ``None`` when the
    request goes to the app after all."""
    if held.size > HOLD_MAX_BYTES:
        return None
    body = held.body()
    if b"priority" in body:
        return None
    rid: bytes | None = None
    for name, value in headers:
        if name == b"x-request-id":
            rid = value
    if rid is not None and (len(rid) > _MAX_REQUEST_ID or _BAD_VALUE.search(rid) is not None):
        return None  # the app says what such an id gets
    request_id = rid.decode("latin-1") if rid else new_request_id()
    refusal = refuse_unread(service, held.name, held.version, "v2", request_id)
    if refusal is None:
        return None
    status, answer_headers, payload = failure_answer(refusal, request_id)
    log_failure(request_id, "POST", held.path, status, refusal)
    return answer_bytes(status, default_headers, answer_headers, payload, keep_alive)


def answer_bytes(status: int, default_headers: list[tuple[bytes, bytes]], headers: list[tuple[bytes, bytes]],
                 body: bytes, keep_alive: bool) -> bytes:
    """An HTTP/1.1 answer, head and body (the server's default headers first, as uvicorn writes them)."""
    lines = [_STATUS_LINES[status]]
    lines += [b"%s: %s\r\n" % header for header in default_headers]
    lines += [b"%s: %s\r\n" % header for header in headers]
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines += [b"\r\n", body]
    return b"".join(lines)
