"""The hub's gateway access log, its metrics' labels, and the replicas' metrics through the hub, against a real
``mlport hub`` process with a real deployment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import iris_onnx
from tests.hubutil import HubProc, ready_versions, start_hub, wait_for

pytestmark = pytest.mark.slow

BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
INFER = "/deployments/iris-d/v2/models/iris-d/infer"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProc]:
    proc = start_hub(tmp_path / "hub", "--access-log-format", "json")
    try:
        yield proc
    finally:
        proc.stop()


def _deploy(hub: HubProc, tmp_path: Path) -> httpx.Client:
    admin = hub.client(hub.login())
    assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
    data = iris_onnx(tmp_path / "iris.onnx").read_bytes()
    assert admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"}, content=data).status_code == 201
    r = admin.post("/api/v1/deployments", json={"name": "iris-d", "model": "iris", "version": 1})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(admin, "iris-d").get(1), what="version 1 ready")
    return admin


def test_gateway_access_log_metrics_and_replica_targets(hub: HubProc, tmp_path: Path) -> None:
    admin = _deploy(hub, tmp_path)
    assert admin.post(INFER, json=BODY, headers={"x-request-id": "req-1"}).status_code == 200
    r = admin.post(INFER, json=BODY)
    assert r.status_code == 200
    assert admin.post(INFER, json={"inputs": []}, headers={"x-request-id": "req-bad"}).status_code == 400
    assert httpx.post(hub.url + INFER, json=BODY, headers={"x-request-id": "req-anon"}).status_code == 401
    assert admin.post("/deployments/no-such/v2/health/ready").status_code == 404

    # one JSON line per gateway request, with the client's request id (or a new one, also sent to the replica)
    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in hub.log().splitlines() if line.startswith("{")]

    found = wait_for(lambda: len(lines()) >= 5 and lines(), what="five access-log lines")
    by_id = {str(line["request_id"]): line for line in found}
    assert {k: (v["deployment"], v["model"], v["version"], v["protocol"], v["status"])
            for k, v in by_id.items() if k.startswith("req-")} == {
        "req-1": ("iris-d", "iris", "1", "v2", 200),
        "req-bad": ("iris-d", "iris", "1", "v2", 400),
        "req-anon": ("iris-d", "iris", "", "v2", 401),
    }
    # a request without an id gets one: in the answer's header, the line, and sent to the replica (OIP echoes it)
    assert r.headers.get("x-request-id") in by_id and r.json()["id"] == r.headers["x-request-id"]
    assert by_id[r.headers["x-request-id"]]["status"] == 200
    unknown = [line for line in found if line["deployment"] == "no-such"]
    assert len(unknown) == 1 and unknown[0]["status"] == 404 and unknown[0]["model"] == ""
    assert all(isinstance(line["latency_ms"], float) and line["latency_ms"] > 0 for line in found)

    # labels: a deployment that exists keeps its name on refused calls; an unknown one is '-'; no _created series
    text = httpx.get(hub.url + "/metrics").text
    assert 'mlport_hub_gateway_requests_total{deployment="iris-d",status="401",version=""} 1.0' in text
    assert 'mlport_hub_gateway_requests_total{deployment="iris-d",status="200",version="1"} 2.0' in text
    assert 'deployment="-",status="404"' in text and "no-such" not in text
    assert "_created" not in text

    # Prometheus HTTP service discovery: the replica as a target on the hub's address, its metrics through the hub
    groups = httpx.get(hub.url + "/sd/replicas").json()
    assert len(groups) == 1
    (group,) = groups
    assert group["targets"] == [f"127.0.0.1:{hub.port}"]
    labels = group["labels"]
    assert {k: labels[k] for k in ("deployment", "version", "replica", "model")} == {
        "deployment": "iris-d", "version": "1", "replica": "0", "model": "iris"}
    replica = httpx.get(hub.url + labels["__metrics_path__"])
    assert replica.status_code == 200 and replica.headers["content-type"].startswith("text/plain")
    assert 'mlport_requests_total{model="iris-d",protocol="v2",status="ok",version="1"} 2.0' in replica.text
    assert "_created" not in replica.text
    missing = httpx.get(hub.url + "/sd/replicas/iris-d/1/7/metrics")
    assert missing.status_code == 404 and "replica 7" in missing.json()["error"]
