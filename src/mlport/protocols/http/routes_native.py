"""describe/eval routes: ``/models/{name}[/versions/{v}]/describe|eval`` (and ``/describe``, ``/eval``
when a single model is served)."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.errors import InvalidInput, ModelNotFound
from mlport.formats.base import send_feedback
from mlport.limits import Limits
from mlport.protocols.http.body import json_response, media_type, parse_json, read_body
from mlport.protocols.http.negotiation import decoders, encoders, pick_decoder, pick_encoder
from mlport.protocols.http.routes_oip import deadline_of
from mlport.protocols.http.state import state_of
from mlport.protocols.native import decode_eval_json, describe, encode_eval_json
from mlport.runtime.manager import LoadedVersion

__all__ = ["routes"]


async def _decode_json(body: bytes, request: Request, lv: LoadedVersion, limits: Limits) -> InferenceRequest:
    return decode_eval_json(parse_json(body), lv.signature, lv.config, limits)


def _encode_json(response: InferenceResponse, single: bool, lv: LoadedVersion, params: dict[str, str]) -> Response:
    return json_response(encode_eval_json(response, single))


decoders["application/json"] = _decode_json
# curl -d sends this type by default; its body is the same JSON
decoders["application/x-www-form-urlencoded"] = _decode_json
encoders["application/json"] = _encode_json


def _single_model(request: Request) -> str:
    names = state_of(request).manager.names()
    if len(names) != 1:
        raise ModelNotFound("several models are served here: use /models/{name}/describe or /models/{name}/eval")
    return names[0]


async def _describe(request: Request, name: str) -> Response:
    st = state_of(request)
    known = await st.manager.describe(name, request.path_params.get("version"))
    return json_response(describe(known.signature, known.config))


async def _eval(request: Request, name: str) -> Response:
    st = state_of(request)
    encoder, params = pick_encoder(request.headers.get("accept"))
    decoder = pick_decoder(media_type(request))
    body = await read_body(request, st.limits.max_body_bytes)
    async with st.service.call(name, request.path_params.get("version"), "eval",
                               request.headers.get("x-request-id"), **deadline_of(request)) as call:
        inference = await decoder(body, request, call.model, st.limits)
        key = request.headers.get("x-routing-key")
        if key is not None:
            inference.parameters["routing_key"] = key[:_MAX_KEY]
        if inference.id is None:
            inference.id = request.headers.get("x-request-id")
        response = await call.infer(inference)
        answer = encoder(response, inference.single, call.model, params)
        _parameter_headers(answer, response.parameters)
        return answer


#: Response parameters of a manifest that the native API returns as headers (it has no parameters field).
_PARAMETER_HEADERS = {"routed_to": "x-mlport-routed-to", "answered_by": "x-mlport-answered-by"}


def _parameter_headers(answer: Response, parameters: dict[str, Any]) -> None:
    """``routed_to: ["a"]`` becomes ``X-Mlport-Routed-To: a`` (one value per row, comma-separated)."""
    for key, header in _PARAMETER_HEADERS.items():
        value = parameters.get(key)
        if isinstance(value, list) and value:
            answer.headers[header] = ",".join(str(v) for v in value)[:4096]


_MAX_KEY = 256
_MAX_FEEDBACK_BYTES = 64 * 1024


async def feedback(request: Request) -> Response:
    """``POST /models/{name}/feedback`` ``{"id": request id, "reward": number}``: a bandit router learns."""
    st = state_of(request)
    name = request.path_params["name"]
    doc = parse_json(await read_body(request, _MAX_FEEDBACK_BYTES))
    rid = doc.get("id") if isinstance(doc, dict) else None
    reward = doc.get("reward") if isinstance(doc, dict) else None
    if (not isinstance(rid, str) or not rid or len(rid) > _MAX_KEY or isinstance(reward, bool)
            or not isinstance(reward, int | float) or not math.isfinite(reward)):
        raise InvalidInput('feedback is {"id": "<the request id>", "reward": <a finite number>}')
    lv = st.manager.acquire(name, None)
    try:
        send_feedback(lv.evaluator, rid, float(reward))
    finally:
        st.manager.release(lv)
    return json_response({"model": name, "id": rid, "reward": float(reward)})


async def describe_model(request: Request) -> Response:
    return await _describe(request, request.path_params["name"])


async def eval_model(request: Request) -> Response:
    return await _eval(request, request.path_params["name"])


async def describe_single(request: Request) -> Response:
    return await _describe(request, _single_model(request))


async def eval_single(request: Request) -> Response:
    return await _eval(request, _single_model(request))


async def list_models(request: Request) -> Response:
    st = state_of(request)
    return json_response({
        "models": [
            {"name": s.name, "ready": s.ready,
             "versions": [{"version": str(v.version), "state": v.state.value, "reason": v.reason,
                           "memory_bytes": v.memory_bytes} for v in s.versions]}
            for s in st.manager.all_status()
        ]
    })


routes = [
    Route("/models", list_models, methods=["GET"]),
    Route("/models/{name}/describe", describe_model, methods=["GET"]),
    Route("/models/{name}/versions/{version}/describe", describe_model, methods=["GET"]),
    Route("/models/{name}/eval", eval_model, methods=["POST"]),
    Route("/models/{name}/versions/{version}/eval", eval_model, methods=["POST"]),
    Route("/models/{name}/feedback", feedback, methods=["POST"]),
    Route("/describe", describe_single, methods=["GET"]),
    Route("/eval", eval_single, methods=["POST"]),
]
