"""The gateway without replicas behind it: paths, name rewriting, and every failure answered by its error code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.core.sqlitedb import Database
from mlport.deploy.deployments import DeploymentSpec
from mlport.deploy.gateway import Gateway, forward_path, rewrite_model_name
from mlport.deploy.replicas import Endpoint
from mlport.deploy.shadow import ShadowRecorder
from mlport.deploy.target import Target
from mlport.errors import Forbidden, InvalidInput, ModelNotReady
from tests.conftest import free_port

ROW = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


def test_forward_path_and_model_name_rewrite() -> None:
    assert forward_path("v2/models/x/infer") == "/v2/models/x/infer"
    assert forward_path("") == "/"
    assert forward_path("a..b/c.") == "/a..b/c."
    for bad in ("..", "../x", "v2/../../etc/passwd", "a/..", "/v2/models/x/.."):
        with pytest.raises(InvalidInput, match=r"'\.\.'"):
            forward_path(bad)
    with pytest.raises(InvalidInput):
        forward_path("v2/models/a\x00b")
    with pytest.raises(InvalidInput):
        forward_path("x" * 5000)
    with pytest.raises(Forbidden):
        forward_path("v2/repository/models/flowers/unload")

    def rw(path: str) -> str:
        return rewrite_model_name(path, "iris-model", "flowers")

    assert rw("/v2/models/iris-model/infer") == "/v2/models/flowers/infer"
    assert rw("/v2/models/flowers/infer") == "/v2/models/flowers/infer"
    assert rw("/v2/models/iris-model/versions/1/infer") == "/v2/models/flowers/versions/1/infer"
    assert rw("/v2/models/iris-model") == "/v2/models/flowers"
    assert rw("/v2/models/other/infer") == "/v2/models/other/infer"
    assert rw("/v1/models/iris-model:predict") == "/v1/models/flowers:predict"
    assert rw("/v1/models/iris-model/versions/1:predict") == "/v1/models/flowers/versions/1:predict"
    assert rw("/v1/models/iris-model/metadata") == "/v1/models/flowers/metadata"
    assert rw("/v1/models/other:predict") == "/v1/models/other:predict"
    assert rw("/models/iris-model/eval") == "/models/flowers/eval"
    assert rw("/models/iris-model/versions/1/describe") == "/models/flowers/versions/1/describe"
    assert rw("/models/other/eval") == "/models/other/eval"
    for same in ("/", "/v2/health/ready", "/models", "/eval", "/v3/models/iris-model/x", "/iris-model/models"):
        assert rw(same) == same


@dataclass
class Replicas:
    endpoints_: list[Endpoint] = field(default_factory=list)

    def endpoints(self) -> list[Endpoint]:
        return [e for e in self.endpoints_ if e.healthy]


@dataclass
class Controller:
    sets: dict[tuple[str, int], Replicas]
    asked: list[tuple[str, int]] = field(default_factory=list)

    def replicas(self, deployment: str, version: int) -> Replicas | None:
        return self.sets.get((deployment, version))

    async def ensure_ready(self, deployment: str, version: int, timeout_s: float) -> Replicas:
        self.asked.append((deployment, version))
        found = self.sets.get((deployment, version))
        if found is None or not found.endpoints():
            raise ModelNotReady(f"deployment '{deployment}' version {version} has no ready replica")
        return found


@dataclass
class State:
    records: list[DeploymentSpec]

    def deployments(self) -> list[DeploymentSpec]:
        return self.records


Call = Callable[[httpx.AsyncClient, Controller, Gateway], Awaitable[None]]


def with_gateway(tmp_path: Path, sets: dict[tuple[str, int], Replicas], scenario: Call, **kw: object) -> None:
    """Run ``scenario`` against a gateway for the deployment 'flowers' (model 'iris', version 1), in process."""
    controller = Controller(sets)
    state = State([DeploymentSpec("flowers", Target("iris", 1))])
    gateway = Gateway(controller=controller, state=state, shadow=ShadowRecorder(Database(tmp_path / "hub.db")),
                      **kw)  # type: ignore[arg-type]

    async def forward(request: Request) -> Response:
        return await gateway.handle(request, request.path_params["name"], request.path_params["path"])

    app = Starlette(routes=[Route("/{name}/{path:path}", forward, methods=["GET", "POST"])])

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            try:
                await scenario(client, controller, gateway)
            finally:
                await gateway.aclose()

    asyncio.run(main())


def test_refusals_carry_their_status_and_the_deployment(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, controller: Controller, gateway: Gateway) -> None:
        r = await client.post("/nowhere/v2/models/iris/infer", json=ROW)
        assert (r.status_code, r.json()) == (404, {"error": "no deployment 'nowhere'"})
        assert r.headers["x-mlport-deployment"] == "nowhere" and "x-mlport-version" not in r.headers
        r = await client.post("/flowers/v2/repository/models/iris/unload")
        assert r.status_code == 403 and "repository API" in r.json()["error"]
        r = await client.post("/flowers/v2/models/iris/infer", content=b"x" * 2000)
        assert r.status_code == 413, r.text
        assert controller.asked == []  # none of them reached for a replica

    with_gateway(tmp_path, {}, scenario, max_body_bytes=1000)


def test_no_ready_replica_is_503_with_the_version(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, controller: Controller, gateway: Gateway) -> None:
        r = await client.post("/flowers/v2/models/iris/infer", json=ROW)
        assert r.status_code == 503
        assert r.json() == {"error": "deployment 'flowers' version 1 has no ready replica"}  # the controller's
        assert (r.headers["x-mlport-deployment"], r.headers["x-mlport-version"]) == ("flowers", "1")
        assert controller.asked == [("flowers", 1)]

    with_gateway(tmp_path, {("flowers", 1): Replicas()}, scenario)


def test_a_replica_that_refuses_connections_is_retried_then_503(tmp_path: Path) -> None:
    dead = Endpoint(url=f"http://127.0.0.1:{free_port()}", pid=0, healthy=True)  # nothing listens there

    async def scenario(client: httpx.AsyncClient, controller: Controller, gateway: Gateway) -> None:
        r = await client.post("/flowers/v2/models/iris/infer", json=ROW)
        assert r.status_code == 503
        error = r.json()["error"]
        assert error.startswith("no replica of deployment 'flowers' version 1 answered (3 attempts; last: ")
        assert dead.inflight == 0

    with_gateway(tmp_path, {("flowers", 1): Replicas([dead])}, scenario, retries=2, timeout_s=20)
