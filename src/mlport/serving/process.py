"""One server process: HTTP (uvicorn) and the OIP gRPC server on one event loop, over one model manager.

Both ports are bound before anything else starts, so a taken port is one clear error and the "serving on"
line appears only once the server listens.  With ``exit_on_error`` the process stops, with
:data:`~mlport.serving.EXIT_MODEL_FAILED`, when a model fails its first load.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable

import uvicorn

from mlport import __version__
from mlport.protocols.grpc.server import GrpcServer
from mlport.protocols.http.app import build_app
from mlport.protocols.http.lane import runtime_protocol
from mlport.protocols.http.server import build_state
from mlport.protocols.http.state import AppState
from mlport.protocols.tls import server_tls
from mlport.runtime.manager import ReadinessGroup, VersionState
from mlport.serving import EXIT_MODEL_FAILED
from mlport.serving.sockets import bind, check_free, url_host
from mlport.settings import Settings

__all__ = ["announce", "failed_models", "serve_process"]

log = logging.getLogger("mlport.serving")


def announce(settings: Settings, http_port: int, grpc_port: int) -> None:
    """The "serving on" line, printed once the ports are bound."""
    host = url_host(settings.host)
    tls = settings.tls_cert is not None
    grpc = f" and grpc{' (TLS)' if tls else ''} {host}:{grpc_port}" if grpc_port else ""
    workers = f" ({settings.workers} workers)" if settings.workers > 1 else ""
    print(f"mlport {__version__} serving {settings.model_path} on http{'s' if tls else ''}://{host}:{http_port}{grpc}{workers}",
          file=sys.stderr, flush=True)


def failed_models(state: AppState) -> list[str]:
    """``"model version N: reason"`` for every version that did not load."""
    return [f"model {s.name} version {v.version}: {v.reason}" for s in state.manager.all_status()
            for v in s.versions if v.state is VersionState.UNAVAILABLE]


class _Grpc:
    """The gRPC server of one process: made and started before HTTP (on the server's event loop, to which a
    grpc.aio server belongs), stopped at the app's shutdown before the models close."""

    def __init__(self, make: Callable[[], GrpcServer], grace: float) -> None:
        self._make = make
        self._grace = grace
        self.server: GrpcServer | None = None

    async def start(self) -> int:
        self.server = self._make()
        return await self.server.start()

    @contextlib.asynccontextmanager
    async def stopped_at_shutdown(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self.server is not None:
                await self.server.stop(self._grace)


class _Server(uvicorn.Server):
    """uvicorn's server, which also starts gRPC first (a failure there ends the start cleanly), announces
    itself once listening, and stops after the first load when ``exit_on_error`` and a model failed."""

    def __init__(self, config: uvicorn.Config, state: AppState, grpc: _Grpc | None, exit_on_error: bool,
                 on_started: Callable[[int], None] | None) -> None:
        super().__init__(config)
        self.state = state
        self.grpc = grpc
        self.exit_on_error = exit_on_error
        self.on_started = on_started
        self.failure: Exception | None = None
        self.exit_code = 0
        self._watch: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        grpc_port = 0
        if self.grpc is not None:
            try:
                grpc_port = await self.grpc.start()
            except Exception as exc:
                self.failure, self.should_exit = exc, True
                return
        await super().startup(sockets)
        if self.should_exit:
            return
        if self.on_started is not None:
            self.on_started(grpc_port)
        if self.exit_on_error:
            self._watch = asyncio.create_task(self._exit_if_a_model_failed(), name="mlport-exit-on-error")

    async def _exit_if_a_model_failed(self) -> None:
        await self.state.manager.scanned.wait()
        failed = failed_models(self.state)
        if failed:
            log.error("stopping (--exit-on-error): %s", "; ".join(failed))
            self.exit_code = EXIT_MODEL_FAILED
            self.should_exit = True


def serve_process(settings: Settings, *, group: ReadinessGroup | None = None, sock: socket.socket | None = None,
                  metrics_dir: str | None = None) -> int:
    """Run one server process until SIGINT/SIGTERM, which drain in-flight requests first.

    ``group``, ``sock`` and ``metrics_dir`` are given to a worker process by the supervisor: the workers it
    shares its readiness with, its HTTP socket, and the folder of the metrics the workers share.
    """
    worker = group is not None
    http = sock if sock is not None else bind(settings.host, settings.http_port, "HTTP")
    try:
        if settings.grpc_port and not worker:
            check_free(settings.host, settings.grpc_port, "gRPC")  # the operating system's reason, if taken
        return _run(settings, http, group, metrics_dir)
    finally:
        if sock is None:
            http.close()


def _run(settings: Settings, http: socket.socket, group: ReadinessGroup | None, metrics_dir: str | None) -> int:
    worker = group is not None
    tls = server_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    state = build_state(settings, group=group, metrics_dir=metrics_dir)
    grpc = None
    if settings.grpc_port:
        make = functools.partial(GrpcServer, state.service, host=settings.host, port=settings.grpc_port,
                                 strict_readiness=state.strict_readiness, server_version=state.server_version,
                                 reuse_port=worker, tls=tls)
        grpc = _Grpc(make, state.limits.shutdown_timeout_s)
    app = build_app(state, companions=[grpc.stopped_at_shutdown] if grpc is not None else [])
    text_log = settings.access_log and settings.access_log_format == "text"
    config = uvicorn.Config(
        app, log_level=settings.log_level, access_log=text_log,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s), lifespan="on", server_header=False,
        # a proxy's X-Forwarded-For names the client in uvicorn's text access log, the only reader of the
        # client's address: without that log, the headers are not looked at
        proxy_headers=text_log,
        # uvloop when it is installed (grpc.aio runs on it too), else asyncio; HTTP/1.1 by httptools, an
        # answer's head and body in one write, OIP infer requests served by the protocol (lane.py)
        loop="auto", http=runtime_protocol(state), **(tls.uvicorn_options() if tls is not None else {}),
    )
    port = http.getsockname()[1]
    on_started = None if worker else lambda grpc_port: announce(settings, port, grpc_port)
    server = _Server(config, state, grpc, settings.exit_on_error, on_started)
    # uvicorn drains in-flight requests on SIGINT/SIGTERM, then re-raises the signal with the handlers it
    # found: these make that last step a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    server.run(sockets=[http])
    if server.failure is not None:
        raise server.failure
    return server.exit_code


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
