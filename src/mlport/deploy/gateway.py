"""The gateway: ``/deployments/{d}/{path}`` forwarded to a ready replica of the version the deployment's target
routes the request to.

A request is read within the body limit, routed with :func:`mlport.deploy.strategy.choose` and sent to the
least-loaded ready replica of that version through one pool of keep-alive connections
(:mod:`mlport.deploy.upstream`).  Only the headers a replica needs are forwarded (never credentials or cookies),
and only the answer's status, body, content type, OIP binary header length and request id come back, with
``x-mlport-deployment`` and ``x-mlport-version``.  :meth:`Gateway.answer` works on the ASGI request as it is
(the hub calls it without Starlette's objects); :meth:`Gateway.handle` is the same for a Starlette route.

Replicas serve the model under the deployment's name; the gateway rewrites the model name of OIP
(``/v2/models/{m}/...``), TF Serving (``/v1/models/{m}...``) and describe/eval (``/models/{m}/...``) paths
from the registry's model name or the deployment's name to the deployment's name.

A request is sent again, to another replica (or, when every replica failed, to the same set after a short wait
for a restart), only when the connection failed before an answer arrived; an answer, whatever its status, is
never retried.  For a shadow deployment a copy of the request goes to the shadow version in the background
after the live answer, best-effort and behind the live path (:mod:`mlport.deploy.shadowcopy`: at most
``shadow_max_pending`` copies pending; they go out only while few live requests are in flight and, unless
``shadow_max_cpu`` is ``None``, while the hub's process used at most that share of a core, and further ones are
dropped and counted), and both answers go to
:meth:`mlport.deploy.shadow.ShadowRecorder.record`, in batches, off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import quote

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mlport.deploy.admission_gate import DeploymentGates, Watch, retry_after_header, with_header
from mlport.deploy.deployments import Deployment, DeploymentSource
from mlport.deploy.shadow import Reply, ShadowRecorder
from mlport.deploy.shadowcopy import BUSY_CPU as SHADOW_BUSY_CPU
from mlport.deploy.shadowcopy import Pair, ShadowCopies
from mlport.deploy.strategy import choose
from mlport.deploy.upstream import ConnectionFailed, Upstream
from mlport.errors import ErrorCode, Forbidden, InvalidInput, MlportError, ModelNotReady
from mlport.protocols.http.body import read_body
from mlport.protocols.http.errors import HTTP_STATUS
from mlport.protocols.http.routes_oip import client_gone

__all__ = [
    "EndpointView",
    "Forwarded",
    "Gateway",
    "ReplicaSource",
    "ReplicaView",
    "Reply",
    "forward_path",
    "rewrite_model_name",
]

log = logging.getLogger(__name__)

#: Request headers sent on to replicas; nothing else is (no Authorization, no cookies).
FORWARD_HEADERS = ("content-type", "accept", "inference-header-content-length", "x-request-id", "x-routing-key",
                   "x-request-timeout")
_FORWARD = frozenset(h.encode("ascii") for h in FORWARD_HEADERS)
#: Answer headers given back to the client (:data:`mlport.deploy.upstream.KEPT_HEADERS`).
RETURN_HEADERS = ("content-type", "inference-header-content-length", "x-request-id")
#: Longest path forwarded, and longest routing key used.
MAX_PATH = 2048
MAX_KEY = 256
#: How long a replica whose connection failed is passed over (while another one is there).
COOLDOWN_S = 1.0
#: How long a retry waits for a restarted replica once every ready one failed.
RESTART_WAIT_S = 1.0
_POLL_S = 0.05
#: Bodies of the shadow copies queued or out, at most (besides ``shadow_max_pending`` copies).
SHADOW_MAX_PENDING_BYTES = 64 * 1024**2

_PATH_SAFE = "/:@!$&'()*+,;=~"
_CONTROL = re.compile("[\x00-\x1f\x7f]")
#: Paths of requests kept with what is sent for them (the same few paths come again and again), at most.
MAX_PATHS = 4096
_JSON = b"application/json"


# -- what the gateway needs of the controller's replicas (structural types; deployments: DeploymentSource) -

class EndpointView(Protocol):
    """A ready replica (:class:`mlport.deploy.replicas.Endpoint`)."""

    @property
    def url(self) -> str: ...

    @property
    def inflight(self) -> int: ...

    @property
    def healthy(self) -> bool: ...

    def track(self) -> AbstractContextManager[object]:
        """Count one forwarded request in flight for the duration of the block."""
        ...

    def acquire(self) -> None:
        """Count one forwarded request in flight (:meth:`release` when it ended, whatever the outcome)."""
        ...

    def release(self) -> None: ...

class ReplicaView(Protocol):
    def endpoints(self) -> Sequence[EndpointView]: ...


class ReplicaSource(Protocol):
    """The controller's side the gateway uses (:class:`mlport.deploy.controller.Controller`)."""

    def replicas(self, deployment: str, version: int) -> ReplicaView | None: ...

    async def ensure_ready(self, deployment: str, version: int, timeout_s: float) -> ReplicaView: ...


