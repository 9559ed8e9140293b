"""Assembles a server from settings: formats, repository, manager, service, app."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from mlport.errors import InvalidInput
from mlport.formats.registry import FormatRegistry, default_registry
from mlport.observability.access import AccessLog
from mlport.observability.metrics import Metrics
from mlport.protocols.http.app import Companion, build_app
from mlport.protocols.http.state import AppState
from mlport.protocols.service import InferenceService
from mlport.runtime.manager import ModelManager, ReadinessGroup
from mlport.runtime.repository import Repository
from mlport.settings import Settings

__all__ = ["build_state", "create_app"]


def build_state(
    settings: Settings, formats: FormatRegistry | None = None, group: ReadinessGroup | None = None
) -> AppState:
    """Everything one server process runs; ``group``: the worker processes it shares its ports with."""
    if settings.model_path is None:
        raise InvalidInput("no model path given")
    formats = formats or default_registry()
    limits = settings.limits()
    metrics = Metrics()
    repository = Repository(
        settings.model_path, formats, name=settings.name, trusted=settings.trusted, max_models=limits.max_models
    )
    threads, intra_op_threads = settings.threads()
    manager = ModelManager(
        repository, formats, limits, load_workers=settings.load_workers,
        intra_op_threads=intra_op_threads, on_load=metrics.on_load, group=group,
    )
    access_log = AccessLog() if settings.access_log_format == "json" else None
    service = InferenceService(manager, metrics, limits, inference_threads=threads, access_log=access_log)
    return AppState(service, manager, metrics, limits, poll_interval_s=settings.poll_interval_s,
                    strict_readiness=settings.strict_readiness)


def create_app(settings: Settings, group: ReadinessGroup | None = None) -> Starlette:
    """The app of one server process; with ``group`` it is one of several workers sharing the ports."""
    state = build_state(settings, group=group)
    companions: list[Companion] = []
    if settings.grpc_port:
        companions.append(functools.partial(_grpc, state, settings, group is not None))
    return build_app(state, companions=companions)


@contextlib.asynccontextmanager
async def _grpc(state: AppState, settings: Settings, shared: bool) -> AsyncIterator[None]:
    """The Open Inference Protocol gRPC server, on the HTTP server's event loop and service."""
    from mlport.protocols.grpc.server import serving  # the generated protocol modules load only here

    async with serving(state.service, host=settings.host, port=settings.grpc_port,
                       strict_readiness=state.strict_readiness, server_version=state.server_version,
                       grace=state.limits.shutdown_timeout_s, reuse_port=shared):
        yield
