"""TF Serving REST routes: ``/v1/models/{m}[/versions/{v} | /labels/{l}]`` with ``/metadata`` or ``:predict``.

A path parameter cannot end in ``:predict`` with Starlette's converters, so one route takes the whole
rest of the path and :func:`mlport.protocols.tfserving.parse_model_path` splits it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.errors import ErrorCode, MlportError, ModelNotFound, UnsupportedMediaType
from mlport.protocols.http.body import json_response, media_type, read_body
from mlport.protocols.http.routes_explain import explain_v1
from mlport.protocols.http.routes_oip import deadline_of
from mlport.protocols.http.state import AppState, state_of
from mlport.protocols.tfserving import (
    ModelPath,
    decode_predict_request,
    encode_predict_response,
    model_status,
    parse_json_body,
    parse_model_path,
    resolve_version,
    served_metadata,
)

__all__ = ["routes"]

#: Body types taken as JSON (``curl -d`` sends form-urlencoded by default).
_JSON_TYPES = {"", "application/json", "application/x-www-form-urlencoded", "text/plain"}


def _version(st: AppState, target: ModelPath) -> int | str | None:
    """The version a path names: ``/versions/{v}``, ``/labels/{l}`` (from the model config), or latest."""
    return resolve_version(st.manager, target.name, target.version, target.label)


def _int_version(target: ModelPath, version: int | str | None) -> int | None:
    if version is None or isinstance(version, int):
        return version
    try:
        return int(version)
    except ValueError:
        raise ModelNotFound(f"model '{target.name}' has no version '{version}'") from None


def _status(request: Request, target: ModelPath) -> Response:
    st = state_of(request)
    status = st.manager.status(target.name)
    version = _int_version(target, _version(st, target))
    return json_response(model_status(status, version))


async def _metadata(request: Request, target: ModelPath) -> Response:
    st = state_of(request)
    return json_response(await served_metadata(st.manager, target.name, _version(st, target)))


async def _predict(request: Request, target: ModelPath) -> Response:
    st = state_of(request)
    mt = media_type(request)
    if mt not in _JSON_TYPES and not mt.endswith("+json"):
        raise UnsupportedMediaType(f"unsupported Content-Type {mt!r}; send application/json")
    body = await read_body(request, st.limits.max_body_bytes)
    version = _version(st, target)
    async with st.service.call(target.name, version, "v1", request.headers.get("x-request-id"),
                               **deadline_of(request)) as call:
        doc = parse_json_body(body)
        ev = call.model.evaluator
        wanted = doc.get("signature_name") if isinstance(doc, dict) else None
        chosen = ev.for_signature(wanted) if isinstance(wanted, str) else ev
        inference, columnar = decode_predict_request(
            doc, chosen.signature, st.limits, (ev.signature_name, *ev.signatures()), default=ev.signature_name
        )
        response = await call.infer(inference)
        content = encode_predict_response(response, columnar)
    return json_response(content)


async def v1_models(request: Request) -> Response:
    target = parse_model_path(request.path_params["path"])
    if target is None:
        raise MlportError(f"no route {request.method} {request.url.path}", ErrorCode.NOT_FOUND)
    if request.method == "POST":
        if target.verb is None:
            raise HTTPException(405, f"{request.url.path} takes GET; predict with POST .../{{model}}:predict")
        if target.verb == "explain":
            return await explain_v1(request, target)
        if target.verb != "predict":
            raise MlportError(f"':{target.verb}' is not served here; use ':predict' or ':explain'",
                              ErrorCode.NOT_FOUND)
        return await _predict(request, target)
    if target.verb is not None:
        raise HTTPException(405, f"':{target.verb}' takes POST")
    if target.metadata:
        return await _metadata(request, target)
    return _status(request, target)


routes: list[Route] = [Route("/v1/models/{path:path}", v1_models, methods=["GET", "POST"])]
