"""Hub jobs in the API: image builds of model versions, and the job list, status, log and cancel.

``POST /api/v1/models/{model}/versions/{version}/build`` fetches the version (sha256-verified) and runs
``mlport build`` on it as a job; when it pushed, the image's reference and digest are recorded on the version.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlport.auth import Action
from mlport.deploy.packaging import check_image_ref
from mlport.errors import InvalidInput, valid_name
from mlport.hub.service import Hub

__all__ = ["job_routes"]

_BUILD_FIELDS = frozenset({"tag", "push", "tls_verify"})


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _answer(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false")
    return value


async def build_version(request: Request) -> Response:
    from mlport.hub.api import read_json

    hub = _hub(request)
    principal = hub.require(request.headers, Action.WRITE_MODELS)
    model = valid_name(request.path_params["model"], "model")
    text = request.path_params["version"]
    if not text.isdigit():
        raise InvalidInput(f"version must be a positive integer, not {text!r}")
    version = int(text)
    info = hub.registry.get_version(model, version)
    data = await read_json(request)
    unknown = sorted(set(data) - _BUILD_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    tag = data.get("tag")
    if not isinstance(tag, str):
        raise InvalidInput("tag must be the image reference to build, e.g. registry.example.com/iris:3")
    check_image_ref(tag)
    push, tls_verify = _flag(data, "push", True), _flag(data, "tls_verify", True)
    local = await run_in_threadpool(hub.registry.fetch, model, version, hub.cache_dir)
    cache = hub.settings.build_pip_cache or hub.settings.data_dir / "pip"
    argv = [sys.executable, "-m", "mlport.cli.main", "build", str(local), "--tag", tag, "--name", model,
            "--model-version", str(version), "--output", "json", "--pip-cache", str(cache)]
    if hub.settings.build_base:
        argv += ["--base", hub.settings.build_base]
    if push:
        argv.append("--push")
        if not tls_verify:
            argv.append("--no-tls-verify")
    spec = {"model": model, "version": version, "tag": tag, "push": push, "sha256": info.sha256}
    job = hub.jobs.submit("image-build", spec, argv, by=principal.subject)
    return _answer(job.to_json(), 202)


async def jobs_list(request: Request) -> Response:
    hub = _hub(request)
    hub.require(request.headers, Action.READ)
    state = request.query_params.get("state")
    return _answer({"jobs": [j.to_json() for j in hub.jobs.store.list(state)]})


async def jobs_get(request: Request) -> Response:
    hub = _hub(request)
    hub.require(request.headers, Action.READ)
    return _answer(hub.jobs.store.get(request.path_params["job"]).to_json())


async def jobs_log(request: Request) -> Response:
    hub = _hub(request)
    hub.require(request.headers, Action.READ)
    return PlainTextResponse(hub.jobs.log_text(request.path_params["job"]))


async def jobs_cancel(request: Request) -> Response:
    hub = _hub(request)
    hub.require(request.headers, Action.WRITE_MODELS)
    return _answer(hub.jobs.cancel(request.path_params["job"]).to_json())


def job_routes() -> list[Route]:
    return [
        Route("/api/v1/models/{model}/versions/{version}/build", build_version, methods=["POST"]),
        Route("/api/v1/jobs", jobs_list, methods=["GET"]),
        Route("/api/v1/jobs/{job}", jobs_get, methods=["GET"]),
        Route("/api/v1/jobs/{job}/log", jobs_log, methods=["GET"]),
        Route("/api/v1/jobs/{job}/cancel", jobs_cancel, methods=["POST"]),
    ]
