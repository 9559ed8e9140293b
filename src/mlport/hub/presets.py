"""The preset catalogue in the hub, and deploying a preset in one step.

``GET /api/v1/presets`` (also ``GET /presets``) lists the presets: name, task, languages, inputs and outputs,
and, once built, size and measured figures, with the model version the hub registered for it.

``POST /api/v1/presets/{name}/deploy`` with ``{"deployment": NAME, ...scaling}`` deploys the preset as
deployment NAME.  When the hub has registered a build of the preset already (a version of model ``{name}``
tagged ``preset:{name}``), that version is deployed at once (201 or 200, as a deployment is created or moved).
Otherwise the hub builds it as a job (kind ``preset-build``, 202 with the job; its progress is the job's
message, its log the build's output): ``mlport presets build`` runs in a child process, so the API is never
held up, and when it succeeds the job's finisher (in a worker thread) registers the folder as the next version
of model ``{name}``, with its provenance (the distributions and versions it was built from) in the version's
description and the figures in the artifact's ``about.json``, and deploys it.  From then on the version is a
version like any other: canary, shadow, rollback and scaling apply.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport import presets
from mlport.auth import Action
from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.jobs import Job
from mlport.errors import Conflict, InvalidInput, ModelNotFound, valid_name
from mlport.formats.base import MissingExtra
from mlport.hub.service import Hub
from mlport.registry.types import VersionInfo

__all__ = ["KIND", "openapi_paths", "preset_routes"]

KIND = "preset-build"


class DeployBody(BaseModel):
    """What ``POST /api/v1/presets/{name}/deploy`` takes."""

    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(min_length=1, max_length=64)
    min_replicas: int = Field(default=1, ge=0, le=64)
    max_replicas: int | None = Field(default=None, ge=1, le=64)
    target_inflight: float = Field(default=4.0, gt=0, le=10_000)
    scale_to_zero: bool = False


def _answer(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _root(hub: Hub) -> Path:
    return hub.settings.data_dir / "presets"


def _tag(name: str) -> str:
    return f"preset:{name}"


def built_version(hub: Hub, name: str) -> VersionInfo | None:
    """The newest version the hub registered from a build of preset ``name``, if any."""
    try:
        versions = hub.registry.list_versions(name)
    except ModelNotFound:
        return None
    tagged = [v for v in versions if _tag(name) in v.tags]
    return tagged[-1] if tagged else None


def _active_build(hub: Hub, name: str) -> Job | None:
    for state in ("running", "queued"):
        for job in hub.jobs.store.list(state):
            if job.kind == KIND and job.spec.get("preset") == name:
                return job
    return None


def _preset(name: str) -> presets.Preset:
    preset = presets.PRESETS.get(name)
    if preset is None:
        raise presets.PresetError(f"unknown preset {name!r}; presets: {', '.join(presets.PRESETS)}")
    return preset


def _catalogue(hub: Hub) -> list[dict[str, Any]]:
    rows = presets.catalogue(_root(hub))
    for row in rows:
        version = built_version(hub, row["name"])
        job = _active_build(hub, row["name"])
        row["version"] = version.version if version else None
        row["building"] = job.id if job else None
        if version is not None:
            row["built"], row["size"] = True, version.size
            row["provenance"] = version.description
    return rows


async def catalogue(request: Request) -> Response:
    hub = _hub(request)
    hub.require(request.headers, Action.READ)
    return _answer({"presets": await run_in_threadpool(_catalogue, hub)})


def _body(data: dict[str, Any]) -> tuple[str, ScalePolicy]:
    try:
        body = DeployBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None
    policy = ScalePolicy(min_replicas=body.min_replicas,
                         max_replicas=body.max_replicas or max(body.min_replicas, 1),
                         target_inflight=body.target_inflight, scale_to_zero=body.scale_to_zero).validate()
    return valid_name(body.deployment, "deployment"), policy


async def deploy(request: Request) -> Response:
    from mlport.hub.api import read_json

    hub = _hub(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    hub.require(request.headers, Action.WRITE_MODELS)  # a build registers a model version
    preset = _preset(request.path_params["name"])
    deployment, policy = _body(await read_json(request))
    version = await run_in_threadpool(built_version, hub, preset.name)
    if version is not None:
        existed = hub.deployments.find(deployment) is not None
        record = hub.deploy(deployment, preset.name, version.version, policy, by=principal.subject, trusted=False)
        if existed and record.policy != policy:
            record = hub.deployments.change(deployment, by=principal.subject, action="scale", policy=policy)
        return _answer({"deployment": hub.status(record), "version": version.version, "job": None},
                       200 if existed else 201)
    active = _active_build(hub, preset.name)
    if active is not None:
        if active.spec.get("deployment") == deployment:
            return _answer({"deployment": None, "version": None, "job": active.to_json()}, 202)
        raise Conflict(f"preset {preset.name} is being built by job {active.id}; deploy it once that job ended")
    missing = preset.missing()
    if missing:
        raise MissingExtra(f"the hub cannot build preset {preset.name}: it needs {', '.join(missing)} "
                           f"({preset.install} where the hub runs)")
    argv = [sys.executable, "-m", "mlport.cli.main", "presets", "build", preset.name, "--dir", str(_root(hub)),
            "--output", "json"]
    spec = {"preset": preset.name, "deployment": deployment, "policy": asdict(policy)}
    job = hub.jobs.submit(KIND, spec, argv, by=principal.subject)
    return _answer({"deployment": None, "version": None, "job": job.to_json()}, 202)


def finish_build(hub: Hub, job: Job, result: dict[str, Any]) -> None:
    """A preset build ended well: register its folder as the next version of the preset's model and deploy it.
    Runs in a worker thread (the job runner's finisher)."""
    name = str(job.spec["preset"])
    preset = _preset(name)
    root = _root(hub).resolve()
    folder = Path(str(result.get("path", ""))).resolve()
    if folder != root / name or not (folder / ".built").is_file():
        raise InvalidInput(f"the build of preset {name} did not leave a built folder in {root}")
    provenance = result.get("provenance") or {}
    try:
        hub.registry.get_model(name)
    except ModelNotFound:
        hub.registry.create_model(name, description=preset.summary, labels={"preset": name},
                                  created_by=job.created_by)
    built_from = ", ".join(f"{k} {v}" for k, v in provenance.items())
    info = hub.registry.add_version(name, folder, filename=name, created_by=job.created_by,
                                    description=f"preset {name} built by the hub (job {job.id}) from {built_from}",
                                    tags=[_tag(name)], source_name=f"preset:{name}")
    result.update(model=name, version=info.version)
    deployment = job.spec.get("deployment")
    if deployment:
        policy = ScalePolicy(**job.spec.get("policy", {})).validate()
        hub.deploy(str(deployment), name, info.version, policy, by=job.created_by, trusted=False)


def preset_routes(hub: Hub) -> list[Route]:
    """The catalogue's routes; registers the finisher of preset builds with ``hub``'s job runner."""
    hub.jobs.finishers[KIND] = lambda job, result: finish_build(hub, job, result)
    return [
        Route("/api/v1/presets", catalogue, methods=["GET"]),
        Route("/presets", catalogue, methods=["GET"]),
        Route("/api/v1/presets/{name}/deploy", deploy, methods=["POST"]),
    ]


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of the catalogue's routes (merged into the hub's document)."""
    json_object = {"application/json": {"schema": {"type": "object"}}}
    listing = {"operationId": "listPresets", "tags": ["Presets"],
               "summary": "The preset catalogue: name, task, languages, inputs, outputs, size, measured figures, "
                          "whether built, the registered version and a build in progress",
               "responses": {"200": {"description": "OK", "content": json_object}, **_errors(401, 403)}}
    deploy_op = {
        "operationId": "deployPreset", "tags": ["Presets"],
        "summary": "Deploy a preset: its registered build at once (201/200 with the deployment), or build it first "
                   "as a job of kind preset-build (202 with the job), then register and deploy it",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": DeployBody.model_json_schema()}}},
        "responses": {"200": {"description": "Moved an existing deployment to the built version",
                              "content": json_object},
                      "201": {"description": "Deployed the built version", "content": json_object},
                      "202": {"description": "Building the preset as a job", "content": json_object},
                      **_errors(400, 401, 403, 404, 409, 503)},
    }
    return {"/api/v1/presets": {"get": listing}, "/presets": {"get": {**listing, "operationId": "listPresetsShort"}},
            "/api/v1/presets/{name}/deploy": {"post": deploy_op}}
