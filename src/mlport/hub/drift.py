"""``GET /api/v1/deployments/{name}/drift`` (also ``/deployments/{name}/drift``): the drift of a deployment.

The hub asks each ready replica of each version of the deployment for ``GET /models/{name}/drift`` (each replica
watches the requests it answered, against the profile that came with its version) and answers them side by
side, with the worst status over all of them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.auth import Action
from mlport.hub.service import Hub
from mlport.protocols.http.body import json_response
from mlport.protocols.tls import server_tls

__all__ = ["drift_routes"]

#: Longest wait for one replica's answer, seconds.
REPLICA_TIMEOUT_S = 10.0
#: Largest answer read from a replica, bytes.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
ORDER = ("unwatched", "insufficient", "ok", "warning", "drift")


async def _ask(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        answer = await client.get(url)
    except httpx.HTTPError as exc:
        return {"status": "unreachable", "error": f"{type(exc).__name__}: {exc}"}
    if answer.status_code != 200 or len(answer.content) > MAX_ANSWER_BYTES:
        return {"status": "error", "error": f"the replica answered {answer.status_code}"}
    try:
        data = answer.json()
    except ValueError:
        return {"status": "error", "error": "the replica's answer is not JSON"}
    return data if isinstance(data, dict) else {"status": "error", "error": "unexpected answer"}


async def deployment_drift(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    name = request.path_params["name"]
    hub.require(request.headers, Action.READ, name)
    record = hub.deployments.get(name)  # 404 for an unknown deployment
    asked: list[tuple[dict[str, Any], str]] = []
    for version in hub.controller.status(name)["versions"]:
        for replica in version.get("replicas") or []:
            if replica.get("state") == "ready" and replica.get("url"):
                row = {"version": version["version"], "role": version.get("role"), "replica": replica.get("replica")}
                asked.append((row, f"{str(replica['url']).rstrip('/')}/models/{name}/drift"))
    s = hub.settings
    tls = server_tls(s.tls_cert, s.tls_key, s.tls_client_ca)
    async with httpx.AsyncClient(timeout=REPLICA_TIMEOUT_S, trust_env=False,
                                 verify=tls.replica_verify() if tls is not None else True) as client:
        answers = await asyncio.gather(*(_ask(client, url) for _, url in asked))
    replicas = [{**row, **answer} for (row, _), answer in zip(asked, answers, strict=True)]
    known = [str(r.get("status")) for r in replicas if r.get("status") in ORDER]
    status = max(known, key=ORDER.index) if known else "unwatched"
    return json_response({"deployment": name, "model": record.model, "status": status, "replicas": replicas})


def drift_routes() -> list[Route]:
    return [
        Route("/api/v1/deployments/{name}/drift", deployment_drift, methods=["GET"]),
        # before the gateway's /deployments/{name}/{path}: the deployment's drift, not one replica's route
        Route("/deployments/{name}/drift", deployment_drift, methods=["GET"]),
    ]
