"""Explanation routes: ``POST /v2/models/{name}[/versions/{v}]/explain`` (an OIP inference request, or a PNG/JPEG
body for a model with one image input) and TF Serving's ``POST /v1/models/{name}[...]:explain`` (a predict body).

Request parameters (OIP ``parameters``; a TF Serving body's ``parameters`` object) tune the explanation within the
server's bounds (:mod:`mlport.explain.params`). The answer is JSON (:meth:`mlport.explain.Answer.to_json`), or,
with ``Accept: image/png`` for an image model, a PNG heat map over the first image.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.core.inference import InferenceRequest
from mlport.errors import InvalidInput, UnsupportedMediaType
from mlport.explain import Answer
from mlport.limits import Limits
from mlport.protocols.http.body import json_response, media_type, read_body
from mlport.protocols.http.negotiation import parse_accept
from mlport.protocols.http.routes_oip import parse_header_length
from mlport.protocols.http.state import state_of
from mlport.protocols.images import IMAGE_FORMATS, decode_image, image_spec_problem
from mlport.protocols.jsonbody import check_parameters
from mlport.protocols.oip import HEADER_LENGTH, decode_infer_request
from mlport.protocols.tfserving import ModelPath, decode_predict_request, parse_json_body, resolve_version
from mlport.runtime.manager import LoadedVersion

__all__ = ["explain_v1", "routes"]


def _wants_png(request: Request) -> bool:
    """Whether ``Accept`` prefers a PNG heat map to JSON."""
    for accept in parse_accept(request.headers.get("accept", "")):
        if accept.media in ("image/png", "image/*"):
            return True
        if accept.media in ("application/json", "*/*", "application/*"):
            return False
    return False


def _answer(answer: Answer) -> Response:
    if answer.png is not None:
        return Response(answer.png, 200, media_type="image/png")
    return json_response(answer.to_json())


def _image_request(body: bytes, lv: LoadedVersion, limits: Limits, media: str) -> InferenceRequest:
    """One image body as the model's one image input."""
    inputs = lv.signature.inputs
    if len(inputs) != 1:
        raise UnsupportedMediaType(f"{media} bodies need a model with exactly one input; model '{lv.model}' takes "
                                   f"{', '.join(lv.signature.input_names)}: send an inference request (JSON)")
    problem = image_spec_problem(inputs[0])
    if problem is not None:
        raise UnsupportedMediaType(f"{media} bodies need an image-shaped input: {problem}")
    return InferenceRequest(inputs={inputs[0].name: decode_image(body, inputs[0], lv.config.image, limits)})


async def explain_v2(request: Request) -> Response:
    st = state_of(request)
    media = media_type(request)
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
    body = await read_body(request, st.limits.max_body_bytes)

    def decode(lv: LoadedVersion) -> InferenceRequest:
        if media in IMAGE_FORMATS:
            return _image_request(body, lv, st.limits, media)
        return decode_infer_request(body, header_length, lv.signature, st.limits)[0]

    answer = await st.service.explain.explain(request.path_params["name"], request.path_params.get("version"),
                                              decode, png=_wants_png(request))
    return _answer(answer)


async def explain_v1(request: Request, target: ModelPath) -> Response:
    """TF Serving's ``:explain`` verb: a predict body (``instances`` or ``inputs``), with ``parameters``."""
    st = state_of(request)
    body = await read_body(request, st.limits.max_body_bytes)
    version = resolve_version(st.manager, target.name, target.version, target.label)

    def decode(lv: LoadedVersion) -> InferenceRequest:
        doc = parse_json_body(body)
        ev = lv.evaluator
        wanted = doc.get("signature_name") if isinstance(doc, dict) else None
        chosen = ev.for_signature(wanted) if isinstance(wanted, str) else ev
        inference, _ = decode_predict_request(doc, chosen.signature, st.limits, (ev.signature_name, *ev.signatures()),
                                              default=ev.signature_name)
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput("'parameters' must be an object")
        check_parameters(params)
        inference.parameters = {**params, **inference.parameters}
        return inference

    answer = await st.service.explain.explain(target.name, version, decode, png=_wants_png(request))
    return _answer(answer)


routes: list[Route] = [
    Route("/v2/models/{name}/explain", explain_v2, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/explain", explain_v2, methods=["POST"]),
]
