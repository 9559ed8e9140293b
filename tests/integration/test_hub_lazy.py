"""Lazy deployments through a real hub: replicas start without loading their model, the first request through the
gateway loads it once, and a load slower than the replica's load timeout gives its 503 with Retry-After.

The model is a trusted Python model that appends a line to a file each time it loads, so loads are counted
from outside the replicas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.builders import counted_python_model
from tests.hubutil import HubProc, cli_login, running_hub
from tests.hubutil import cli_ok as _ok

pytestmark = pytest.mark.slow

GATEWAY_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProc]:
    env = {"MLPORT_HUB_GATEWAY_TIMEOUT_S": str(GATEWAY_TIMEOUT_S)}
    with running_hub(tmp_path_factory.mktemp("hub"), env=env) as hub:
        yield hub


@pytest.fixture
def home(hub: HubProc, tmp_path: Path) -> Path:
    return cli_login(hub, tmp_path)


def _register(home: Path, name: str, loads: Path, load_delay: float) -> None:
    folder = counted_python_model(home / f"{name}-model", loads, name, load_delay=load_delay)
    _ok(home, "models", "create", name)
    _ok(home, "versions", "upload", name, str(folder))  # not trusted: the hub does not run it to read a signature


def _loads(loads: Path) -> int:
    return len(loads.read_text().split()) if loads.exists() else 0


def _infer(api: httpx.Client, deployment: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [0.0, 2.0]}]}
    return api.post(f"/deployments/{deployment}/v2/models/{deployment}/infer", json=body)


def test_a_lazy_deployment_loads_its_model_once_on_the_first_requests(hub: HubProc, home: Path) -> None:
    loads = home / "loads.txt"
    _register(home, "cold", loads, load_delay=2.0)
    out = json.loads(_ok(home, "deploy", "cold-dep", "--model", "cold", "--trusted", "--lazy", "--load-timeout",
                         "20", "--wait", "--timeout", "120", "-o", "json"))
    assert out["serving"] == {"lazy": True, "load_timeout_s": 20.0}
    assert "(lazy)" in _ok(home, "status", "cold-dep")
    api = hub.client(hub.login())
    # the replica is ready and nothing loaded yet
    assert api.get("/deployments/cold-dep/v2/health/ready").status_code == 200
    assert api.get("/deployments/cold-dep/v2/models/cold-dep/ready").status_code == 503
    assert _loads(loads) == 0
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: _infer(api, "cold-dep"), range(20)))
    assert [a.status_code for a in answers] == [200] * 20, answers[0].text
    assert answers[0].json()["outputs"][0]["data"] == [1.0, 3.0]
    assert _loads(loads) == 1
    assert _infer(api, "cold-dep").status_code == 200 and _loads(loads) == 1
    # the replica's flags come from the deployment: switching lazy off starts eager replicas, which load at start
    _ok(home, "deploy", "cold-dep", "--model", "cold", "--trusted", "--no-lazy", "--wait", "--timeout", "120")
    assert api.get("/api/v1/deployments/cold-dep").json()["serving"]["lazy"] is False
    deadline = time.monotonic() + 60
    while _loads(loads) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _loads(loads) == 2
    _ok(home, "undeploy", "cold-dep")


def test_a_load_slower_than_the_load_timeout_gives_the_replicas_503_once(hub: HubProc, home: Path) -> None:
    loads = home / "loads.txt"
    _register(home, "sluggish", loads, load_delay=6.0)
    _ok(home, "deploy", "slow-dep", "--model", "sluggish", "--trusted", "--lazy", "--load-timeout", "1", "--wait",
        "--timeout", "120")
    api = hub.client(hub.login())
    first = _infer(api, "slow-dep")
    assert first.status_code == 503, first.text
    assert "still loading after 1 s" in first.json()["error"]
    assert int(first.headers["retry-after"]) >= 1
    assert first.headers["x-mlport-deployment"] == "slow-dep"
    # the gateway did not send the request again (one load), and the load went on in the replica
    deadline = time.monotonic() + 60
    while api.get("/deployments/slow-dep/v2/models/slow-dep/ready").status_code != 200:
        assert time.monotonic() < deadline, "the load did not go on"
        time.sleep(0.2)
    assert _infer(api, "slow-dep").status_code == 200
    assert _loads(loads) == 1
    _ok(home, "undeploy", "slow-dep")


def test_a_load_timeout_beyond_the_gateways_is_refused(hub: HubProc, home: Path) -> None:
    api = hub.client(hub.login())
    assert api.post("/api/v1/models", json={"name": "tiny"}).status_code == 201
    r = api.post("/api/v1/deployments", json={"name": "tiny-dep", "model": "tiny", "lazy": True,
                                              "load_timeout_s": GATEWAY_TIMEOUT_S})
    assert r.status_code == 400, r.text
    assert "load_timeout_s 30 is too long" in r.json()["error"] and "at most 24 s" in r.json()["error"]
    assert api.get("/api/v1/deployments/tiny-dep").status_code == 404
