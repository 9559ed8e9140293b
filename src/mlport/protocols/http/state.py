"""What every route needs, built once per server."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from mlport import __version__
from mlport.core.ids import new_request_id
from mlport.limits import Limits
from mlport.observability.metrics import Metrics
from mlport.protocols.service import InferenceService
from mlport.runtime.manager import ModelManager

__all__ = ["AppState", "request_id", "state_of"]

SERVER_NAME = "mlport"


@dataclass
class AppState:
    service: InferenceService
    manager: ModelManager
    metrics: Metrics
    limits: Limits
    poll_interval_s: float = 0.0
    strict_readiness: bool = False
    server_version: str = __version__


def state_of(request: Request) -> AppState:
    st: AppState = request.app.state.mlport
    return st


def request_id(request: Request) -> str:
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128:
        return rid
    return new_request_id()
