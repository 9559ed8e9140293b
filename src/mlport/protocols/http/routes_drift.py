"""``GET /models/{name}/drift``: the latest drift figures of each watched version of a model."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.protocols.http.body import json_response
from mlport.protocols.http.state import state_of

__all__ = ["routes"]

UNWATCHED = ("no version of this model is watched for drift yet: a version is watched from its first answered "
             "request when it has a reference profile (profile.json) and its config does not turn drift off")


async def model_drift(request: Request) -> Response:
    state = state_of(request)
    name = request.path_params["name"]
    state.manager.status(name)  # 404 for a model not served here
    results = state.service.drift.results(name)
    if results is None:
        return json_response({"model": name, "status": "unwatched", "versions": [], "reason": UNWATCHED})
    order = ("insufficient", "ok", "warning", "drift")
    known = [r["status"] for r in results if r["status"] in order]
    status = max(known, key=order.index) if known else "error"
    return json_response({"model": name, "status": status, "versions": results})


routes: list[Route] = [Route("/models/{name}/drift", model_drift, methods=["GET"])]
