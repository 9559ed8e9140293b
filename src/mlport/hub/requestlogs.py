"""Request logging per deployment: its settings (stored in the hub database), the replica flags they become, and
the logged records read back with the version that answered each request.

A deployment's replicas log to ``<data dir>/requestlog/<deployment>/`` unless an admin gives another sink. The
replicas are ``mlport serve`` processes with their own flags, so a change of the settings starts them again.

Routes: ``GET|PUT|DELETE /api/v1/deployments/{name}/logging`` and ``GET /api/v1/deployments/{name}/logs``
(``since``: ISO 8601 time; ``limit``; ``cursor``: from the previous answer, to get only newer records).
"""

from __future__ import annotations

import base64
import binascii
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.auth import Action
from mlport.core.logconfig import RequestLogConfig, SinkConfig
from mlport.core.sqlitedb import Database
from mlport.core.yamlfile import problems
from mlport.errors import Conflict, InvalidInput
from mlport.observability.requestlog import LogReader, parse_since
from mlport.observability.requestlog.stores import is_log_file
from mlport.protocols.jsonbody import loads

__all__ = ["DeploymentLogs", "request_log_routes"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploy_logging (
    deployment TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""
#: Most records one answer carries.
MAX_LIMIT = 10_000
#: Longest cursor accepted.
MAX_CURSOR = 256 * 1024


class DeploymentLogs:
    """The request-log settings of every deployment, and where their records are."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = Path(root)
        db.migrate(_SCHEMA)
        self._cache: dict[str, RequestLogConfig] | None = None

    def _all(self) -> dict[str, RequestLogConfig]:
        cached = self._cache
        if cached is None:
            rows = self.db.all("SELECT deployment, config FROM deploy_logging")
            cached = self._cache = {r["deployment"]: RequestLogConfig.model_validate_json(r["config"]) for r in rows}
        return cached

    def config(self, name: str) -> RequestLogConfig | None:
        return self._all().get(name)

    def set(self, name: str, config: RequestLogConfig | None) -> None:
        if config is None:
            self.db.execute("DELETE FROM deploy_logging WHERE deployment = ?", (name,))
        else:
            self.db.execute("INSERT OR REPLACE INTO deploy_logging (deployment, config, updated_at) VALUES (?, ?, ?)",
                            (name, config.model_dump_json(), time.time()))
        self._cache = None

    def sink(self, name: str) -> SinkConfig:
        config = self.config(name)
        if config is not None and config.sink is not None:
            return config.sink
        return SinkConfig(url=str(self.root / name))

    def replica_args(self, name: str) -> list[str]:
        """The ``mlport serve`` flags of the deployment's replicas (none when it is not logged)."""
        config = self.config(name)
        if config is None or config.sample <= 0.0:
            return []
        sink = self.sink(name)
        args = ["--request-log", sink.url, "--request-log-format", sink.format,
                "--request-log-sample", repr(config.sample), "--request-log-payload", config.payload]
        return args

    def read(self, name: str, since: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
        """Records of the deployment, oldest first (at most ``limit``, the newest), and the cursor to go on from."""
        sink = self.sink(name)
        if sink.kind == "http":
            raise Conflict(f"deployment {name!r} logs to the receiver {sink.url}: read its records there")
        reader = LogReader(sink, model=name, since=parse_since(since) if since else None)
        if cursor:
            reader.position = _decode_cursor(cursor)
        records = reader.records(limit)
        return {"deployment": name, "sink": sink.url, "records": records, "cursor": _encode_cursor(reader.position)}


def _encode_cursor(position: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode("ascii")


def _decode_cursor(text: str) -> dict[str, int]:
    bad = InvalidInput("cursor: not one this hub gave (pass the 'cursor' of the previous answer)")
    if len(text) > MAX_CURSOR:
        raise bad
    try:
        value = loads(base64.urlsafe_b64decode(text.encode("ascii")), "cursor")
    except (InvalidInput, ValueError, binascii.Error, UnicodeEncodeError):
        raise bad from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and is_log_file(k) and isinstance(v, int) and v >= 0 for k, v in value.items()):
        raise bad
    return value


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "1000")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


async def get_logs(request: Request) -> Response:
    from mlport.hub.api import hub_of, json_response

    hub = hub_of(request)
    name = request.path_params["name"]
    hub.require(request.headers, Action.READ, deployment=name)
    hub.deployments.get(name)  # 404 for a deployment that is not there
    q = request.query_params
    data = await run_in_threadpool(hub.request_logs.read, name, q.get("since"), q.get("cursor"), _limit(request))
    return json_response(data)


def _answer(hub: Any, name: str) -> dict[str, Any]:
    config = hub.request_logs.config(name)
    return {"deployment": name, "logging": None if config is None else config.model_dump(mode="json"),
            "sink": hub.request_logs.sink(name).url}


async def get_logging(request: Request) -> Response:
    from mlport.hub.api import hub_of, json_response

    hub = hub_of(request)
    name = request.path_params["name"]
    hub.require(request.headers, Action.READ, deployment=name)
    hub.deployments.get(name)
    return json_response(_answer(hub, name))


async def put_logging(request: Request) -> Response:
    from mlport.hub.api import hub_of, json_response, read_json

    hub = hub_of(request)
    name = request.path_params["name"]
    hub.require(request.headers, Action.DEPLOY, deployment=name)
    hub.deployments.get(name)
    data = await read_json(request)
    if data.get("sink") is not None:  # the hub's processes would write where the caller says
        hub.require(request.headers, Action.ADMIN)
    try:
        config = RequestLogConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"logging: {problems(exc)}") from exc
    hub.request_logs.set(name, config)
    return json_response(_answer(hub, name))


async def delete_logging(request: Request) -> Response:
    from mlport.hub.api import hub_of

    hub = hub_of(request)
    name = request.path_params["name"]
    hub.require(request.headers, Action.DEPLOY, deployment=name)
    hub.request_logs.set(name, None)
    return Response(status_code=204)


def request_log_routes() -> list[Route]:
    return [
        Route("/api/v1/deployments/{name}/logging", get_logging, methods=["GET"]),
        Route("/api/v1/deployments/{name}/logging", put_logging, methods=["PUT"]),
        Route("/api/v1/deployments/{name}/logging", delete_logging, methods=["DELETE"]),
        Route("/api/v1/deployments/{name}/logs", get_logs, methods=["GET"]),
    ]
