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

from mlport.errors import InvalidInput, MlportError
from mlport.hub import api
from mlport.hub.api import MAX_JSON_BYTES, api_routes, json_response, read_json


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


def test_field_checks_name_the_field() -> None:
    data = {"name": "iris", "count": "7", "flag": True, "share": 12.5, "roles": "admin, viewer", "bad": [1]}
    assert api._str(data, "name") == "iris"
    assert api._str(data, "missing", default="x") == "x"
    with pytest.raises(InvalidInput, match="field 'missing' is required"):
        api._str(data, "missing")
    with pytest.raises(InvalidInput, match="field 'name' must be a string of at most 3 characters"):
        api._str(data, "name", max_len=3)
    assert api._int(data, "count") == 7
    with pytest.raises(InvalidInput, match="field 'flag' must be an integer from 0 to 5"):
        api._int(data, "flag", hi=5)
    with pytest.raises(InvalidInput, match="field 'count' must be an integer from 0 to 5"):
        api._int(data, "count", hi=5)
    assert api._float(data, "share", default=0.0, lo=0.0, hi=100.0) == 12.5
    with pytest.raises(InvalidInput, match=r"field 'share' must be a number from 0\.0 to 10\.0"):
        api._float(data, "share", default=0.0, lo=0.0, hi=10.0)
    assert api._str_list(data, "roles") == ["admin", "viewer"]
    assert api._str_list(data, "missing") is None
    with pytest.raises(InvalidInput, match="field 'bad' must be a list of at most 100 strings"):
        api._str_list(data, "bad")


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
