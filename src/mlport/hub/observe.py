"""What the hub shows of its gateway and replicas: JSON access-log lines, and the replicas' metrics.

Replicas listen on ports chosen at random, on the hub's host. Rather than merging their metrics into its own
``/metrics`` (one scrape would then wait for every replica, and a restarted replica's counters would start
over inside a merged series), the hub gives Prometheus a service-discovery endpoint of the HTTP kind:

- ``GET /sd/replicas`` lists one target per ready replica, with the labels ``deployment``, ``version``,
  ``replica`` and ``model``. The target is the hub's own address, and ``__metrics_path__`` is
- ``GET /sd/replicas/{deployment}/{version}/{replica}/metrics``: the hub passes that replica's ``/metrics``
  on, so that Prometheus needs to reach the hub's port only.

Prometheus then keeps one series per replica (``rate()`` copes with a restart), labelled by deployment,
version and replica.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from mlport.core.ids import new_request_id
from mlport.errors import ModelNotFound, ModelNotReady
from mlport.hub.service import Hub
from mlport.observability.access import AccessLog

__all__ = ["gateway_request_id", "sd_routes", "write_gateway_line"]

#: Longest time the hub waits for a replica's metrics, seconds.
SCRAPE_TIMEOUT_S = 10.0
#: Largest metrics page passed on, bytes.
MAX_METRICS_BYTES = 16 * 1024 * 1024


def _ready_replicas(hub: Hub) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """``(deployment, model, version row, replica row)`` of every ready replica."""
    for record in hub.deployments.deployments():
        for version in hub.controller.status(record.name)["versions"]:
            for replica in version.get("replicas") or []:
                if replica.get("state") == "ready" and replica.get("url"):
                    yield record.name, str(version.get("model") or record.model), version, replica


async def sd_replicas(request: Request) -> Response:
    """Prometheus HTTP service discovery: one target group per ready replica."""
    hub: Hub = request.app.state.hub
    host = request.url.netloc
    groups = []
    for deployment, model, version, replica in _ready_replicas(hub):
        path = f"/sd/replicas/{deployment}/{version['version']}/{replica['replica']}/metrics"
        groups.append({"targets": [host], "labels": {
            "__metrics_path__": path, "deployment": deployment, "version": str(version["version"]),
            "replica": str(replica["replica"]), "model": model}})
    return Response(orjson.dumps(groups), media_type="application/json")


async def replica_metrics(request: Request) -> Response:
    """One replica's ``/metrics``, passed on unchanged."""
    hub: Hub = request.app.state.hub
    deployment = request.path_params["deployment"]
    version, replica = request.path_params["version"], request.path_params["replica"]
    for name, _model, row, rep in _ready_replicas(hub):
        if name == deployment and str(row["version"]) == version and str(rep["replica"]) == replica:
            url = str(rep["url"]).rstrip("/") + "/metrics"
            break
    else:
        raise ModelNotFound(f"deployment '{deployment}' has no ready replica {replica} of version {version}")
    try:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as client:
            answer = await client.get(url)
    except httpx.HTTPError as exc:
        raise ModelNotReady(f"replica {replica} of deployment '{deployment}' version {version} did not answer: "
                            f"{exc}") from None
    if answer.status_code != 200 or len(answer.content) > MAX_METRICS_BYTES:
        raise ModelNotReady(f"replica {replica} of deployment '{deployment}' version {version} answered "
                            f"{answer.status_code} for its metrics")
    return Response(answer.content, 200, media_type=answer.headers.get("content-type", "text/plain"))


def sd_routes() -> list[Route]:
    return [
        Route("/sd/replicas", sd_replicas, methods=["GET"]),
        Route("/sd/replicas/{deployment}/{version}/{replica}/metrics", replica_metrics, methods=["GET"]),
    ]


def _protocol(rest: str) -> str:
    """The runtime API a gateway path (after ``/deployments/{name}/``) calls."""
    head = rest.split("/", 1)[0]
    if head in ("v2", "v1"):
        return head
    return "eval" if rest.startswith(("eval", "models/", "describe")) else "other"


def gateway_request_id(scope: Scope) -> str:
    """The request id of a gateway request: the client's ``x-request-id``, else a new one, added to the
    request's headers so that the replica's own access log names it too."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            return str(value.decode("latin-1"))
    rid = new_request_id()
    scope["headers"] = [*scope["headers"], (b"x-request-id", rid.encode())]
    return rid


def write_gateway_line(access_log: AccessLog, hub: Hub, path: str, rid: str, version: str, status: int,
                       started: float) -> None:
    """The access-log line of one gateway request (``path``: ``/deployments/{name}/...``)."""
    parts = path.split("/", 3)
    name = parts[2][:64] if len(parts) > 2 else ""
    record = next((d for d in hub.deployments.deployments() if d.name == name), None)
    model = record.model if record is not None else ""
    protocol = _protocol(parts[3] if len(parts) > 3 else "")
    access_log.write(rid, model, version, protocol, status, time.perf_counter() - started, deployment=name)
