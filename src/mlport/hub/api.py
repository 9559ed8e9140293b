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
from mlport.core.bodies import parse_body
from mlport.deploy.autoscale import PolicyFields, ScalePolicy
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
from mlport.hub.bodies import (
    MAX_SERVICE_TTL_S,
    Experiment,
    Login,
    NewDeployment,
    NewModel,
    NewServiceAccount,
    NewUser,
    Register,
    Revoke,
)
from mlport.hub.service import Hub
from mlport.hub.signatures import signature_warning
from mlport.protocols.http.body import media_type, read_body
from mlport.protocols.jsonbody import loads

__all__ = ["api_routes", "json_response"]

#: Largest JSON body of a management call, bytes.
MAX_JSON_BYTES = 1024 * 1024

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


def _tags(value: str | None) -> list[str] | None:
    if value is None:
        return None
    tags = [v.strip() for v in value.split(",") if v.strip()]
    if len(tags) > 100 or any(len(t) > 128 for t in tags):
        raise InvalidInput("query parameter 'tags' must be at most 100 comma-separated tags")
    return tags


def _version_of(request: Request) -> int:
    raw = request.path_params["version"]
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidInput(f"version {raw!r} must be a positive integer")
    return int(raw)


# --------------------------------------------------------------------------- auth
async def token(request: Request) -> Response:
    hub = hub_of(request)
    login = parse_body(Login, await read_json(request))
    name = login.username
    roles, deployments, kind = hub.users.authenticate(name, login.password)
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
    body = parse_body(NewUser, await read_json(request))
    name = valid_name(body.name, "user")
    hub.users.create_user(name, body.password, body.roles, deployments=body.deployments)
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
    body = parse_body(NewServiceAccount, await read_json(request))
    name = valid_name(body.name, "service account")
    roles = body.roles or ["predictor"]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InvalidInput(f"unknown roles {unknown}; known: {sorted(ROLES)}")
    deployments = body.deployments or None
    ttl = body.ttl_s
    hub.users.create_user(name, os.urandom(32).hex(), roles, kind="service", deployments=deployments)
    token_, claims = hub.tokens.issue(name, roles, kind="service", deployments=deployments, ttl_s=ttl)
    return json_response({"name": name, "access_token": token_, "token_type": "bearer", "expires_in": ttl,
                 "jti": claims["jti"]}, 201)


async def revoke(request: Request) -> Response:
    """Revoke a token: your own (any user), or any token or token id (admins)."""
    hub = hub_of(request)
    principal = hub.principal(request.headers)
    body = parse_body(Revoke, await read_json(request))
    if body.token is not None:
        claims = hub.tokens.verify_claims(body.token)
        if claims["sub"] != principal.subject and "admin" not in principal.roles:
            raise Forbidden("only admins revoke other users' tokens")
        hub.users.revoke(claims["jti"], float(claims["exp"]))
        return json_response({"revoked": claims["jti"]})
    if body.jti is None:
        raise InvalidInput("field 'token' or 'jti' is required")
    jti = body.jti
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
    body = parse_body(NewModel, await read_json(request))
    info = hub.registry.create_model(body.name, description=body.description, labels=dict(body.labels),
                                     created_by=principal.subject)
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
        reg = parse_body(Register, await read_json(request))
        info = await _in_thread(hub.registry.register_path, model, reg.store_key, created_by=principal.subject,
                                description=reg.description, tags=reg.tags)
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
                                tags=_tags(q.get("tags")), trusted=trusted, source_name=source[:4096])
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
async def deployments_list(request: Request) -> Response:
    hub = hub_of(request)
    hub.require(request.headers, Action.READ)
    return json_response({"deployments": [hub.status(r) for r in hub.deployments.deployments()]})


async def deployments_create(request: Request) -> Response:
    hub = hub_of(request)
    principal = hub.require(request.headers, Action.DEPLOY)
    body = parse_body(NewDeployment, await read_json(request))
    trusted = body.trusted
    if trusted:
        hub.require(request.headers, Action.ADMIN)
    name = valid_name(body.name, "deployment")
    existing = hub.deployments.find(name)
    policy = (existing.policy if existing else ScalePolicy()).updated(body.policy_change())
    serving, before = hub.serving.checked(name, body.lazy, body.load_timeout_s), hub.serving.get(name)
    hub.serving.set(name, serving)  # before the deployment, so that its first replicas start with these flags
    try:
        record = hub.deploy(name, body.model, body.version, policy, by=principal.subject, trusted=trusted)
    except Exception:
        hub.serving.set(name, before)
        raise
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
    hub.serving.forget(request.path_params["name"])
    return Response(status_code=204)


def _experiment(strategy: str) -> Handler:
    async def handler(request: Request) -> Response:
        hub = hub_of(request)
        principal = hub.require(request.headers, Action.DEPLOY)
        body = parse_body(Experiment, await read_json(request))
        default_percent = {"canary": 10.0, "ab": 50.0, "shadow": 0.0}[strategy]
        percent = body.percent if body.percent is not None else default_percent
        sticky = body.sticky_header
        if sticky is None and "sticky_header" not in body.model_fields_set and strategy == "ab":
            sticky = "x-routing-key"
        record = hub.experiment(request.path_params["name"], strategy, body.version, percent,
                                sticky.lower() if sticky else None, by=principal.subject, force=body.force)
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
    policy = hub.deployments.get(name).policy.updated(parse_body(PolicyFields, await read_json(request)))
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
