"""The gateway's HTTP entry: ``/deployments/{name}/{path}`` answered straight from the ASGI scope.

Starlette's routing, request and response objects cost more than the forwarding itself, so the hub's app
takes gateway requests before them (except those of the hub's own routes under ``/deployments/{name}/``,
such as ``drift``, and requests with a cookie, which the console's guard sees first): the caller's token
(:class:`mlport.hub.tokencache.TokenCache`), the ``predict`` right on the deployment, the deployment's
existence, then :meth:`mlport.deploy.gateway.Gateway.answer`.
The answers (errors included) are those the Starlette route gave: the same statuses, JSON bodies and
``WWW-Authenticate: Bearer`` on 401.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from mlport.auth import Action, Principal, authorize
from mlport.deploy.gateway import Forwarded
from mlport.errors import ErrorCode, MlportError
from mlport.hub.service import Hub
from mlport.hub.tokencache import TokenCache
from mlport.protocols.http.body import read_asgi_body
from mlport.protocols.http.errors import HTTP_STATUS
from mlport.protocols.http.routes_oip import client_gone

__all__ = ["GATEWAY_METHODS", "GATEWAY_ROUTE", "GatewayHTTP", "split_gateway_path"]

log = logging.getLogger("mlport.hub")

#: The gateway's Starlette route (the hub's other routes under /deployments/{name}/ come first, as there).
GATEWAY_ROUTE = "/deployments/{name}/{path:path}"
#: The methods the gateway forwards (others get Starlette's 405).
GATEWAY_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"})
_PREFIX = "/deployments/"
_JSON = b"application/json"
#: Principals' rights on deployments remembered, at most (all are forgotten when more come).
_MAX_ALLOWED = 4096


def split_gateway_path(path: str) -> tuple[str, str] | None:
    """``(deployment, rest)`` of ``/deployments/{deployment}/{rest}``; ``None`` for any other path."""
    if not path.startswith(_PREFIX):
        return None
    name, slash, rest = path[len(_PREFIX):].partition("/")
    if not name or not slash:
        return None
    return name, rest


async def _read_body(receive: Callable[[], Awaitable[MutableMapping[str, Any]]], declared: bytes | None,
                     limit: int) -> bytes:
    """The whole body within ``limit``; :class:`ClientDisconnect` when the client went away first."""
    body = await read_asgi_body(receive, declared, limit)
    if body is None:
        raise ClientDisconnect()
    return body


class GatewayHTTP:
    """Answers one gateway request on the ASGI interface; returns the status and the version that served."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.tokens = TokenCache(hub.tokens, hub.users)
        #: (id of a principal, deployment) -> that principal, when it may predict on the deployment: a principal
        #: lives as long as its token cache entry, and its rights do not change meanwhile
        self._allowed: dict[tuple[int, str], Principal] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str, rest: str,
                       request_id: str = "") -> Forwarded:
        """Answer the request; ``request_id``: the ``x-request-id`` of the answer when the replica gave none."""
        authorization: bytes | None = None
        declared: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"content-length":
                declared = value
        try:
            self._authorize(self.tokens.principal(authorization), name)
            if not any(d.name == name for d in self.hub.deployments.deployments()):
                raise MlportError(f"deployment {name!r} not found", ErrorCode.NOT_FOUND)
            gateway = self.hub.gateway
            limit = gateway.max_body_bytes
            answer = await gateway.answer(scope["method"], name, rest, scope.get("query_string", b""),
                                          scope["headers"], lambda: _read_body(receive, declared, limit),
                                          functools.partial(client_gone, receive))
        except MlportError as exc:
            status = HTTP_STATUS.get(exc.code, 500)
            headers = [(b"content-type", _JSON)]
            if status == 401:
                headers.append((b"www-authenticate", b"Bearer"))
            answer = Forwarded(status, headers, orjson.dumps({"error": exc.message}))
        except Exception as exc:
            ref = uuid.uuid4().hex[:12]
            log.error("internal error %s on %s %s", ref, scope["method"], scope["path"], exc_info=exc)
            answer = Forwarded(500, [(b"content-type", _JSON)],
                               orjson.dumps({"error": f"internal error (reference {ref} in the hub log)"}))
        headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode("ascii"))]
        if request_id and not any(k == b"x-request-id" for k, _ in answer.headers):
            headers.append((b"x-request-id", request_id.encode("latin-1", "replace")))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        return answer

    def _authorize(self, principal: Principal, name: str) -> None:
        """:func:`mlport.auth.authorize` for ``predict`` on deployment ``name``, remembered for the principal."""
        key = (id(principal), name)
        if self._allowed.get(key) is principal:
            return
        authorize(principal, Action.PREDICT, deployment=name)
        if len(self._allowed) >= _MAX_ALLOWED:
            self._allowed = {}
        self._allowed[key] = principal
