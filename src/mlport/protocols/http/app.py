"""Builds the ASGI application: every HTTP API over one :class:`InferenceService`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.core import heap
from mlport.errors import MlportError
from mlport.observability.metrics import CONTENT_TYPE_LATEST
from mlport.protocols.http import routes_drift, routes_explain, routes_native, routes_oip
from mlport.protocols.http.body import json_response
from mlport.protocols.http.fast import (
    INFER_PATH,
    Receive,
    Scope,
    Send,
    error_answer,
    log_failure,
    retry_after,
    serve_infer,
)
from mlport.protocols.http.state import AppState, request_id, state_of

__all__ = ["Companion", "build_app"]

log = logging.getLogger(__name__)


async def _mlport_error(request: Request, exc: Exception) -> Response:
    rid = request_id(request)
    status, body = error_answer(exc, rid)
    log_failure(rid, request.method, request.url.path, status, exc)
    headers = {"x-request-id": rid}
    retry = retry_after(exc)
    if retry is not None:
        headers["retry-after"] = retry
    return Response(body, status, headers, media_type="application/json")


_unexpected = _mlport_error


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    detail = getattr(exc, "detail", "not found")
    if status == 404:
        detail = f"no route {request.method} {request.url.path}"
    return json_response({"error": detail}, status)


async def _metrics(request: Request) -> Response:
    return Response(state_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _poll(state: AppState) -> None:
    """The first scan and load, then periodic rescans for new, changed or removed versions."""
    try:
        await state.manager.sync()
    except Exception:
        log.exception("the first repository scan failed")
    state.manager.mark_scanned()
    # what is alive now (libraries, loaded models) lives as long as the server: the garbage collector's
    # full passes need not walk it again and again; young collections far apart (see core.heap)
    heap.settle()
    while state.poll_interval_s > 0:
        await asyncio.sleep(state.poll_interval_s)
        try:
            await state.manager.sync()
        except Exception:
            log.exception("repository scan failed; serving what is loaded")


class _App(Starlette):
    """Starlette, with the OIP infer route answered straight from ASGI (see :mod:`fast`)."""

    mlport: AppState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            found = INFER_PATH.fullmatch(scope["path"])
            if found is not None:
                await serve_infer(self.mlport, scope, receive, send, found[1], found[2])
                return
        await super().__call__(scope, receive, send)


#: Something served beside HTTP on the same event loop (the gRPC server): entered at startup, exited at shutdown.
Companion = Callable[[], AbstractAsyncContextManager[object]]


def build_app(
    state: AppState, extra_routes: list[Route] | None = None, companions: Sequence[Companion] = ()
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_poll(state), name="mlport-repository-poll")
        running = contextlib.AsyncExitStack()
        try:
            for companion in companions:
                await running.enter_async_context(companion())
            yield
        finally:
            await running.aclose()  # companions drain their own in-flight calls first
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await state.manager.close()
            state.service.close()

    from mlport.protocols.http import docs, media, pages, routes_tfserving  # noqa: F401  (media registers codecs)

    routes: list[Route] = [
        *routes_native.routes,
        *routes_drift.routes,
        *routes_oip.routes,
        *routes_explain.routes,
        *routes_tfserving.routes,
        *docs.routes,
        *pages.routes,
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/health/live", routes_oip.live, methods=["GET"]),
        Route("/health/ready", routes_oip.ready, methods=["GET"]),
        *(extra_routes or []),
    ]
    app = _App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={MlportError: _mlport_error, Exception: _unexpected, 404: _not_found, 405: _not_found},
    )
    app.state.mlport = app.mlport = state
    return app