# -- paths ---------------------------------------------------------------------------------------------------

def forward_path(path: str) -> str:
    """The path sent to a replica ('/'-prefixed); :class:`InvalidInput` for '..' segments or control characters,
    :class:`Forbidden` for the replicas' model repository API (loading and unloading is the controller's)."""
    if len(path) > MAX_PATH:
        raise InvalidInput(f"the path is longer than {MAX_PATH} characters")
    if _CONTROL.search(path) is not None:
        raise InvalidInput("the path contains control characters")
    full = path if path.startswith("/") else "/" + path
    segments = full.split("/")
    if ".." in segments:
        raise InvalidInput("'..' segments are not allowed in a deployment path")
    if segments[1:3] == ["v2", "repository"]:
        raise Forbidden("the model repository API of replicas is not served through the gateway")
    return full


def rewrite_model_name(path: str, model: str, deployment: str) -> str:
    """Replace the model name in an OIP, TF Serving or describe/eval path by ``deployment`` when it is the
    registry's ``model`` name or the deployment's name already; other names are left as they are."""
    names = {model, deployment}
    seg = path.split("/")
    if len(seg) >= 4 and seg[1] in ("v1", "v2") and seg[2] == "models":
        name, colon, verb = seg[3].partition(":") if seg[1] == "v1" else (seg[3], "", "")
        if name in names:
            seg[3] = deployment + colon + verb
    elif len(seg) >= 3 and seg[1] == "models" and seg[2] in names:
        seg[2] = deployment
    return "/".join(seg)



# -- the gateway ---------------------------------------------------------------------------------------------

class _Retry(Exception):
    """The connection to a replica failed before any answer: another attempt may succeed."""


@dataclass(frozen=True)
class _Outgoing:
    method: str
    target: bytes  # percent-encoded path and query
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class Forwarded:
    """The gateway's answer to one request: the replica's (its kept headers) or the gateway's own error."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: the version that answered (None when the request failed before one was chosen)
    version: int | None = None

    def response(self) -> Response:
        return Response(self.body, self.status, {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers})


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    latency_s: float

    def reply(self) -> Reply:
        ctype = next((v for k, v in self.headers if k == b"content-type"), b"")
        return Reply(self.status, self.body, ctype.decode("latin-1"), self.latency_s)


def _named(deployment: str, version: int | None) -> list[tuple[bytes, bytes]]:
    out = [(b"x-mlport-deployment", deployment.encode("utf-8"))]
    if version is not None:
        out.append((b"x-mlport-version", str(version).encode("ascii")))
    return out


def _error(code: ErrorCode, message: str, deployment: str, version: int | None = None,
           retry_after: bytes | None = None) -> Forwarded:
    """``{"error": message}`` with the HTTP status of ``code`` (the one table of :mod:`mlport.errors` codes)."""
    headers = [(b"content-type", _JSON), *_named(deployment, version)]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    return Forwarded(HTTP_STATUS[code], headers, orjson.dumps({"error": message}), version)


@functools.lru_cache(maxsize=MAX_PATHS)
def _sent_path(path: str, model: str, deployment: str) -> tuple[str, bytes]:
    """The path sent for ``path`` (:func:`forward_path`, :func:`rewrite_model_name`) and its percent-encoded
    bytes, kept for the next request of the same path (a refused path raises, and is checked again each time)."""
    sent = rewrite_model_name(forward_path(path), model, deployment)
    return sent, quote(sent, safe=_PATH_SAFE).encode("ascii")


@functools.lru_cache(maxsize=64)
def _sticky(header: str | None) -> bytes:
    """The routing-key header's name as ASGI gives it (lower case)."""
    return (header or "x-routing-key").lower().encode("latin-1")


