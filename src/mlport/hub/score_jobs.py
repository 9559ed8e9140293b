"""Batch scoring as a hub job: ``POST /api/v1/jobs`` runs ``mlport score`` on a model version (or the version a
deployment serves) with the hub's one job runner (kind ``batch-score``; status, log and cancel as any job)."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.auth import Action
from mlport.errors import InvalidInput
from mlport.hub.service import Hub

__all__ = ["job_options", "score_job_routes"]

_MAX_URI = 4096
_FIELDS = frozenset({"model", "version", "deployment", "input", "output", "options"})


def job_options(raw: Any) -> dict[str, Any]:
    """The scoring options a job may set, checked: batch_size, workers, keep, maps, fail_fast."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput("options must be an object")
    unknown = sorted(set(raw) - {"batch_size", "workers", "keep", "maps", "fail_fast"})
    if unknown:
        raise InvalidInput(f"unknown option {', '.join(unknown)}; a job takes batch_size, workers, keep, maps, "
                           "fail_fast")
    for key in ("batch_size", "workers"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1):
            raise InvalidInput(f"option {key} must be a positive integer")
    for key in ("keep", "maps"):
        value = raw.get(key, [])
        if not isinstance(value, list) or len(value) > 256 or not all(isinstance(v, str) and v for v in value):
            raise InvalidInput(f"option {key} must be a list of names (at most 256)")
    if not isinstance(raw.get("fail_fast", False), bool):
        raise InvalidInput("option fail_fast must be true or false")
    return dict(raw)


def _uri(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > _MAX_URI or "\0" in value:
        raise InvalidInput(f"{key} must be a path or s3:// URI of at most {_MAX_URI} characters")
    return value


def _model_version(hub: Hub, data: dict[str, Any]) -> tuple[str, int]:
    if data.get("deployment") is not None:
        record = hub.deployments.get(str(data["deployment"]))
        return record.model, record.target.primary
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("give the model (and optionally its version) or a deployment")
    version = data.get("version")
    if version is None:
        latest = hub.registry.get_model(model).latest_version
        if latest is None:
            raise InvalidInput(f"model {model!r} has no versions")
        return model, int(latest)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput("version must be a positive integer")
    return model, version


def _argv(local: str, input_uri: str, output_uri: str, opts: dict[str, Any], work: str) -> list[str]:
    argv = [sys.executable, "-m", "mlport.cli.main", "score", local, input_uri, "-o", output_uri, "--work-dir", work,
            "--progress", "lines", "--progress-interval", "1", "--summary", "json",
            "--workers", str(opts.get("workers", 1)), "--batch-size", str(opts.get("batch_size", 10_000))]
    argv += [f"--map={m}" for m in opts.get("maps", [])]
    if opts.get("keep"):
        argv += ["--keep", *opts["keep"]]
    if opts.get("fail_fast"):
        argv.append("--fail-fast")
    return argv


async def submit_score(request: Request) -> Response:
    from mlport.hub.api import read_json

    hub: Hub = request.app.state.hub
    principal = hub.require(request.headers, Action.DEPLOY)
    data = await read_json(request)
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    model, version = _model_version(hub, data)
    info = hub.registry.get_version(model, version)  # 404 for a version that is not there
    input_uri, output_uri, opts = _uri(data, "input"), _uri(data, "output"), job_options(data.get("options"))
    local = await run_in_threadpool(hub.registry.fetch, model, version, hub.cache_dir)
    work = hub.settings.data_dir / "jobs" / f"score-{uuid.uuid4().hex[:16]}"
    spec = {"model": model, "version": version, "input": input_uri, "output": output_uri, "options": opts,
            "sha256": info.sha256}
    job = hub.jobs.submit("batch-score", spec, _argv(str(local), input_uri, output_uri, opts, str(work)),
                          by=principal.subject)
    return Response(orjson.dumps(job.to_json()), 202, media_type="application/json")


def score_job_routes() -> list[Route]:
    return [Route("/api/v1/jobs", submit_score, methods=["POST"])]
