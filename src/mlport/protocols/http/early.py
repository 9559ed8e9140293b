"""The runtime's HTTP/1.1 protocol: OIP infer requests to a model whose queue is full refused before the app.

uvicorn hands every request to the app in a task of its own, through its ASGI objects; for a refusal that
machinery costs several times the refusal itself, and in a storm (hundreds of clients meeting a full queue in
the same instant) each refusal waits for all those before it.  Here, when an OIP infer request's head arrives
(``POST /v2/models/{name}[/versions/{v}]/infer``) and its model would refuse a request of the default
priority (:func:`mlport.protocols.refusal.would_refuse`; looked at only while the server's gates have refused
requests lately, :class:`mlport.runtime.admission.Refusals`, so that no request pays for it otherwise), its
body is held instead of being handed on; once it is all in, the request is refused on the spot
(:func:`mlport.protocols.refusal.refuse_unread`) with the answer the app gives: the same status (503, or 429 as
configured), ``Retry-After``, ``x-request-id`` and JSON error.

Anything else goes to the app as uvicorn would hand it: a request whose body mentions ``priority`` (it may
outrank a waiting one), one larger than :data:`HOLD_MAX_BYTES`, one that expects ``100 Continue``, one
pipelined behind another answer still being written, one the queue has room for by the time its body is in,
and every request while uvicorn writes its own (text) access log, which only the app's answers reach.  The
JSON access log (``--access-log-format json``) has its line for an early refusal as for any refusal.
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass, field

import httptools

from mlport.core.ids import new_request_id
from mlport.protocols.http.fast import INFER_PATH, failure_answer, log_failure
from mlport.protocols.http.wire import CoalescingHttpProtocol
from mlport.protocols.refusal import refuse_unread, would_refuse
from mlport.protocols.service import InferenceService
from mlport.runtime.admission import Refusals

__all__ = ["HOLD_MAX_BYTES", "RefusingHttpProtocol", "refusing_protocol"]

#: Bodies held for an early refusal, at most; a larger one goes to the app as it comes.
HOLD_MAX_BYTES = 64 * 1024
_MAX_REQUEST_ID = 128
#: What a header value may not hold (as uvicorn checks the app's headers).
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in http.HTTPStatus}


@dataclass(slots=True)
class _Held:
    name: str
    version: str | None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


def _target(url: bytes) -> tuple[str, str | None] | None:
    """``(model, version)`` of an OIP infer URL; ``None`` for any other (or a percent-encoded one)."""
    try:
        path = httptools.parse_url(url).path.decode("ascii")
    except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
        return None
    if "%" in path:
        return None
    found = INFER_PATH.fullmatch(path)
    return None if found is None else (found[1], found[2])


class RefusingHttpProtocol(CoalescingHttpProtocol):
    """:class:`CoalescingHttpProtocol` with early refusals (see the module's description); :attr:`service` is set
    by :func:`refusing_protocol`."""

    service: InferenceService | None = None
    #: whether the service's gates refused lately: only then are requests looked at before the app
    refusals: Refusals | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._held: _Held | None = None

    # -- httptools callbacks ---------------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        service, refusals = self.service, self.refusals
        if service is not None and refusals is not None and refusals.lately and self._may_hold():
            target = _target(self.url)
            if target is not None and would_refuse(service, *target):
                self._held = _Held(*target)
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        held = self._held
        if held is None:
            super().on_body(body)
            return
        held.chunks.append(body)
        held.size += len(body)
        if held.size > HOLD_MAX_BYTES:
            self._hand_on(held)

    def on_message_complete(self) -> None:
        held = self._held
        if held is not None:
            answer = self._refusal(held)
            if answer is not None:
                self._answer(answer)
                return
            self._hand_on(held)
        super().on_message_complete()

    # -- inside ----------------------------------------------------------------------------------------------
    def _may_hold(self) -> bool:
        cycle = self.cycle
        return (self.parser.get_method() == b"POST" and not self.expect_100_continue and not self.pipeline
                and (cycle is None or cycle.response_complete) and not self.access_log
                and not self.parser.should_upgrade())

    def _hand_on(self, held: _Held) -> None:
        """The held request to the app, as if its head had just been read and its body were arriving."""
        self._held = None
        super().on_headers_complete()
        for chunk in held.chunks:
            super().on_body(chunk)

    def _refusal(self, held: _Held) -> bytes | None:
        """The whole HTTP answer of the refusal, or ``None`` when the request goes to the app after all."""
        assert self.service is not None
        body = held.chunks[0] if len(held.chunks) == 1 else b"".join(held.chunks)
        if b"priority" in body:
            return None
        rid: bytes | None = None
        for name, value in self.headers:
            if name == b"x-request-id":
                rid = value
        if rid is not None and (len(rid) > _MAX_REQUEST_ID or _BAD_VALUE.search(rid) is not None):
            return None  # the app says what such an id gets
        request_id = rid.decode("latin-1") if rid else new_request_id()
        refusal = refuse_unread(self.service, held.name, held.version, "v2", request_id)
        if refusal is None:
            return None
        status, headers, payload = failure_answer(refusal, request_id)
        log_failure(request_id, "POST", self.url.decode("latin-1"), status, refusal)
        lines = [_STATUS_LINES[status]]
        lines += [b"%s: %s\r\n" % header for header in (*self.server_state.default_headers, *headers)]
        if not self._keep_alive():
            lines.append(b"connection: close\r\n")
        lines += [b"\r\n", payload]
        return b"".join(lines)

    def _keep_alive(self) -> bool:
        return self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()

    def _answer(self, answer: bytes) -> None:
        self._held = None
        keep = self._keep_alive()
        self.transport.write(answer)
        if not keep:
            self.transport.close()
        self.on_response_complete()  # counted; the keep-alive timer armed; what is held written


def refusing_protocol(service: InferenceService) -> type[RefusingHttpProtocol]:
    """The protocol class for uvicorn (``Config(http=...)``) that refuses early for ``service``."""
    return type("RefusingHttpProtocol", (RefusingHttpProtocol,),
                {"service": service, "refusals": service.manager.admission.refusals})

