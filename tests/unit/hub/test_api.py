"""The management API's own parts, without a hub: JSON bodies, field checks, answers and the route table."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.core.bodies import parse_body
from mlport.deploy.autoscale import PolicyFields, ScalePolicy
from mlport.errors import InvalidInput, MlportError
from mlport.hub.api import MAX_JSON_BYTES, api_routes, json_response, read_json
from mlport.hub.bodies import Experiment, NewDeployment, NewServiceAccount
from mlport.hub.openapi import build_openapi


def post(body: bytes, content_type: str | None = "application/json") -> tuple[int, Any]:
    """Status and JSON answer of a route that reads its body with :func:`read_json`, in process."""

    async def echo(request: Request) -> Response:
        try:
            return json_response({"read": await read_json(request)})
        except MlportError as exc:
            return json_response({"error": exc.message, "code": exc.code.value}, 400)

    app = Starlette(routes=[Route("/", echo, methods=["POST"])])

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            headers = {"content-type": content_type} if content_type else {}
            return await client.post("/", content=body, headers=headers)

    r = asyncio.run(main())
    return r.status_code, r.json()


def test_json_bodies() -> None:
    assert post(b'{"name": "iris", "n": 2}') == (200, {"read": {"name": "iris", "n": 2}})
    assert post(b"  ") == (200, {"read": {}})
    assert post(b"name=iris&roles=a,b", "application/x-www-form-urlencoded") == (
        200, {"read": {"name": "iris", "roles": "a,b"}})
    assert post(b'{"a": 1}', "application/json; charset=utf-8")[1] == {"read": {"a": 1}}
    assert post(b'{"a": 1}', None)[1] == {"read": {"a": 1}}


@pytest.mark.parametrize(("body", "content_type", "message", "code"), [
    (b"[1, 2]", "application/json", "the body must be a JSON object", "invalid_argument"),
    (b"{nope", "application/json", "the body is not valid JSON", "invalid_argument"),
    (b"{}", "text/plain", "expected application/json, got 'text/plain'", "unsupported_media"),
    (b" " * (MAX_JSON_BYTES + 1), "application/json", "", "too_large"),
])
def test_bad_bodies_are_refused_with_their_code(body: bytes, content_type: str, message: str, code: str) -> None:
    status, answer = post(body, content_type)
    assert status == 400 and answer["code"] == code
    assert answer["error"].startswith(message)


def test_bodies_name_the_field() -> None:
    body = parse_body(NewServiceAccount, {"name": "ci", "roles": "predictor, viewer", "ttl_s": "120"})
    assert body.roles == ["predictor", "viewer"] and body.ttl_s == 120 and body.deployments is None
    assert parse_body(NewServiceAccount, {"name": "ci"}).roles == ["predictor"]
    with pytest.raises(InvalidInput, match="field 'name' is required"):
        parse_body(NewServiceAccount, {})
    with pytest.raises(InvalidInput, match="field 'ttl_s': input should be greater than or equal to 60"):
        parse_body(NewServiceAccount, {"name": "ci", "ttl_s": 5})
    with pytest.raises(InvalidInput, match="unknown field 'rolez'"):
        parse_body(NewServiceAccount, {"name": "ci", "rolez": []})
    with pytest.raises(InvalidInput, match=r"field 'roles\.0'"):
        parse_body(NewServiceAccount, {"name": "ci", "roles": [1]})
    with pytest.raises(InvalidInput, match="field 'percent'"):
        parse_body(Experiment, {"version": 2, "percent": 101})
    with pytest.raises(InvalidInput, match="JSON object"):
        parse_body(Experiment, [1])


def test_a_scale_change_keeps_the_fields_it_does_not_name() -> None:
    base = ScalePolicy(min_replicas=1, max_replicas=3, target_inflight=2.0)
    change = parse_body(NewDeployment, {"name": "d", "model": "m", "min_replicas": 5}).policy_change()
    assert base.updated(change) == ScalePolicy(min_replicas=5, max_replicas=5, target_inflight=2.0)
    change = parse_body(PolicyFields, {"target_inflight": 8})
    assert base.updated(change) == ScalePolicy(min_replicas=1, max_replicas=3, target_inflight=8.0)
    with pytest.raises(InvalidInput, match="only with scale_to_zero"):
        base.updated(parse_body(PolicyFields, {"min_replicas": 0}))


def test_the_openapi_document_publishes_the_bodies_the_handlers_parse() -> None:
    """One definition: the bounds the API enforces are those the document states (target_inflight above 0)."""
    schemas = build_openapi()["components"]["schemas"]
    policy = schemas["ScalePolicy"]["properties"]["target_inflight"]
    assert policy["exclusiveMinimum"] == 0 and policy["maximum"] == 10_000
    assert schemas["NewDeployment"]["properties"]["target_inflight"] == policy
    assert schemas["NewServiceAccount"]["properties"]["ttl_s"]["minimum"] == 60
    assert schemas["NewUser"]["properties"]["password"]["minLength"] == 12


def test_json_response_serialises_numpy_and_sets_the_status() -> None:
    import numpy as np

    r = json_response({"x": np.arange(3)}, 201)
    assert r.status_code == 201 and r.media_type == "application/json"
    assert orjson.loads(r.body) == {"x": [0, 1, 2]}


def test_every_route_is_declared_once() -> None:
    seen = set()
    for route in api_routes():
        for method in route.methods or ():
            key = (route.path, method)
            assert key not in seen, f"{method} {route.path} is declared twice"
            seen.add(key)
    assert ("/auth/token", "POST") in seen
    assert ("/api/v1/deployments", "POST") in seen
