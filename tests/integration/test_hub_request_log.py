"""A hub deployment's request log: settings through the API and the CLI, records read back per deployment with the
version that answered each request (a canary runs two versions), against a real ``mlport hub``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlport.observability.requestlog import as_arrays
from tests.builders import iris_onnx
from tests.hubutil import HubProc, cli, ready_versions, wait_for

pytestmark = pytest.mark.slow

INFER = "/deployments/iris-d/v2/models/iris-d/infer"
ROW = [5.1, 3.5, 1.4, 0.2]


def _body(rid: str) -> dict[str, Any]:
    return {"id": rid, "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}


def _logs(client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/deployments/iris-d/logs", params=params)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _setup(hub: HubProc, tmp_path: Path) -> httpx.Client:
    admin = hub.client(hub.login())
    assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
    for c in (1.0, 0.05):  # two versions that answer differently on some rows
        data = iris_onnx(tmp_path / f"iris-{c}.onnx", c=c).read_bytes()
        r = admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"}, content=data)
        assert r.status_code == 201, r.text
    r = admin.post("/api/v1/deployments", json={"name": "iris-d", "model": "iris", "version": 1})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(admin, "iris-d").get(1), what="version 1 ready")
    return admin


def test_deployment_logs_name_the_version_that_answered(hub: HubProc, tmp_path: Path) -> None:
    admin = _setup(hub, tmp_path)
    assert admin.get("/api/v1/deployments/iris-d/logging").json()["logging"] is None
    assert admin.get("/api/v1/deployments/nope/logs").status_code == 404
    bad = admin.put("/api/v1/deployments/iris-d/logging", json={"sample": 3})
    assert bad.status_code == 400 and "sample" in bad.json()["error"]
    r = admin.put("/api/v1/deployments/iris-d/logging", json={"sample": 1.0, "payload": "all"})
    assert r.status_code == 200, r.text
    assert r.json()["logging"]["payload"] == "all"

    # the replicas start again with the request log on: wait until a request is logged
    probes = iter(range(10_000))

    def logged() -> bool:
        admin.post(INFER, json=_body(f"probe-{next(probes)}"))
        return bool(_logs(admin)["records"])

    wait_for(logged, what="a logged request")
    r = admin.post("/api/v1/deployments/iris-d/canary", json={"version": 2, "percent": 50})
    assert r.status_code == 200, r.text
    wait_for(lambda: ready_versions(admin, "iris-d").get(2), what="version 2 ready")
    cursor = _logs(admin)["cursor"]

    answered: dict[str, str] = {}
    for i in range(40):
        resp = admin.post(INFER, json=_body(f"req-{i}"))
        assert resp.status_code == 200, resp.text
        answered[f"req-{i}"] = resp.json()["model_version"]
    assert set(answered.values()) == {"1", "2"}

    def new_records() -> list[dict[str, Any]] | None:
        records = _logs(admin, cursor=cursor)["records"]
        return records if len(records) >= 40 else None

    records = wait_for(new_records, what="40 records")
    assert {r["id"]: r["version"] for r in records} == answered
    first = records[0]
    assert first["model"] == "iris-d" and first["protocol"] == "v2" and first["status"] == "ok"
    sent = as_arrays(first["inputs"])["input"]
    assert sent.dtype == np.float32 and sent.tobytes() == np.array([ROW], dtype=np.float32).tobytes()

    # the cursor of an answer gives only what came after it; a forged one is refused
    later = _logs(admin, cursor=_logs(admin)["cursor"])
    assert later["records"] == []
    assert admin.get("/api/v1/deployments/iris-d/logs", params={"cursor": "e30x"}).status_code == 400
    assert admin.get("/api/v1/deployments/iris-d/logs", params={"limit": "0"}).status_code == 400
    assert len(_logs(admin, limit=5)["records"]) == 5

    # a sink elsewhere is an admin's choice
    assert admin.post("/api/v1/users", json={"name": "dave", "password": "dave-password-long",
                                             "roles": ["deployer"]}).status_code == 201
    dave = hub.client(hub.login("dave", "dave-password-long"))
    refused = dave.put("/api/v1/deployments/iris-d/logging", json={"sink": str(tmp_path / "elsewhere")})
    assert refused.status_code == 403

    # the CLI reads the same records, and turns logging off
    env = {"MLPORT_HUB_URL": hub.url, "MLPORT_HUB_TOKEN": hub.login()}
    out = cli(tmp_path / "cfg", "logs", "iris-d", "--output", "json", "--limit", "3", env=env)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["model"] for line in out.stdout.splitlines()] == ["iris-d"] * 3
    shown = cli(tmp_path / "cfg", "logging", "iris-d", env=env)
    assert shown.returncode == 0 and "sample 1.0, payload all" in shown.stdout, shown.stdout + shown.stderr
    off = cli(tmp_path / "cfg", "logging", "iris-d", "--off", env=env)
    assert off.returncode == 0, off.stderr
    assert admin.get("/api/v1/deployments/iris-d/logging").json()["logging"] is None
