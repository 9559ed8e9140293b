"""The hub's management API: tokens, users, models and versions, deployments.

Every handler checks the caller's token and role first, then acts through :class:`~mlport.hub.service.Hub`.
Errors are :class:`~mlport.errors.MlportError` subclasses; the app turns them into ``{"error": ...}`` with the
status their code means.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mlport.auth import ROLES, Action
from mlport.deploy.autoscale import ScalePolicy
from mlport.errors import (
    ErrorCode,
    Forbidden,
    InvalidInput,
    MlportError,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    valid_name,
)
from mlport.hub.service import Hub
from mlport.hub.signatures import signature_warning
from mlport.protocols.http.body import media_type, read_body
from mlport.protocols.jsonbody import loads

__all__ = ["api_routes", "json_response"]

#: Largest JSON body of a management call, bytes.
MAX_JSON_BYTES = 1024 * 1024
#: Longest lifetime of a service-account token, seconds.
MAX_SERVICE_TTL_S = 365 * 24 * 3600

Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def read_json(request: Request) -> dict[str, Any]:
    ctype = media_type(request) or "application/json"
    body = await read_body(request, MAX_JSON_BYTES)
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace")))
    if ctype not in ("application/json", ""):
        raise UnsupportedMediaType(f"expected application/json, got {ctype!r}")
    if not body.strip():
        return {}
    data = loads(body, "the body is not valid JSON")
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


def _str(data: dict[str, Any], key: str, *, default: str | None = None, max_len: int = 4096) -> str:
    value = data.get(key, default)
    if value is None:
        raise InvalidInput(f"field {key!r} is required")
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidInput(f"field {key!r} must be a string of at most {max_len} characters")
    return value


def _int(data: dict[str, Any], key: str, *, default: int | None = None, lo: int = 0, hi: int = 2**31) -> int:
    value = data.get(key, default)
    if value is None:
        raise InvalidInput(f"field {key!r} is required")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidInput(f"field {key!r} must be an integer from {lo} to {hi}")
    return value


def _float(data: dict[str, Any], key: str, *, default: float, lo: float, hi: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise InvalidInput(f"field {key!r} must be a number from {lo} to {hi}")
    return float(value)


def _str_list(data: dict[str, Any], key: str, *, max_items: int = 100) -> list[str] | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or len(value) > max_items or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"field {key!r} must be a list of at most {max_items} strings")
    return value


def _version_of(request: Request) -> int:
    raw = request.path_params["version"]
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidInput(f"version {raw!r} must be a positive integer")
    return int(raw)


# --------------------------------------------------------------------------- auth
async def token(request: Request) -> Response:
    hub = hub_of(request)
    data = await read_json(request)
    name = _str(data, "username", max_len=64)
    password = _str(data, "password", max_len=1024)
    roles, deployments, kind = hub.users.authenticate(name, password)
    if kind != "user":
        raise Unauthorized("service accounts use the token they were given")
    token_, claims = hub.tokens.issue(name, roles, kind=kind, deployments=deployments)
    return json_response({"access_token": token_, "token_type": "bearer", "expires_in": claims["exp"] - claims["iat"],
                 "roles": sorted(roles)})


async def whoami(request: Request) -> Response:
    p = hub_of(request).principal(request.headers)
    return json_response({"subject": p.subject, "roles": sorted(p.roles), "kind": p.kind,
                 "deployments": sorted(p.deployments) if p.deployments is not None else None})


async def users_list(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.ADMIN)
    return json_response({"users": hub.users.list_users()})


async def users_create(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.ADMIN)
    data = await read_json(request)
    name = valid_name(_str(data, "name", max_len=64), "user")
    hub.users.create_user(name, _str(data, "password", max_len=1024), _str_list(data, "roles") or [],
                          deployments=_str_list(data, "deployments"))
    return json_response({"name": name}, 201)


async def users_delete(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.ADMIN)
    name = request.path_params["name"]
    if name == principal.subject:
        raise InvalidInput("an admin cannot delete their own account")
    hub.users.delete_user(name)
    return Response(status_code=204)


async def service_account(request: Request) -> Response:
    """Create a service account and return its (long-lived) token: the only time it is shown."""
    hub = hub_of(request)
    hub.require(request.headers, Action.ADMIN)
    data = await read_json(request)
    name = valid_name(_str(data, "name", max_len=64), "service account")
    roles = _str_list(data, "roles") or ["predictor"]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InvalidInput(f"unknown roles {unknown}; known: {sorted(ROLES)}")
    deployments = _str_list(data, "deployments") or None
    ttl = _int(data, "ttl_s", default=30 * 24 * 3600, lo=60, hi=MAX_SERVICE_TTL_S)
    hub.users.create_user(name, os.urandom(32).hex(), roles, kind="service", deployments=deployments)
    token_, claims = hub.tokens.issue(name, roles, kind="service", deployments=deployments, ttl_s=ttl)
    return json_response({"name": name, "access_token": token_, "token_type": "bearer", "expires_in": ttl,
                 "jti": claims["jti"]}, 201)


async def revoke(request: Request) -> Response:
    """Revoke a token: your own (any user), or any token or token id (admins)."""
    hub = hub_of(request)
    principal = hub.principal(request.headers)
    data = await read_json(request)
    if "token" in data:
        claims = hub.tokens.verify_claims(_str(data, "token", max_len=8192))
        if claims["sub"] != principal.subject and "admin" not in principal.roles:
            raise Forbidden("only admins revoke other users' tokens")
        hub.users.revoke(claims["jti"], float(claims["exp"]))
        return json_response({"revoked": claims["jti"]})
    jti = _str(data, "jti", max_len=64)
    if "admin" not in principal.roles and jti != principal.token_id:
        raise Forbidden("only admins revoke tokens by id")
    hub.users.revoke(jti, time.time() + MAX_SERVICE_TTL_S)
    return json_response({"revoked": jti})


# --------------------------------------------------------------------------- models
def _model_json(info: Any) -> dict[str, Any]:
    return {"name": info.name, "description": info.description, "labels": info.labels,
            "created_at": info.created_at, "created_by": info.created_by, "latest_version": info.latest_version}


def _version_json(v: Any) -> dict[str, Any]:
    out = {"model": v.model, "version": v.version, "format": v.format, "signature": v.signature, "size": v.size,
           "sha256": v.sha256, "created_at": v.created_at, "created_by": v.created_by,
           "description": v.description, "tags": v.tags, "source": v.source, "kind": v.kind,
           "filename": v.filename}
    if v.signature_error:
        out["warning"] = signature_warning(v.signature_error, v.format)
    return out


async def models_list(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json_response({"models": [_model_json(m) for m in hub.registry.list_models()]})


async def models_create(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.WRITE_MODELS)
    data = await read_json(request)
    labels = data.get("labels") or {}
    if not isinstance(labels, dict) or len(labels) > 64 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) < 128 and len(v) < 1024 for k, v in labels.items()):
        raise InvalidInput("field 'labels' must be an object of at most 64 string pairs")
    info = hub.registry.create_model(_str(data, "name", max_len=64), description=_str(data, "description", default=""),
                                     labels=labels, created_by=principal.subject)
    return json_response(_model_json(info), 201)


async def models_get(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    info = hub.registry.get_model(request.path_params["model"])
    out = _model_json(info)
    out["deployed_by"] = hub.deployments.using_model(info.name)
    return json_response(out)


async def models_delete(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.WRITE_MODELS)
    hub.delete_model(request.path_params["model"])
    return Response(status_code=204)


async def versions_list(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    versions = hub.registry.list_versions(request.path_params["model"])
    return json_response({"versions": [_version_json(v) for v in versions]})


async def versions_get(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json_response(_version_json(hub.registry.get_version(request.path_params["model"], _version_of(request))))


async def _spool(request: Request, limit: int, dest: Path) -> int:
    size = 0
    with dest.open("wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the upload exceeds the hub's limit of {limit} bytes")
            f.write(chunk)
    return size


async def versions_create(request: Request) -> Response:
    """Upload a version (raw body with ``?filename=``), or register a path in the store (JSON ``store_key``)."""
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.WRITE_MODELS)
    model = request.path_params["model"]
    hub.registry.get_model(model)
    ctype = media_type(request)
    q = request.query_params
    if ctype == "application/json":
        data = await read_json(request)
        info = await _in_thread(hub.registry.register_path, model, _str(data, "store_key", max_len=1024),
                                created_by=principal.subject, description=_str(data, "description", default=""),
                                tags=_str_list(data, "tags"))
        return json_response(_version_json(info), 201)
    if ctype not in ("application/octet-stream", "application/gzip", "application/x-tar", "application/zip", ""):
        raise UnsupportedMediaType("upload the file as the raw body (application/octet-stream) with ?filename=NAME, "
                                   "or send JSON {\"store_key\": ...} to register an artifact already in the store")
    filename = q.get("filename", "")
    source = q.get("source") or filename
    if not filename or "/" in filename or "\\" in filename or filename in (".", "..") or len(filename) > 255:
        raise InvalidInput("query parameter 'filename' must be a plain file name (the model file or archive)")
    length = request.headers.get("content-length")
    limit = hub.settings.max_upload_bytes
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the upload exceeds the hub's limit of {limit} bytes")
    trusted = q.get("trusted", "") in ("1", "true")
    if trusted:
        hub.require(request.headers, Action.ADMIN)
    with tempfile.TemporaryDirectory(prefix="mlport-upload-") as tmp:
        dest = Path(tmp) / filename
        size = await _spool(request, limit, dest)
        if size == 0:
            raise InvalidInput("the upload is empty")
        info = await _in_thread(hub.registry.add_version, model, dest, filename=filename,
                                created_by=principal.subject, description=q.get("description", "")[:4096],
                                tags=_str_list(dict(q), "tags"), trusted=trusted, source_name=source[:4096])
    return json_response(_version_json(info), 201)


async def versions_artifact(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    stream, size, filename = hub.registry.open_artifact(request.path_params["model"], _version_of(request))

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            block = await _in_thread(stream.read, 1024 * 1024)
            if not block:
                break
            yield block

    headers = {"content-length": str(size), "content-disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers,
                             background=BackgroundTask(stream.close))


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await run_in_threadpool(functools.partial(fn, *args, **kwargs))


# --------------------------------------------------------------------------- deployments
def _policy(data: dict[str, Any], base: ScalePolicy | None = None) -> ScalePolicy:
    b = base or ScalePolicy()
    policy = ScalePolicy(
        min_replicas=_int(data, "min_replicas", default=b.min_replicas, lo=0, hi=64),
        max_replicas=_int(data, "max_replicas", default=max(b.max_replicas, data.get("min_replicas") or 0), lo=1,
                          hi=64),
        target_inflight=_float(data, "target_inflight", default=b.target_inflight, lo=0.1, hi=10_000),
        scale_up_after_s=_float(data, "scale_up_after_s", default=b.scale_up_after_s, lo=0, hi=3600),
        scale_down_after_s=_float(data, "scale_down_after_s", default=b.scale_down_after_s, lo=0, hi=24 * 3600),
        scale_to_zero=bool(data.get("scale_to_zero", b.scale_to_zero)),
    )
    validate = getattr(policy, "validate", None)
    if callable(validate):
        validate()
    return policy


async def deployments_list(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json_response({"deployments": [hub.status(r) for r in hub.deployments.deployments()]})


async def deployments_create(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    data = await read_json(request)
    trusted = bool(data.get("trusted", False))
    if trusted:
        hub.require(request.headers, Action.ADMIN)
    name = valid_name(_str(data, "name", max_len=64), "deployment")
    version = _int(data, "version", lo=1) if data.get("version") is not None else None
    existing = hub.deployments.find(name)
    policy = _policy(data, existing.policy if existing else None)
    record = hub.deploy(name, _str(data, "model", max_len=64), version, policy, by=principal.subject, trusted=trusted)
    if existing is not None and policy != existing.policy:
        record = hub.deployments.change(name, by=principal.subject, action="scale", policy=policy)
    return json_response(hub.status(record), 201 if existing is None else 200)


async def deployments_get(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json_response(hub.status(hub.deployments.get(request.path_params["name"])))


async def deployments_delete(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    hub.deployments.delete(request.path_params["name"], by=principal.subject)
    hub.request_logs.set(request.path_params["name"], None)
    return Response(status_code=204)


def _experiment(strategy: str) -> Handler:
    async def handler(request: Request) -> Response:
        hub = hub_of(request)
        principal = hub.require(request.headers, Action.DEPLOY)
        data = await read_json(request)
        default_percent = {"canary": 10.0, "ab": 50.0, "shadow": 0.0}[strategy]
        percent = _float(data, "percent", default=default_percent, lo=0, hi=100)
        sticky = data.get("sticky_header", "x-routing-key" if strategy == "ab" else None)
        if sticky is not None and (not isinstance(sticky, str) or not sticky or len(sticky) > 128):
            raise InvalidInput("field 'sticky_header' must be a header name")
        record = hub.experiment(request.path_params["name"], strategy, _int(data, "version", lo=1), percent,
                                sticky.lower() if sticky else None, by=principal.subject,
                                force=data.get("force") in (True, "true", "1"))
        return json_response(hub.status(record))

    handler.__name__ = f"deployments_{strategy}"
    return handler


async def deployments_promote(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    return json_response(hub.status(hub.promote(request.path_params["name"], by=principal.subject)))


async def deployments_rollback(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    return json_response(hub.status(hub.rollback(request.path_params["name"], by=principal.subject)))


async def deployments_scale(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    name = request.path_params["name"]
    policy = _policy(await read_json(request), hub.deployments.get(name).policy)
    return json_response(hub.status(hub.deployments.change(name, by=principal.subject, action="scale", policy=policy)))


async def deployments_history(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json_response({"history": [e.to_json() for e in hub.deployments.history(request.path_params["name"])]})


async def deployments_shadow(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    name = request.path_params["name"]
    hub.deployments.get(name)
    return json_response(hub.shadow.summary(name))


async def gateway(request: Request) -> Response:
    hub = hub_of(request)
    name = request.path_params["name"]
    hub.require(request.headers, Action.PREDICT, deployment=name)
    if hub.deployments.find(name) is None:
        raise MlportError(f"deployment {name!r} not found", ErrorCode.NOT_FOUND)
    return await hub.gateway.handle(request, name, request.path_params["path"])


def api_routes() -> list[Route]:
    from mlport.hub.drift import drift_routes
    from mlport.hub.jobs import job_routes
    from mlport.hub.packaging import packaging_routes
    from mlport.hub.requestlogs import request_log_routes
    from mlport.hub.score_jobs import score_job_routes

    all_methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
    return [*packaging_routes(), *job_routes(), *score_job_routes(), *drift_routes(), *request_log_routes(),
        Route("/auth/token", token, methods=["POST"]),
        Route("/api/v1/whoami", whoami, methods=["GET"]),
        Route("/api/v1/users", users_list, methods=["GET"]),
        Route("/api/v1/users", users_create, methods=["POST"]),
        Route("/api/v1/users/{name}", users_delete, methods=["DELETE"]),
        Route("/api/v1/service-accounts", service_account, methods=["POST"]),
        Route("/api/v1/tokens/revoke", revoke, methods=["POST"]),
        Route("/api/v1/models", models_list, methods=["GET"]),
        Route("/api/v1/models", models_create, methods=["POST"]),
        Route("/api/v1/models/{model}", models_get, methods=["GET"]),
        Route("/api/v1/models/{model}", models_delete, methods=["DELETE"]),
        Route("/api/v1/models/{model}/versions", versions_list, methods=["GET"]),
        Route("/api/v1/models/{model}/versions", versions_create, methods=["POST"]),
        Route("/api/v1/models/{model}/versions/{version}", versions_get, methods=["GET"]),
        Route("/api/v1/models/{model}/versions/{version}/artifact", versions_artifact, methods=["GET"]),
        Route("/api/v1/deployments", deployments_list, methods=["GET"]),
        Route("/api/v1/deployments", deployments_create, methods=["POST"]),
        Route("/api/v1/deployments/{name}", deployments_get, methods=["GET"]),
        Route("/api/v1/deployments/{name}", deployments_delete, methods=["DELETE"]),
        Route("/api/v1/deployments/{name}/canary", _experiment("canary"), methods=["POST"]),
        Route("/api/v1/deployments/{name}/ab", _experiment("ab"), methods=["POST"]),
        Route("/api/v1/deployments/{name}/shadow", _experiment("shadow"), methods=["POST"]),
        Route("/api/v1/deployments/{name}/shadow", deployments_shadow, methods=["GET"]),
        Route("/api/v1/deployments/{name}/promote", deployments_promote, methods=["POST"]),
        Route("/api/v1/deployments/{name}/rollback", deployments_rollback, methods=["POST"]),
        Route("/api/v1/deployments/{name}/scale", deployments_scale, methods=["POST"]),
        Route("/api/v1/deployments/{name}/history", deployments_history, methods=["GET"]),
        Route("/deployments/{name}/{path:path}", gateway, methods=all_methods),
    ]
