"""Open Inference Protocol v2 REST routes, with the binary data and model repository extensions."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.errors import InvalidInput
from mlport.protocols.extensions import EXTENSIONS as SHARED_EXTENSIONS
from mlport.protocols.extensions import message_json, model_config, model_statistics
from mlport.protocols.http.body import json_response, parse_json, read_body
from mlport.protocols.http.state import SERVER_NAME, AppState, state_of
from mlport.protocols.oip import (
    HEADER_LENGTH,
    EncodedResponse,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
)
from mlport.runtime.manager import VersionState

__all__ = ["deadline_of", "parse_header_length", "parse_timeout", "routes", "run_infer"]

EXTENSIONS = ["binary_tensor_data", *SHARED_EXTENSIONS]


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    st = state_of(request)
    ok = st.manager.ready(st.strict_readiness)
    return json_response({"ready": ok}, 200 if ok else 503)


async def server_metadata(request: Request) -> Response:
    st = state_of(request)
    return json_response({"name": SERVER_NAME, "version": st.server_version, "extensions": EXTENSIONS})


async def metadata(request: Request) -> Response:
    st = state_of(request)
    name = request.path_params["name"]
    known = await st.manager.describe(name, request.path_params.get("version"))
    versions = st.manager.status(name).requestable
    return json_response(model_metadata(name, versions, known.platform, known.signature))


async def config(request: Request) -> Response:
    """Model configuration extension: the served version's configuration as Triton's ``ModelConfig``."""
    st = state_of(request)
    return json_response(message_json(await model_config(st.manager, request.path_params["name"],
                                                   request.path_params.get("version"))))


async def stats(request: Request) -> Response:
    """Statistics extension: every model's, one model's, or one version's."""
    st = state_of(request)
    answer = model_statistics(st.service, request.path_params.get("name"), request.path_params.get("version"))
    return json_response(message_json(answer))


async def model_ready(request: Request) -> Response:
    st = state_of(request)
    name = request.path_params["name"]
    lv = st.manager.serving_version(name, request.path_params.get("version"))
    return json_response({"name": name, "version": str(lv.version), "ready": True})


def parse_header_length(raw: str | bytes | None) -> int | None:
    """The value of ``Inference-Header-Content-Length`` (``None`` when absent)."""
    if raw is None:
        return None
    try:
        header_length = int(raw)
    except ValueError:
        raise InvalidInput("Inference-Header-Content-Length is not a number") from None
    if header_length < 0:
        raise InvalidInput("Inference-Header-Content-Length is negative")
    return header_length


#: Longest ``X-Request-Timeout`` taken, seconds (a day).
MAX_REQUEST_TIMEOUT_S = 86_400.0

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def parse_timeout(raw: str | bytes) -> float:
    """The seconds of an ``X-Request-Timeout`` header (a decimal number of seconds)."""
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_REQUEST_TIMEOUT_S:
        shown = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        raise InvalidInput(f"X-Request-Timeout is {shown[:40]!r}; give the seconds the request may take, more than "
                           f"0 and at most {MAX_REQUEST_TIMEOUT_S:g}")
    return seconds


async def client_gone(receive: Receive) -> None:
    """Returns once the ASGI server reports the client disconnected (the body has been read already)."""
    for _ in range(1000):  # a well-behaved server sends nothing else once the body is read
        if (await receive())["type"] == "http.disconnect":
            return
    await asyncio.Event().wait()


def deadline_of(request: Request) -> dict[str, Any]:
    """``service.call``'s ``timeout_s`` (``X-Request-Timeout``) and ``watch`` (the client leaving) for a route
    that has read its request's body."""
    raw = request.headers.get("x-request-timeout")
    return {"timeout_s": None if raw is None else parse_timeout(raw),
            "watch": functools.partial(client_gone, request.receive)}


