"""The gateway in front of real ``mlport serve`` replicas, and of small in-test apps for the failure cases.

The gateway runs in a Starlette app served by uvicorn on 127.0.0.1 (in a thread of the test process), with a
small in-test controller and deployment state pointing at the replicas the test started; the last test uses
the real :class:`~mlport.deploy.controller.Controller`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlport.core.sqlitedb import Database
from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.controller import Controller
from mlport.deploy.deployments import DeploymentSpec
from mlport.deploy.gateway import Gateway
from mlport.deploy.replicas import Endpoint
from mlport.deploy.shadow import ShadowRecorder
from mlport.deploy.strategy import bucket
from mlport.deploy.target import Target
from mlport.errors import ModelNotReady
from tests.builders import iris_onnx, ort_run, scale_onnx
from tests.conftest import Server, free_port, start_server
from tests.waiting import wait_for

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def iris_x() -> np.ndarray:
    from sklearn.datasets import load_iris

    return np.asarray(load_iris().data, dtype=np.float32)


X = iris_x()


def oip_body(rows: np.ndarray, outputs: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                        "data": rows.ravel().tolist()}]}
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return body


def outputs_of(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return {o["name"]: o["data"] for o in r.json()["outputs"]}


# -- in-test servers and fakes -------------------------------------------------------------------------------

class AppServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


class FakeSet:
    """A replica set of fixed endpoints (real :class:`Endpoint` objects, so the gateway counts on them)."""

    def __init__(self, *urls: str) -> None:
        self.eps = [Endpoint(url=u, pid=0, healthy=True) for u in urls]

    def endpoints(self) -> list[Endpoint]:
        return [e for e in self.eps if e.healthy]


class FakeController:
    def __init__(self, sets: dict[tuple[str, int], FakeSet]) -> None:
        self.sets = sets
        self.ensure_calls = 0

    def replicas(self, deployment: str, version: int) -> FakeSet | None:
        return self.sets.get((deployment, version))

    async def ensure_ready(self, deployment: str, version: int, timeout_s: float) -> FakeSet:
        self.ensure_calls += 1
        rs = self.sets.get((deployment, version))
        if rs is None or not rs.endpoints():
            raise ModelNotReady(f"deployment '{deployment}' version {version} has no ready replica")
        return rs


@dataclass
class FakeState:
    records: list[DeploymentSpec] = field(default_factory=list)

    def deployments(self) -> list[DeploymentSpec]:
        return list(self.records)


def gateway_app(gateway: Gateway, controller: Controller | None = None) -> Starlette:
    async def forward(request: Request) -> Response:
        return await gateway.handle(request, request.path_params["name"], request.path_params["path"])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if controller is not None:
            await controller.start()
        try:
            yield
        finally:
            await gateway.aclose()
            if controller is not None:
                await controller.stop()

    return Starlette(routes=[Route("/deployments/{name}/{path:path}", forward, methods=METHODS)], lifespan=lifespan)


@dataclass
class Hub:
    url: str  # .../deployments
    gateway: Gateway
    recorder: ShadowRecorder
    controller: FakeController


@pytest.fixture
def apps() -> Iterator[Callable[[Any], AppServer]]:
    started: list[AppServer] = []

    def start(app: Any) -> AppServer:
        server = AppServer(app)
        started.append(server)
        return server

    yield start
    for s in reversed(started):
        s.stop()


@pytest.fixture
def hub(tmp_path: Path, apps: Callable[[Any], AppServer]) -> Callable[..., Hub]:
    count = iter(range(1000))

    def make(sets: dict[tuple[str, int], FakeSet], targets: dict[str, Target], **kw: Any) -> Hub:
        controller = FakeController(sets)
        state = FakeState([DeploymentSpec(name, t.validate()) for name, t in targets.items()])
        recorder = ShadowRecorder(Database(tmp_path / f"hub-{next(count)}.db"))
        gateway = Gateway(controller=controller, state=state, shadow=recorder, **kw)
        server = apps(gateway_app(gateway))
        return Hub(server.url + "/deployments", gateway, recorder, controller)

    return make


def echo_app(seen: list[dict[str, Any]]) -> Starlette:
    """Answers with what it received (recorded in ``seen``), and a few headers the gateway must not pass on."""

    async def echo(request: Request) -> Response:
        seen.append({"method": request.method, "raw_path": request.scope["raw_path"].decode(),
                     "query": request.scope["query_string"].decode(), "headers": dict(request.headers),
                     "body": await request.body()})
        return Response(b"\x00\x01echo", 201, {
            "content-type": "application/octet-stream", "inference-header-content-length": "0",
            "x-request-id": request.headers.get("x-request-id", "none"), "set-cookie": "s=1", "x-internal": "yes"})

    return Starlette(routes=[Route("/{p:path}", echo, methods=METHODS)])


def status_app(status: int, hits: list[str]) -> Starlette:
    async def fail(request: Request) -> Response:
        hits.append(request.url.path)
        return JSONResponse({"error": f"replica says {status}"}, status)

    return Starlette(routes=[Route("/{p:path}", fail, methods=METHODS)])


def held_app(release: threading.Event, hits: list[str]) -> Starlette:
    """Answers only once ``release`` is set (at most 30 s)."""

    async def held(request: Request) -> Response:
        hits.append(request.url.path)
        await asyncio.to_thread(release.wait, 30)
        return JSONResponse({"held": True})

    return Starlette(routes=[Route("/{p:path}", held, methods=METHODS)])


async def bounded(n: int, concurrency: int, call: Callable[[int], Awaitable[None]]) -> None:
    """``call(i)`` for i in range(n), at most ``concurrency`` at a time."""
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- real models and replicas ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gateway-models")
    return {
        "iris1": iris_onnx(root / "iris1" / "model.onnx"),
        "iris2": iris_onnx(root / "iris2" / "model.onnx", c=0.02),  # strongly regularised: other labels on some rows
        "x1": scale_onnx(root / "x1" / "model.onnx", 1.0),
        "x2": scale_onnx(root / "x2" / "model.onnx", 2.0),
    }


@pytest.fixture(scope="module")
def replicas(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """``mlport serve`` processes: both iris versions and both scale versions, named as their deployments."""
    log_dir = tmp_path_factory.mktemp("gateway-logs")
    started: dict[str, Server] = {}
    try:
        for key, name in (("iris1", "flowers"), ("iris2", "flowers"), ("x1", "scaler"), ("x2", "scaler")):
            started[key] = start_server(models[key], "--name", name, "--grpc-port", "0", "--poll-interval", "0",
                                        log_dir=log_dir)
        yield started
    finally:
        for s in started.values():
            s.stop()


FLOWERS = Target("iris-model", 1)


# -- forwarding --------------------------------------------------------------------------------------------------

def test_protocols_through_the_gateway(hub: Callable[..., Hub], replicas: dict[str, Server],
                                       models: dict[str, Path]) -> None:
    h = hub({("flowers", 1): FakeSet(replicas["iris1"].url)}, {"flowers": FLOWERS})
    rows = X[:5]
    want = ort_run(models["iris1"], {"input": rows})
    with httpx.Client(timeout=60) as c:
        # OIP under the deployment's name and under the registry's model name
        for name in ("flowers", "iris-model"):
            for tail in ("infer", "versions/1/infer"):
                r = c.post(f"{h.url}/flowers/v2/models/{name}/{tail}", json=oip_body(rows))
                got = outputs_of(r)
                assert got["label"] == want["label"].tolist()
                np.testing.assert_allclose(np.reshape(got["probabilities"], (5, 3)), want["probabilities"], rtol=1e-6)
                assert r.headers["x-mlport-deployment"] == "flowers"
                assert r.headers["x-mlport-version"] == "1"
                assert r.headers["content-type"] == "application/json"
        # another name is the replica's to refuse
        r = c.post(f"{h.url}/flowers/v2/models/other/infer", json=oip_body(rows))
        assert r.status_code == 404 and "other" in r.json()["error"]
        assert r.headers["x-mlport-version"] == "1"
        # model metadata
        r = c.get(f"{h.url}/flowers/v2/models/iris-model")
        assert r.status_code == 200 and r.json()["name"] == "flowers"
        # TF Serving
        r = c.post(f"{h.url}/flowers/v1/models/iris-model:predict", json={"instances": rows.tolist()})
        assert r.status_code == 200, r.text
        assert [p["label"] for p in r.json()["predictions"]] == want["label"].tolist()
        # describe / eval
        r = c.post(f"{h.url}/flowers/models/iris-model/eval", json={"input": rows.tolist()})
        assert r.status_code == 200, r.text
        assert r.json()["label"] == want["label"].tolist()
        # the OIP binary extension: the header length goes both ways
        raw = rows.astype("<f4").tobytes()
        header = json.dumps({
            "inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
        }).encode()
        r = c.post(f"{h.url}/flowers/v2/models/iris-model/infer", content=header + raw,
                   headers={"Inference-Header-Content-Length": str(len(header)),
                            "Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        n = int(r.headers["inference-header-content-length"])
        outs = {o["name"]: o for o in json.loads(r.content[:n])["outputs"]}
        assert outs["label"]["data"] == want["label"].tolist()
        probs = np.frombuffer(r.content[n:], dtype="<f4").reshape(5, 3)
        np.testing.assert_allclose(probs, want["probabilities"], rtol=1e-6)


def test_what_is_forwarded_and_returned(hub: Callable[..., Hub], apps: Callable[[Any], AppServer]) -> None:
    seen: list[dict[str, Any]] = []
    echo = apps(echo_app(seen))
    h = hub({("echo", 1): FakeSet(echo.url)}, {"echo": Target("echo-model", 1)})
    with httpx.Client(timeout=30) as c:
        r = c.put(f"{h.url}/echo/v1/models/echo-model:predict?a=1&b=x%20y&a=2", content=b"payload", headers={
            "authorization": "Bearer secret", "cookie": "c=1", "x-custom": "1", "content-type": "application/json",
            "accept": "application/json", "inference-header-content-length": "3", "x-request-id": "rid-1",
            "x-routing-key": "user-7"})
        assert r.status_code == 201
        assert r.content == b"\x00\x01echo"
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["inference-header-content-length"] == "0"
        assert r.headers["x-request-id"] == "rid-1"
        assert (r.headers["x-mlport-deployment"], r.headers["x-mlport-version"]) == ("echo", "1")
        assert "set-cookie" not in r.headers and "x-internal" not in r.headers
        got = seen[-1]
        assert (got["method"], got["raw_path"], got["query"], got["body"]) == (
            "PUT", "/v1/models/echo:predict", "a=1&b=x%20y&a=2", b"payload")
        headers = got["headers"]
        for name, value in (("content-type", "application/json"), ("accept", "application/json"),
                            ("inference-header-content-length", "3"), ("x-request-id", "rid-1"),
                            ("x-routing-key", "user-7")):
            assert headers[name] == value
        assert not {"authorization", "cookie", "x-custom"} & set(headers)
        # escaped characters reach the replica escaped
        r = c.get(f"{h.url}/echo/models/echo-model/a%20b/%C3%A9")
        assert r.status_code == 201
        assert (seen[-1]["method"], seen[-1]["raw_path"], seen[-1]["query"]) == ("GET", "/models/echo/a%20b/%C3%A9", "")


def test_errors(hub: Callable[..., Hub], apps: Callable[[Any], AppServer]) -> None:
    seen: list[dict[str, Any]] = []
    echo = apps(echo_app(seen))
    release = threading.Event()
    held_hits: list[str] = []
    held = apps(held_app(release, held_hits))
    h = hub({("echo", 1): FakeSet(echo.url), ("empty", 1): FakeSet(), ("slow", 1): FakeSet(held.url)},
            {"echo": Target("echo-model", 1), "empty": Target("empty", 1), "slow": Target("slow", 1)},
            max_body_bytes=1024, timeout_s=2.0)

    def error(r: httpx.Response, status: int, *words: str) -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        message = r.json()["error"]
        assert all(w in message for w in words), message

    try:
        with httpx.Client(timeout=30) as c:
            error(c.post(f"{h.url}/nope/v2/models/nope/infer", json={}), 404, "nope")
            error(c.post(f"{h.url}/echo/v2/models/echo/infer", content=b"x" * 2048), 413, "1024")
            error(c.post(f"{h.url}/echo/v2/models/echo/infer", content=iter([b"x" * 700] * 3)), 413, "1024")
            error(c.post(f"{h.url}/echo/v2/repository/models/echo/unload"), 403, "repository")
            error(c.post(f"{h.url}/empty/v2/models/empty/infer", json={}), 503, "empty")
            assert h.controller.ensure_calls >= 1
            error(c.post(f"{h.url}/slow/v2/models/slow/infer", json={}), 504, "slow")
            assert held_hits  # it did reach the replica
            assert len(seen) == 0  # nothing refused reached a replica
            # a body at the limit passes
            assert c.post(f"{h.url}/echo/v2/models/echo/infer", content=b"x" * 1024).status_code == 201
        # '..' segments, sent verbatim (HTTP clients would resolve them)
        conn = http.client.HTTPConnection("127.0.0.1", int(h.url.split(":")[2].split("/")[0]), timeout=30)
        try:
            for path in ("/deployments/echo/v2/../../x", "/deployments/echo/models/%2E%2E/secret"):
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 400, body
                assert "'..'" in json.loads(body)["error"]
        finally:
            conn.close()
        assert len(seen) == 1
    finally:
        release.set()


def test_an_answer_is_never_retried(hub: Callable[..., Hub], apps: Callable[[Any], AppServer]) -> None:
    hits: list[str] = []
    a, b = apps(status_app(500, hits)), apps(status_app(500, hits))
    h = hub({("bad", 1): FakeSet(a.url, b.url)}, {"bad": Target("bad", 1)}, retries=2)
    with httpx.Client(timeout=30) as c:
        for i in range(6):
            r = c.post(f"{h.url}/bad/v2/models/bad/infer", json={})
            assert r.status_code == 500
            assert r.json() == {"error": "replica says 500"}
            assert len(hits) == i + 1


def test_a_failed_connection_is_retried(hub: Callable[..., Hub], apps: Callable[[Any], AppServer]) -> None:
    seen: list[dict[str, Any]] = []
    echo = apps(echo_app(seen))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    h = hub({("echo", 1): FakeSet(dead, echo.url), ("gone", 1): FakeSet(dead)},
            {"echo": Target("echo-model", 1), "gone": Target("gone", 1)})
    with httpx.Client(timeout=30) as c:
        for _ in range(20):
            assert c.post(f"{h.url}/echo/v2/models/echo/infer", content=b"{}").status_code == 201
        assert len(seen) == 20  # each request reached the live replica once
        r = c.post(f"{h.url}/gone/v2/models/gone/infer", content=b"{}")
        assert r.status_code == 503 and "3 attempts" in r.json()["error"]
    assert [e.inflight for e in h.controller.sets[("echo", 1)].eps] == [0, 0]


def run_load(url: str, n: int, concurrency: int, on_done: Callable[[int], None] | None = None
             ) -> list[tuple[int, Any, dict[str, str]]]:
    """``n`` single-row OIP requests (row i % 150, label only), ``concurrency`` at a time."""
    results: list[tuple[int, Any, dict[str, str]]] = [(0, None, {})] * n
    done = 0

    async def main() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            async def call(i: int) -> None:
                nonlocal done
                row = X[i % len(X): i % len(X) + 1]
                r = await client.post(url, json=oip_body(row, ["label"]))
                body = r.json() if r.headers.get("content-type") == "application/json" else r.text
                results[i] = (r.status_code, body, dict(r.headers))
                done += 1
                if on_done is not None:
                    on_done(done)

            await bounded(n, concurrency, call)

    asyncio.run(main())
    return results


def label_of(result: tuple[int, Any, dict[str, str]]) -> int:
    status, body, _ = result
    assert status == 200, body
    outs = {o["name"]: o["data"] for o in body["outputs"]}
    return int(outs["label"][0])


@pytest.mark.slow
def test_a_replica_killed_under_load(hub: Callable[..., Hub], models: dict[str, Path], tmp_path: Path) -> None:
    a = start_server(models["iris1"], "--name", "flowers", "--grpc-port", "0", "--poll-interval", "0",
                     log_dir=tmp_path)
    try:
        b = start_server(models["iris1"], "--name", "flowers", "--grpc-port", "0", "--poll-interval", "0",
                         log_dir=tmp_path)
    except Exception:
        a.stop()
        raise
    try:
        rs = FakeSet(a.url, b.url)
        h = hub({("flowers", 1): rs}, {"flowers": FLOWERS})
        want = ort_run(models["iris1"], {"input": X})["label"].tolist()

        def kill(done: int) -> None:
            if done == 100:
                os.kill(b.proc.pid, signal.SIGKILL)

        results = run_load(f"{h.url}/flowers/v2/models/flowers/infer", 400, 8, kill)
        assert b.proc.wait(30) == -signal.SIGKILL
        assert [label_of(r) for r in results] == [want[i % len(X)] for i in range(400)]
        assert [e.inflight for e in rs.eps] == [0, 0]
    finally:
        a.stop()
        b.stop()


# -- strategies ----------------------------------------------------------------------------------------------

def test_canary_share(hub: Callable[..., Hub], replicas: dict[str, Server]) -> None:
    seed, n = 2024, 400
    sets = {("scaler", 1): FakeSet(replicas["x1"].url), ("scaler", 2): FakeSet(replicas["x2"].url)}
    h = hub(sets, {"scaler": Target("scale-model", 1, "canary", 2, 20.0)}, rng=random.Random(seed))
    versions: list[str] = []

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            async def call(i: int) -> None:
                x = [float(i), 1.0, -2.5]
                r = await client.post(f"{h.url}/scaler/v2/models/scale-model/infer", json={
                    "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": x}]})
                version = r.headers["x-mlport-version"]
                # the answer comes from the version the header names (y = x * version)
                assert outputs_of(r)["y"] == [v * int(version) for v in x]
                versions.append(version)

            await bounded(n, 8, call)

    asyncio.run(main())
    share = versions.count("2") / n
    draws = random.Random(seed)
    assert versions.count("2") == sum(draws.random() * 100 < 20.0 for _ in range(n))  # one draw per request
    assert abs(share - 0.2) <= 0.06, share
    assert set(versions) == {"1", "2"}


def test_sticky_canary(hub: Callable[..., Hub], replicas: dict[str, Server]) -> None:
    sets = {("scaler", 1): FakeSet(replicas["x1"].url), ("scaler", 2): FakeSet(replicas["x2"].url)}
    h = hub(sets, {"scaler": Target("scale-model", 1, "canary", 2, 50.0, sticky_header="x-user")})
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    with httpx.Client(timeout=60) as c:
        for user in ("alice", "bob", "carol", "dave"):
            want = "2" if bucket(user) < 50.0 else "1"
            got = {c.post(f"{h.url}/scaler/v2/models/scaler/infer", json=body, headers={"x-user": user})
                   .headers["x-mlport-version"] for _ in range(8)}
            assert got == {want}, user


def test_shadow_agreement(hub: Callable[..., Hub], replicas: dict[str, Server], models: dict[str, Path]) -> None:
    sets = {("flowers", 1): FakeSet(replicas["iris1"].url), ("flowers", 2): FakeSet(replicas["iris2"].url)}
    h = hub(sets, {"flowers": Target("iris-model", 1, "shadow", 2)})
    live = ort_run(models["iris1"], {"input": X})["label"].tolist()
    shadow = ort_run(models["iris2"], {"input": X})["label"].tolist()
    agree = sum(a == b for a, b in zip(live, shadow, strict=True))
    assert 0 < agree < len(X)  # the two versions differ on some rows: the test means something
    url = f"{h.url}/flowers/v2/models/iris-model/infer"
    sent = 0
    for start in range(0, len(X), 10):  # batches of 10 at once: never near the 64 pending copies
        results = run_batch(url, range(start, min(start + 10, len(X))))
        for i, result in results:
            assert result[2]["x-mlport-version"] == "1"
            assert label_of(result) == live[i]  # the client only ever sees the live version's answers
        sent += len(results)
        wait_for(lambda n=sent: h.recorder.summary("flowers")["requests"] == n, 60, "the shadow copies")
    s = h.recorder.summary("flowers")
    assert (s["primary"], s["shadow"], s["requests"], s["agreed"], s["errors"], s["dropped"]) == (
        1, 2, len(X), agree, 0, 0)
    assert s["agreement_rate"] == pytest.approx(agree / len(X))
    assert len(s["recent_disagreements"]) == min(20, len(X) - agree)
    for d in s["recent_disagreements"]:
        assert (d["live_status"], d["shadow_status"]) == (200, 200)
        assert d["reason"].startswith("outputs[label].data[0]")
    assert s["live_latency_ms"]["mean"] > 0 and s["shadow_latency_ms"]["p95"] is not None


def run_batch(url: str, indices: range) -> list[tuple[int, tuple[int, Any, dict[str, str]]]]:
    async def main() -> list[tuple[int, tuple[int, Any, dict[str, str]]]]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def call(i: int) -> tuple[int, tuple[int, Any, dict[str, str]]]:
                r = await client.post(url, json=oip_body(X[i:i + 1], ["label"]))
                return i, (r.status_code, r.json(), dict(r.headers))

            return list(await asyncio.gather(*(call(i) for i in indices)))

    return asyncio.run(main())


def test_shadow_copies_are_bounded(hub: Callable[..., Hub], apps: Callable[[Any], AppServer]) -> None:
    seen: list[dict[str, Any]] = []
    echo = apps(echo_app(seen))
    release = threading.Event()
    held_hits: list[str] = []
    held = apps(held_app(release, held_hits))
    h = hub({("echo", 1): FakeSet(echo.url), ("echo", 2): FakeSet(held.url)},
            {"echo": Target("echo-model", 1, "shadow", 2)}, shadow_max_pending=4)
    try:
        with httpx.Client(timeout=30) as c:
            for _ in range(20):
                r = c.post(f"{h.url}/echo/v2/models/echo/infer", content=b"{}")
                assert (r.status_code, r.headers["x-mlport-version"]) == (201, "1")
        wait_for(lambda: len(held_hits) == 4, 60, "4 held copies")
        assert h.gateway.shadow_pending == 4
        s = h.recorder.summary("echo")
        assert (s["requests"], s["dropped"]) == (0, 16)
    finally:
        release.set()
    wait_for(lambda: h.recorder.summary("echo")["requests"] == 4, 60, "the held copies to be recorded")
    s = h.recorder.summary("echo")
    assert (s["requests"], s["agreed"], s["dropped"], s["errors"]) == (4, 0, 16, 0)
    assert "content type" in s["recent_disagreements"][0]["reason"]
    assert len(seen) == 20 and len(held_hits) == 4


# -- with the real controller ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_with_the_real_controller(tmp_path: Path, models: dict[str, Path], apps: Callable[[Any], AppServer]) -> None:
    policy = ScalePolicy(min_replicas=2, max_replicas=2)
    state = FakeState([DeploymentSpec("flowers", FLOWERS, policy)])
    controller = Controller(state=state, fetch=lambda m, v: models["iris1"], run_dir=tmp_path / "run",
                            interval_s=0.2)
    gateway = Gateway(controller=controller, state=state, shadow=ShadowRecorder(Database(tmp_path / "hub.db")))
    server = apps(gateway_app(gateway, controller))
    url = f"{server.url}/deployments/flowers/v2/models/iris-model/infer"
    want = ort_run(models["iris1"], {"input": X})["label"].tolist()

    def two_ready() -> bool:
        rs = controller.replicas("flowers", 1)
        return rs is not None and len(rs.endpoints()) == 2

    wait_for(two_ready, 180, "two ready replicas")
    rs = controller.replicas("flowers", 1)
    assert rs is not None
    victim = rs.endpoints()[0].pid

    def kill(done: int) -> None:
        if done == 100:
            os.kill(victim, signal.SIGKILL)

    results = run_load(url, 400, 8, kill)
    assert [label_of(r) for r in results] == [want[i % len(X)] for i in range(400)]
    assert {r[2]["x-mlport-version"] for r in results} == {"1"}
    # the controller brings the killed replica back
    wait_for(lambda: two_ready() and victim not in rs.pids(), 180, "the replica restarted")
