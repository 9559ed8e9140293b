"""Images of model versions and cluster manifests of deployments, in the hub's API.

- ``POST /api/v1/models/{model}/versions/{version}/images`` records an image built from a version (its reference and
  digest, as ``mlport build hub://MODEL/VERSION --push`` reports them); ``GET`` lists them, newest first.
- ``GET /api/v1/deployments/{name}/manifests?target=kubernetes|kserve`` renders a deployment's manifests:
  ``kubernetes`` runs each served version's newest recorded image (pinned by digest); ``kserve`` runs the
  runtime image given as ``image`` with each version's artifact in the hub's object store as ``storageUri``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.auth import Action
from mlport.deploy.kubernetes import TARGETS, ClusterPlan, VersionImage, render, to_yaml
from mlport.errors import Conflict, InvalidInput, ModelNotFound, valid_name
from mlport.hub.service import Hub

__all__ = ["cluster_manifests", "packaging_routes"]

_FORMAT_NAMES = {"tensorflow": "tensorflow", "torch": "pytorch"}


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _answer(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _model_version(request: Request) -> tuple[str, int]:
    model = valid_name(request.path_params["model"], "model")
    text = request.path_params["version"]
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000_000:
        raise InvalidInput(f"version must be a positive integer, not {text!r}")
    return model, int(text)


async def images_add(request: Request) -> Response:
    from mlport.hub.api import read_json

    hub = _hub(request)
    principal = hub.require(request.headers, Action.WRITE_MODELS)
    model, version = _model_version(request)
    hub.registry.get_version(model, version)
    data = await read_json(request)
    unknown = sorted(set(data) - {"image", "digest"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    image, digest = data.get("image"), data.get("digest")
    if not isinstance(image, str) or not isinstance(digest, str):
        raise InvalidInput("give 'image' (a reference) and 'digest' (sha256:...) as strings")
    record = hub.images.record(model, version, image, digest, by=principal.subject)
    return _answer(record.to_json(), 201)


async def images_list(request: Request) -> Response:
    hub = _hub(request)
    hub.require(request.headers, Action.READ)
    model, version = _model_version(request)
    hub.registry.get_version(model, version)
    return _answer({"images": [r.to_json() for r in hub.images.of(model, version)]})


async def deployments_manifests(request: Request) -> Response:
    hub = _hub(request)
    hub.require(request.headers, Action.READ)
    name = valid_name(request.path_params["name"], "deployment")
    query = request.query_params
    unknown = sorted(set(query) - {"target", "image", "namespace", "gateway", "format"})
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(unknown)}")
    target = query.get("target", "kubernetes")
    objects = cluster_manifests(hub, name, target, runtime_image=query.get("image"),
                                namespace=query.get("namespace", "default"), gateway=query.get("gateway"))
    if query.get("format", "yaml") == "json":
        return _answer({"objects": objects})
    return Response(to_yaml(objects), media_type="application/yaml")


def cluster_manifests(hub: Hub, name: str, target: str, *, runtime_image: str | None, namespace: str,
                      gateway: str | None) -> list[dict[str, Any]]:
    """The manifests of deployment ``name`` for ``target`` (see the module's docstring)."""
    if target not in TARGETS:
        raise InvalidInput(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    record = hub.deployments.find(name)
    if record is None:
        raise ModelNotFound(f"deployment {name!r} not found")
    versions: dict[int, VersionImage] = {}
    for version in record.target.versions():
        info = hub.registry.get_version(record.model, version)
        fmt = _FORMAT_NAMES.get(info.format or "", info.format or "mlport")
        if target == "kserve":
            if runtime_image is None:
                raise InvalidInput("target kserve needs image=<the runtime image> (mlport build --runtime-only)")
            versions[version] = VersionImage(runtime_image, fmt, _storage_uri(hub, info.store_key))
            continue
        images = hub.images.of(record.model, version)
        if not images:
            raise Conflict(f"version {version} of model {record.model!r} has no image yet: build one with "
                           f"`mlport build hub://{record.model}/{version} --tag REGISTRY/NAME:TAG --push`")
        versions[version] = VersionImage(images[0].pinned, fmt)
    plan = ClusterPlan(name, record.target, record.policy, versions, namespace=namespace,
                       gateway=gateway or "mlport-gateway", runtime_image=runtime_image)
    return render(plan, target)


def _storage_uri(hub: Hub, key: str) -> str:
    url: str = hub.store.url
    if not url.startswith("s3://"):
        raise Conflict("KServe's storage initializer needs the artifacts in an object store: run the hub with "
                       "--store s3://bucket/prefix")
    return f"{url.rstrip('/')}/{key}"


def packaging_routes() -> list[Route]:
    return [
        Route("/api/v1/models/{model}/versions/{version}/images", images_add, methods=["POST"]),
        Route("/api/v1/models/{model}/versions/{version}/images", images_list, methods=["GET"]),
        Route("/api/v1/deployments/{name}/manifests", deployments_manifests, methods=["GET"]),
    ]