async def run_infer(
    st: AppState, name: str, version: str | None, body: bytes, header_length: int | None, request_id: str | None,
    routing_key: str | None = None, timeout_s: float | None = None, receive: Receive | None = None,
) -> EncodedResponse:
    """One OIP infer call, from the body to the encoded answer (the route and the ASGI fast path share it).

    ``routing_key`` comes from the ``X-Routing-Key`` header; a ``routing_key`` request parameter wins over it.
    ``timeout_s`` from ``X-Request-Timeout``; ``receive`` tells when the client went away.
    """
    watch = None if receive is None else functools.partial(client_gone, receive)
    async with st.service.call(name, version, "v2", timeout_s=timeout_s, watch=watch) as call:
        inference, binary_out = decode_infer_request(body, header_length, call.model.signature, st.limits)
        if inference.id is None and request_id is not None:
            inference.id = request_id
        if routing_key is not None and "routing_key" not in inference.parameters:
            inference.parameters["routing_key"] = routing_key[:MAX_ROUTING_KEY]
        response = await call.infer(inference)
        return encode_infer_response(response, binary_out)


#: Longest routing key kept from the X-Routing-Key header.
MAX_ROUTING_KEY = 256


async def infer(request: Request) -> Response:
    st = state_of(request)
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
    body = await read_body(request, st.limits.max_body_bytes)
    timeout = request.headers.get("x-request-timeout")
    encoded = await run_infer(st, request.path_params["name"], request.path_params.get("version"), body,
                              header_length, request.headers.get("x-request-id"), request.headers.get("x-routing-key"),
                              None if timeout is None else parse_timeout(timeout), request.receive)
    if encoded.header_length is None:
        return Response(encoded.body, 200, media_type="application/json")
    return Response(
        encoded.body, 200, {"Inference-Header-Content-Length": str(encoded.header_length)},
        media_type="application/octet-stream",
    )


async def _repository_body(request: Request, what: str) -> dict[str, Any]:
    """The JSON object of a repository call (an empty body is ``{}``)."""
    body = await read_body(request, 1 << 20)
    if not body.strip():
        return {}
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise InvalidInput(f"the {what} request must be a JSON object")
    return doc


async def repository_index(request: Request) -> Response:
    st = state_of(request)
    only_ready = bool((await _repository_body(request, "index")).get("ready", False))
    rows = []
    for status in st.manager.all_status():
        for v in status.versions:
            if only_ready and v.state is not VersionState.READY:
                continue
            row: dict[str, str | int] = {"name": status.name, "version": str(v.version), "state": v.state.value}
            if v.reason:
                row["reason"] = v.reason
            if v.state is VersionState.READY:
                row["memory_bytes"] = v.memory_bytes
            rows.append(row)
    repo = st.manager.repository
    if repo.over_limit_count and not only_ready:
        # the first MAX_LISTED_OVER_LIMIT of them; the log line gives the count
        reason = (f"not served: the repository holds {repo.max_models + repo.over_limit_count} models, more than "
                  f"max_models ({repo.max_models}); raise the limit with --max-models")
        rows.extend({"name": name, "state": VersionState.UNAVAILABLE.value, "reason": reason}
                    for name in repo.over_limit)
    return json_response(rows)


async def repository_load(request: Request) -> Response:
    st = state_of(request)
    await _repository_body(request, "load")
    await st.manager.load_model(request.path_params["name"])
    return json_response({})


async def repository_unload(request: Request) -> Response:
    st = state_of(request)
    await _repository_body(request, "unload")
    await st.service.unload_model(request.path_params["name"])
    return json_response({})


routes = [
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2", server_metadata, methods=["GET"]),
    # before /v2/models/{name}, which would take 'stats' for a model's name
    Route("/v2/models/stats", stats, methods=["GET"]),
    Route("/v2/models/{name}/stats", stats, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/stats", stats, methods=["GET"]),
    Route("/v2/models/{name}/config", config, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/config", config, methods=["GET"]),
    Route("/v2/models/{name}", metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    Route("/v2/repository/index", repository_index, methods=["POST"]),
    Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
]