def _pick_headers(headers: Iterable[tuple[bytes, bytes]], sticky: bytes) -> tuple[list[tuple[bytes, bytes]],
                                                                                  bytes | None]:
    """The first value of each forwarded header, and of the routing-key header ``sticky``."""
    picked: dict[bytes, bytes] = {}
    key: bytes | None = None
    for name, value in headers:
        if name in _FORWARD and name not in picked:
            picked[name] = value
        if name == sticky and key is None:
            key = value
    return list(picked.items()), key


class Gateway:
    """Forwards requests of deployments to their replicas (see the module's description).

    ``timeout_s`` bounds a whole request (waiting for a replica included); ``retries`` is how many more
    attempts follow a connection failure.  Call :meth:`aclose` on the event loop that ran the requests.
    """

    def __init__(
        self,
        *,
        controller: ReplicaSource,
        state: DeploymentSource,
        shadow: ShadowRecorder,
        max_body_bytes: int = 64 * 1024**2,
        timeout_s: float = 60.0,
        retries: int = 2,
        rng: random.Random | None = None,
        shadow_max_pending: int = 64,
        shadow_max_cpu: float | None = SHADOW_BUSY_CPU,
        max_response_bytes: int = 256 * 1024**2,
        max_connections: int = 512,
        verify: bool | ssl.SSLContext = True,
        admission: DeploymentGates | None = None,
    ) -> None:
        if timeout_s <= 0 or retries < 0 or max_body_bytes < 0 or shadow_max_pending < 0:
            raise ValueError("timeout_s must be positive; retries, max_body_bytes and shadow_max_pending >= 0")
        self._controller = controller
        self._state = state
        self._shadow = shadow
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.retries = retries
        self._rng = rng if rng is not None else random.Random()
        self._shadow_max_pending = shadow_max_pending
        self._max_response_bytes = max_response_bytes
        #: idle connections kept per replica
        self._max_idle = max(max_connections // 2, 1)
        #: how replicas' certificates are verified when they serve HTTPS (the hub's TLS)
        self._verify = verify
        self._upstream: Upstream | None = None
        self._cooling: dict[str, float] = {}
        self._turn = 0
        self._copies: ShadowCopies[_Outgoing] = ShadowCopies(
            self._send_copy, self._record_batch, shadow, max_pending=shadow_max_pending,
            max_pending_bytes=max(SHADOW_MAX_PENDING_BYTES, max_body_bytes), max_cpu=shadow_max_cpu)
        self._closed = False
        #: the queues of deployments with admission limits (:mod:`mlport.deploy.admission_gate`)
        self.admission = admission if admission is not None else DeploymentGates()

    # -- public --------------------------------------------------------------------------------------------

    @property
    def shadow_pending(self) -> int:
        """Shadow copies queued or being sent."""
        return self._copies.pending

    async def handle(self, request: Request, deployment: str, path: str) -> Response:
        """Answer one request of a Starlette route to ``deployment`` (the caller checked the credentials)."""
        forwarded = await self.answer(request.method, deployment, path, request.scope.get("query_string", b""),
                                      request.scope["headers"], lambda: read_body(request, self.max_body_bytes),
                                      functools.partial(client_gone, request.receive))
        return forwarded.response()

    async def answer(self, method: str, deployment: str, path: str, query: bytes,
                     headers: Sequence[tuple[bytes, bytes]], read: Callable[[], Awaitable[bytes]],
                     watch: Watch | None = None) -> Forwarded:
        """Answer one request to ``deployment`` (the caller checked the credentials); ``headers`` are the ASGI
        request's (lower-case names), ``read`` reads its body within :attr:`max_body_bytes`, ``watch`` returns
        when its client went away.  Never raises."""
        version: int | None = None
        try:
            record = self._deployment(deployment)
            target = record.target
            sent, encoded = _sent_path(path, target.model, deployment)
            body = await read()
            sticky = _sticky(target.sticky_header)
            forwarded, key = _pick_headers(headers, sticky)
            route = choose(target, key=key.decode("latin-1")[:MAX_KEY] if key is not None else None,
                           rand=self._rng.random())
            version = route.serve
            out = _Outgoing(method, encoded + b"?" + query if query else encoded, forwarded, body)
            if record.policy.gated:  # through the deployment's queue first
                answer = await self.admission.run(
                    deployment, version, record.policy, lambda: len(self._ready(self._controller.replicas(
                        deployment, version))), sent, headers, body, watch,
                    lambda limit: self._live_forward(deployment, version, replace(out, headers=with_header(
                        out.headers, limit))))
            else:
                answer = await self._live_forward(deployment, version, out)
        except MlportError as exc:
            return _error(exc.code, exc.message, deployment, version, retry_after_header(exc))
        except ClientDisconnect:
            return _error(ErrorCode.INVALID_ARGUMENT, "the client went away before the request body was read",
                          deployment, version)
        except Exception:
            log.exception("gateway request to deployment %r failed", deployment)
            return _error(ErrorCode.INTERNAL, "internal error in the gateway", deployment, version)
        if route.shadow is not None:
            self._copies.offer(deployment, route.serve, route.shadow, out, len(out.body), answer.reply())
        return Forwarded(answer.status, [*answer.headers, *_named(deployment, version)], answer.body, version)

    async def aclose(self) -> None:
        """Stop the shadow copies still pending, write the shadow counts and close the connections."""
        self._closed = True
        await self._copies.aclose()
        await asyncio.to_thread(self._shadow.flush)
        if self._upstream is not None:
            upstream, self._upstream = self._upstream, None
            await upstream.aclose()

    # -- for the hub's gRPC gateway (:mod:`mlport.hub.gatewaygrpc`) -------------------------------------------
    def route(self, deployment: str, key: Callable[[str], str | None]) -> int:
        """The version that answers one request of ``deployment`` by its target's strategy (a shadow's candidate
        gets no copy here); ``key(header)`` gives the request's routing key.  NOT_FOUND for an unknown one."""
        target = self._deployment(deployment).target
        value = key((target.sticky_header or "x-routing-key").lower())
        return choose(target, key=value[:MAX_KEY] if value is not None else None, rand=self._rng.random()).serve

    async def pick(self, deployment: str, version: int, failed: set[str], deadline: float) -> EndpointView:
        """The replica for one attempt, chosen as for HTTP requests (``deadline``: on the loop's clock)."""
        return await self._endpoint(deployment, version, failed, deadline)

    def connection_failed(self, url: str) -> None:
        """The replica at ``url`` could not be reached: passed over for a moment."""
        self._cool(url)

    # -- routing -------------------------------------------------------------------------------------------

    def _deployment(self, deployment: str) -> Deployment:
        for record in self._state.deployments():
            if record.name == deployment:
                return record
        raise MlportError(f"no deployment '{deployment}'", ErrorCode.NOT_FOUND)


    def _upstream_now(self) -> Upstream:
        if self._upstream is None:
            if self._closed:
                raise ModelNotReady("the gateway is shutting down")
            self._upstream = Upstream(max_response_bytes=self._max_response_bytes, verify=self._verify,
                                      connect_timeout_s=min(self.timeout_s, 5.0), max_idle=self._max_idle)
        return self._upstream

    @staticmethod
    def _ready(replicas: ReplicaView | None) -> list[EndpointView]:
        return [e for e in replicas.endpoints() if e.healthy] if replicas is not None else []

    def _pick(self, endpoints: Sequence[EndpointView], failed: set[str]) -> EndpointView | None:
        """The least-loaded endpoint not tried yet, preferring those without a recent connection failure."""
        if len(endpoints) == 1 and not failed:  # the usual case; the one replica even when cooling
            return endpoints[0]
        usable = [e for e in endpoints if e.url not in failed]
        if not usable:
            return None
        now = time.monotonic()
        fresh = [e for e in usable if self._cooling.get(e.url, 0.0) <= now]
        pool = fresh or usable
        low = min(e.inflight for e in pool)
        ties = [e for e in pool if e.inflight == low]
        self._turn += 1
        return ties[self._turn % len(ties)]

    def _cool(self, url: str) -> None:
        now = time.monotonic()
        self._cooling = {u: t for u, t in self._cooling.items() if t > now}
        self._cooling[url] = now + COOLDOWN_S

    async def _endpoint(self, deployment: str, version: int, failed: set[str], deadline: float) -> EndpointView:
        loop = asyncio.get_running_loop()
        endpoints = self._ready(self._controller.replicas(deployment, version))
        if not endpoints and not failed:
            # nothing ready (scaled to zero, starting, restarting): ask for a replica and wait for it
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise MlportError(f"deployment '{deployment}' version {version} did not answer in time",
                                  ErrorCode.DEADLINE_EXCEEDED)
            try:
                endpoints = self._ready(await self._controller.ensure_ready(deployment, version, remaining))
            except TimeoutError:
                endpoints = []
        chosen = self._pick(endpoints, failed)
        if chosen is None and failed:
            # every ready replica failed: wait a little for a restarted (or another) one, then the same set again
            until = min(deadline, loop.time() + RESTART_WAIT_S)
            while chosen is None and loop.time() < until:
                await asyncio.sleep(_POLL_S)
                endpoints = self._ready(self._controller.replicas(deployment, version))
                chosen = self._pick(endpoints, failed)
            if chosen is None:
                chosen = self._pick(endpoints, set())
        if chosen is None:
            raise ModelNotReady(f"no replica of deployment '{deployment}' version {version} is ready")
        return chosen

    # -- forwarding ----------------------------------------------------------------------------------------

    async def _forward(self, deployment: str, version: int, out: _Outgoing) -> _Answer:
        started = time.perf_counter()  # the loop's clock may count whole milliseconds only (uvloop)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        failed: set[str] = set()
        reason = ""
        for attempt in range(self.retries + 1):
            endpoint = await self._endpoint(deployment, version, failed, deadline)
            try:
                endpoint.acquire()  # in flight until the answer (a context manager costs more, per request)
                try:
                    answer = await self._upstream_now().request(endpoint.url, out.method, out.target, out.headers,
                                                                out.body, deadline)
                finally:
                    endpoint.release()
            except ConnectionFailed as exc:
                failed.add(endpoint.url)
                self._cool(endpoint.url)
                reason = str(exc)
                log.info("deployment %r version %s: replica %s failed (%s); attempt %d of %d", deployment, version,
                         endpoint.url, reason, attempt + 1, self.retries + 1)
                continue
            except TimeoutError:
                raise MlportError(f"deployment '{deployment}' version {version} did not answer within "
                                  f"{self.timeout_s:g} s", ErrorCode.DEADLINE_EXCEEDED) from None
            return _Answer(answer.status, answer.body, answer.headers, time.perf_counter() - started)
        raise ModelNotReady(f"no replica of deployment '{deployment}' version {version} answered "
                            f"({self.retries + 1} attempts; last: {reason})")

    async def _live_forward(self, deployment: str, version: int, out: _Outgoing) -> _Answer:
        """:meth:`_forward` for a live request, counted: shadow copies wait while many are in flight."""
        self._copies.live_started()
        try:
            return await self._forward(deployment, version, out)
        finally:
            self._copies.live_ended()

    # -- shadow copies (:mod:`mlport.deploy.shadowcopy`) ----------------------------------------------------

    async def _send_copy(self, deployment: str, version: int, out: _Outgoing) -> Reply:
        return (await self._forward(deployment, version, out)).reply()

    def _record_batch(self, batch: list[Pair]) -> None:
        for deployment, primary, shadow, live, copy in batch:
            self._record_if_current(deployment, primary, shadow, live, copy)

    def _record_if_current(self, deployment: str, primary: int, shadow: int, live: Reply, copy: Reply) -> None:
        """Record the pair unless the deployment's target changed while the copy was out (a late copy would
        otherwise start the counts of the old pair afresh)."""
        try:
            target = self._deployment(deployment).target
        except MlportError:
            return
        if target.strategy != "shadow" or (target.primary, target.candidate) != (primary, shadow):
            return
        self._shadow.record(deployment, primary, shadow, live, copy)
