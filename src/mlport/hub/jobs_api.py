"""The hub's batch jobs API: ``POST /api/v1/jobs`` (a model version, or a deployment's serving version; an
input and an output URI), status with progress, cancel and the log."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.auth import Action
from mlport.deploy.jobs import job_options
from mlport.errors import InvalidInput
from mlport.hub.api import _int, _str, hub_of, json, read_json

__all__ = ["job_routes"]


async def jobs_create(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    data = await read_json(request)
    version: int | None
    if data.get("deployment") is not None:
        record = hub.deployments.get(_str(data, "deployment", max_len=64))
        model, version = record.model, record.target.primary
    else:
        model = _str(data, "model", max_len=64)
        version = _int(data, "version", lo=1) if data.get("version") is not None else None
    if version is None:
        latest = hub.registry.get_model(model).latest_version
        if latest is None:
            raise InvalidInput(f"model {model!r} has no versions")
        version = int(latest)
    hub.registry.get_version(model, version)  # 404 for a version that is not there
    job = hub.jobs.create(model, version, _str(data, "input"), _str(data, "output"), job_options(data.get("options")),
                          principal.subject)
    return json(hub.job_runner.describe(job["id"]), 201)


async def jobs_list(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json({"jobs": [hub.job_runner.describe(j["id"]) for j in hub.jobs.all_jobs()]})


async def jobs_get(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json(hub.job_runner.describe(request.path_params["id"]))


async def jobs_cancel(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.DEPLOY)
    return json(hub.job_runner.cancel(request.path_params["id"]))


async def jobs_logs(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    job_id = request.path_params["id"]
    return json({"id": job_id, "log": hub.job_runner.logs(job_id)})


def job_routes() -> list[Route]:
    return [
        Route("/api/v1/jobs", jobs_create, methods=["POST"]),
        Route("/api/v1/jobs", jobs_list, methods=["GET"]),
        Route("/api/v1/jobs/{id}", jobs_get, methods=["GET"]),
        Route("/api/v1/jobs/{id}/cancel", jobs_cancel, methods=["POST"]),
        Route("/api/v1/jobs/{id}/logs", jobs_logs, methods=["GET"]),
    ]
