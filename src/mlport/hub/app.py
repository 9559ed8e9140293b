"""The hub's ASGI app: management API, gateway, health, metrics and OpenAPI document."""

from __future__ import annotations

import functools
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlport.core import heap
from mlport.errors import MlportError
from mlport.hub.api import api_routes, json_response
from mlport.hub.console.pages import console_routes, public_names
from mlport.hub.console.security import BrowserGuard
from mlport.hub.console.sessions import SessionStore
from mlport.hub.gatewaygrpc import GRACE_S, start_grpc_gateway
from mlport.hub.gatewayhttp import GATEWAY_METHODS, GATEWAY_ROUTE, GatewayHTTP, split_gateway_path
from mlport.hub.observe import gateway_request_id, sd_routes, write_gateway_line
from mlport.hub.openapi import build_openapi
from mlport.hub.presets import preset_routes
from mlport.hub.service import Hub
from mlport.observability.access import AccessLog
from mlport.observability.metrics import disable_created_series
from mlport.protocols.http.errors import HTTP_STATUS

__all__ = ["build_app"]

log = logging.getLogger("mlport.hub")

#: Labelled gateway series kept at hand, at most (all are dropped from the cache when more come).
_MAX_CHILDREN = 4096


async def _mlport_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MlportError)
    status = HTTP_STATUS.get(exc.code, 500)
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    resp = json_response({"error": exc.message}, status)
    if headers:
        resp.headers.update(headers)
    return resp


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_response({"error": exc.detail}, exc.status_code)


async def _internal(request: Request, exc: Exception) -> Response:
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
    return json_response({"error": f"internal error (reference {ref} in the hub log)"}, 500)


class _Metrics:
    """Request counts and latency of the hub, by route kind, and of the gateway by deployment."""

    def __init__(self) -> None:
        disable_created_series()
        self.registry = CollectorRegistry()
        self.requests = Counter("mlport_hub_requests", "Requests the hub answered", ["kind", "status"],
                                registry=self.registry)
        self.gateway = Counter("mlport_hub_gateway_requests", "Gateway requests by deployment and version",
                               ["deployment", "version", "status"], registry=self.registry)
        self.gateway_seconds = Histogram("mlport_hub_gateway_request_seconds", "Gateway request latency",
                                         ["deployment", "version"], registry=self.registry)

        #: the labelled series of a (deployment, version, status): a label lookup costs more than the count
        #: itself (the series are never removed, so a kept child is always the registry's)
        self._children = functools.lru_cache(maxsize=_MAX_CHILDREN)(self._series)

    def _series(self, name: str, version: str, status: str) -> tuple[Counter, Histogram, Counter]:
        return (self.gateway.labels(name, version, status), self.gateway_seconds.labels(name, version),
                self.requests.labels("gateway", status))

    def count_gateway(self, name: str, version: str, status: str, started: float) -> None:
        """One gateway answer (``name``: an existing deployment or '-'; ``status``: HTTP's or gRPC's code)."""
        count, seconds, requests = self._children(name, version, status)
        count.inc()
        seconds.observe(time.perf_counter() - started)
        requests.inc()


class _GatewayEntry:
    """Gateway requests without a cookie, answered before Starlette's middlewares and routing
    (:mod:`mlport.hub.gatewayhttp`), counted and logged as :class:`_Observe` does for the others."""

    def __init__(self, metrics: _Metrics, hub: Hub, access_log: AccessLog | None,
                 reserved: Sequence[Route] = ()) -> None:
        self.metrics = metrics
        self.hub = hub
        self.access_log = access_log
        self.gateway = GatewayHTTP(hub)
        #: the hub's own routes under /deployments/{name}/ (Starlette's, matched before the gateway's)
        self.reserved = tuple(reserved)
        #: the path after /deployments/{name}/ of those that have a fixed one: a request whose path ends
        #: otherwise cannot be theirs, so it need not be matched against them (the others always are)
        self._tails = frozenset(tail for tail in map(_fixed_tail, self.reserved) if tail is not None)
        self._any_tail = any(_fixed_tail(r) is None for r in self.reserved)

    def take(self, scope: Scope) -> tuple[str, str] | None:
        """``(deployment, path)`` of an HTTP request answered here; None for the others."""
        split = split_gateway_path(scope["path"]) if scope["method"] in GATEWAY_METHODS else None
        # a request with a cookie goes through the console's guard (sessions, CSRF, Host and Origin checks)
        if split is None or _has_cookie(scope["headers"]) or self._reserved(scope, split[1]):
            return None
        return split

    def _reserved(self, scope: Scope, rest: str) -> bool:
        """Whether one of the hub's own routes under /deployments/{name}/ answers this request."""
        if not self._any_tail and rest not in self._tails:
            return False
        return any(r.matches(scope)[0] is Match.FULL for r in self.reserved)

    async def serve(self, scope: Scope, receive: Receive, send: Send, name: str, rest: str) -> None:
        started = time.perf_counter()
        rid = gateway_request_id(scope) if self.access_log is not None else ""
        status, version, served = 500, "", False
        try:
            answer = await self.gateway(scope, receive, send, name, rest, rid)
            status, version = answer.status, "" if answer.version is None else str(answer.version)
            served = answer.version is not None  # a version of the deployment answered: it exists
        finally:
            self.count(scope["path"], name, rid, version, status, started, served)

    def count(self, path: str, name: str, rid: str, version: str, status: int, started: float,
              exists: bool = False) -> None:
        # only deployments that exist are labels: unknown names must not grow the metric's label set
        if not exists and not any(d.name == name for d in self.hub.deployments.deployments()):
            name = "-"
        self.metrics.count_gateway(name, version, str(status), started)
        if self.access_log is not None:
            write_gateway_line(self.access_log, self.hub, path, rid, version, status, started)


class _HubApp(Starlette):
    """The hub's Starlette app, which hands the gateway's requests to :class:`_GatewayEntry` first."""

    gateway_entry: _GatewayEntry | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self.gateway_entry
        if entry is not None and scope["type"] == "http":
            split = entry.take(scope)
            if split is not None:
                await entry.serve(scope, receive, send, *split)
                return
        await super().__call__(scope, receive, send)


class _Observe:
    """Counts every answer Starlette gives; gateway answers (requests with a cookie, which the console's
    guard sees first) also by deployment and the version that served them, with their access-log lines."""

    def __init__(self, app: ASGIApp, entry: _GatewayEntry) -> None:
        self.app = app
        self.entry = entry
        self.metrics = entry.metrics
        self.access_log = entry.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        started = time.perf_counter()
        status = 500
        version = ""
        gateway = path.startswith("/deployments/")
        rid = gateway_request_id(scope) if gateway and self.access_log is not None else ""

        async def send_wrapped(message: Message) -> None:
            nonlocal status, version
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                for key, value in headers:
                    if key == b"x-mlport-version":
                        version = value.decode("latin-1")
                if rid and not any(key == b"x-request-id" for key, _ in headers):
                    message["headers"] = [*headers, (b"x-request-id", rid.encode("latin-1", "replace"))]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            if gateway:
                self.entry.count(path, path.split("/", 3)[2], rid, version, status, started)
            else:
                kind = "api" if path.startswith("/api/") or path.startswith("/auth/") else "other"
                self.metrics.requests.labels(kind, str(status)).inc()


def _has_cookie(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for key, _ in headers:  # noqa: SIM110 (a loop costs less than a generator, on every request)
        if key == b"cookie":
            return True
    return False


def _fixed_tail(route: Route) -> str | None:
    """The path of ``route`` after ``/deployments/{name}/`` when it has no parameter; None otherwise."""
    head, _, tail = route.path.partition("/deployments/{name}/")
    return tail if not head and tail and "{" not in tail else None


def build_app(hub: Hub, access_log: AccessLog | None = None) -> Starlette:
    """The hub's app; ``access_log``: where gateway requests' JSON lines go (``None``: nowhere)."""
    metrics = _Metrics()

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok", "deployments": len(hub.deployments.deployments()),
                     "uptime_s": round(time.time() - hub.started_at, 1)})

    async def metrics_endpoint(request: Request) -> Response:
        page = generate_latest(metrics.registry) + generate_latest(hub.admission.registry)
        return Response(page, media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return json_response(build_openapi())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        grpc_gateway = None
        # what is alive after start-up lives as long as the hub: the collector's full passes (pauses in the
        # gateway's tail latency) need not walk it again and again; young collections far apart (see core.heap)
        gc.collect()
        heap.settle()
        try:
            grpc_gateway = await start_grpc_gateway(hub, metrics.count_gateway)
            yield
        finally:
            if grpc_gateway is not None:
                await grpc_gateway.stop(GRACE_S)
            await hub.stop()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *console_routes(),
        *sd_routes(),
        *api_routes(),
        *preset_routes(hub),
    ]
    app = _HubApp(routes=routes, lifespan=lifespan,
                    exception_handlers={MlportError: _mlport_error, HTTPException: _http_error, Exception: _internal})
    app.state.hub = hub
    sessions = SessionStore(hub.users, hub.tokens, ttl_s=hub.settings.session_ttl_s)
    app.state.sessions = sessions
    app.add_middleware(BrowserGuard, sessions=sessions, public_names=public_names(hub.settings))
    reserved = [r for r in routes if isinstance(r, Route) and r.path.startswith("/deployments/")
                and r.path != GATEWAY_ROUTE]
    app.gateway_entry = entry = _GatewayEntry(metrics, hub, access_log, reserved)
    app.add_middleware(_Observe, entry=entry)
    return app
