"""The hub end to end, as a user drives it: a real ``mlport hub`` process with real replica processes, on a
local artifact folder and on a real S3-protocol server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import numpy as np
import pytest

from tests.builders import iris_onnx, ort_run
from tests.hubutil import JWT_SECRET, HubProc, ready_versions, start_hub, wait_for

pytestmark = pytest.mark.slow

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [6.3, 2.8, 5.1, 1.5], [6.0, 2.2, 5.0, 1.5],
                 [4.9, 2.5, 4.5, 1.7], [5.9, 3.0, 5.1, 1.8], [6.1, 2.6, 5.6, 1.4], [5.6, 3.0, 4.1, 1.3]],
                dtype=np.float32)


def _infer_body(rows: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                        "data": rows.ravel().tolist()}]}


def _outputs(resp: httpx.Response) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp.json()["outputs"]}


@pytest.fixture(params=["local", "s3"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubProc]:
    env: dict[str, str] = {}
    server = None
    if request.param == "s3":
        from tests.s3server import make_bucket, start_s3_server

        server = start_s3_server(tmp_path)
        make_bucket(server, "models")
        env = {"MLPORT_HUB_STORE": "s3://models/hub", "MLPORT_HUB_S3_ENDPOINT_URL": server.endpoint_url,
               "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
               "AWS_DEFAULT_REGION": server.region}
    proc = start_hub(tmp_path / "hub", env=env)
    try:
        yield proc
    finally:
        proc.stop()
        if server is not None:
            server.stop()


def test_hub_end_to_end(hub: HubProc, tmp_path: Path) -> None:
    v1_path = iris_onnx(tmp_path / "v1" / "iris.onnx")
    v2_path = iris_onnx(tmp_path / "v2" / "iris.onnx", c=0.02)
    want_v1 = ort_run(v1_path, {"input": ROWS})
    want_v2 = ort_run(v2_path, {"input": ROWS})
    assert not np.array_equal(want_v1["label"], want_v2["label"]), "the two versions must disagree on some rows"

    admin = hub.client(hub.login())
    # registry: a model with two immutable versions
    assert admin.post("/api/v1/models", json={"name": "iris", "description": "iris classifier"}).status_code == 201
    assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 409
    for path in (v1_path, v2_path):
        r = admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"}, content=path.read_bytes(),
                       headers={"content-type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    versions = admin.get("/api/v1/models/iris/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    import hashlib

    assert versions[0]["sha256"] == hashlib.sha256(v1_path.read_bytes()).hexdigest()
    assert versions[0]["format"] == "onnx"
    assert [i["name"] for i in versions[0]["signature"]["inputs"]] == ["input"]

    # service accounts: a predictor for this deployment and one for another
    def service(name: str, deployments: list[str]) -> str:
        r = admin.post("/api/v1/service-accounts", json={"name": name, "roles": ["predictor"],
                                                          "deployments": deployments})
        assert r.status_code == 201, r.text
        token: str = r.json()["access_token"]
        return token

    predictor = service("app", ["iris-prod"])
    other = service("other-app", ["elsewhere"])

    # deploy v1 and predict through the gateway with the predictor token
    r = admin.post("/api/v1/deployments", json={"name": "iris-prod", "model": "iris", "version": 1})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(admin, "iris-prod").get(1), what="v1 ready")
    user = hub.client(predictor)
    infer = "/deployments/iris-prod/v2/models/iris-prod/infer"
    r = user.post(infer, json=_infer_body(ROWS))
    assert r.status_code == 200, r.text
    assert r.headers["x-mlport-version"] == "1"
    got = _outputs(r)
    assert np.array_equal(got["label"], want_v1["label"])
    np.testing.assert_allclose(got["probabilities"], want_v1["probabilities"], rtol=1e-5, atol=1e-6)
    # the registry model's name works as well as the deployment's, and TF Serving's API goes through too
    assert user.post("/deployments/iris-prod/v2/models/iris/infer", json=_infer_body(ROWS)).status_code == 200
    r = user.post("/deployments/iris-prod/v1/models/iris-prod:predict", json={"instances": ROWS.tolist()})
    assert r.status_code == 200, r.text

    # refusals: no token, expired, alg none, another deployment's token, a predictor on the management API
    assert httpx.post(hub.url + infer, json=_infer_body(ROWS)).status_code == 401
    now = int(time.time())
    expired = jwt.encode({"sub": "app", "roles": ["predictor"], "kind": "service", "iat": now - 7200,
                          "nbf": now - 7200, "exp": now - 3600, "iss": "mlport-hub", "aud": "mlport",
                          "jti": "e" * 32}, JWT_SECRET, algorithm="HS256")
    assert hub.client(expired).post(infer, json=_infer_body(ROWS)).status_code == 401
    unsigned = jwt.encode({"sub": "admin", "roles": ["admin"], "kind": "user", "iat": now, "nbf": now,
                           "exp": now + 3600, "iss": "mlport-hub", "aud": "mlport", "jti": "n" * 32},
                          None, algorithm="none")
    assert hub.client(unsigned).post(infer, json=_infer_body(ROWS)).status_code == 401
    assert hub.client(unsigned).get("/api/v1/models").status_code == 401
    assert hub.client(other).post(infer, json=_infer_body(ROWS)).status_code == 403
    assert user.get("/api/v1/models").status_code == 403
    assert user.post("/api/v1/deployments/iris-prod/rollback").status_code == 403

    # canary v2 at 20%: the measured share over N requests is within tolerance
    r = admin.post("/api/v1/deployments/iris-prod/canary", json={"version": 2, "percent": 20})
    assert r.status_code == 200, r.text
    wait_for(lambda: ready_versions(admin, "iris-prod").get(2), what="v2 ready")
    n = 400
    served = [user.post(infer, json=_infer_body(ROWS[:1])).headers["x-mlport-version"] for _ in range(n)]
    share = served.count("2") / n
    assert 0.13 <= share <= 0.27, share
    assert set(served) == {"1", "2"}

    # promote: v2 serves everything, with v2's answers
    assert admin.post("/api/v1/deployments/iris-prod/promote").status_code == 200
    for _ in range(20):
        r = user.post(infer, json=_infer_body(ROWS))
        assert r.headers["x-mlport-version"] == "2"
    assert np.array_equal(_outputs(r)["label"], want_v2["label"])

    # roll back: v1 again
    r = admin.post("/api/v1/deployments/iris-prod/rollback")
    assert r.status_code == 200, r.text
    assert r.json()["target"] == {"model": "iris", "primary": 1, "strategy": "single", "candidate": None,
                                  "percent": 0.0, "sticky_header": None}
    wait_for(lambda: ready_versions(admin, "iris-prod").get(1), what="v1 ready after rollback")
    for _ in range(20):
        r = user.post(infer, json=_infer_body(ROWS))
        assert r.status_code == 200 and r.headers["x-mlport-version"] == "1"

    # shadow v2: answers always come from v1; the comparison is recorded
    assert admin.post("/api/v1/deployments/iris-prod/shadow", json={"version": 2}).status_code == 200
    wait_for(lambda: ready_versions(admin, "iris-prod").get(2), what="shadow v2 ready")
    def agrees(idx: list[int]) -> bool:
        return bool(np.array_equal(want_v1["label"][idx], want_v2["label"][idx])
                    and np.allclose(want_v1["probabilities"][idx], want_v2["probabilities"][idx],
                                    rtol=1e-5, atol=1e-6))

    differ = [i for i in range(len(ROWS)) if want_v1["label"][i] != want_v2["label"][i]]
    batches = [[0], differ[:1], [0, 1, 2]]
    for i in range(30):
        idx = batches[i % 3]
        r = user.post(infer, json=_infer_body(ROWS[idx]))
        assert r.status_code == 200 and r.headers["x-mlport-version"] == "1"
        assert np.array_equal(_outputs(r)["label"], want_v1["label"][idx])
    summary = wait_for(lambda: (s := admin.get("/api/v1/deployments/iris-prod/shadow").json())["requests"] >= 30
                       and s, what="30 shadow comparisons")
    assert summary["primary"] == 1 and summary["shadow"] == 2
    assert summary["requests"] == 30 and summary["errors"] == 0
    expected = sum(agrees(batches[i % 3]) for i in range(30)) / 30
    assert summary["agreement_rate"] == pytest.approx(expected)
    assert summary["live_latency_ms"]["p50"] > 0 and summary["shadow_latency_ms"]["p50"] > 0

    # the history keeps every change
    actions = [e["action"] for e in admin.get("/api/v1/deployments/iris-prod/history").json()["history"]]
    assert actions[-1] == "create" and actions[0].startswith("shadow")
    assert any(a.startswith("promote") for a in actions) and any(a.startswith("rollback") for a in actions)

    # a deployed model cannot be deleted; after the deployment is gone it can
    r = admin.delete("/api/v1/models/iris")
    assert r.status_code == 409 and "iris-prod" in r.json()["error"]
    assert admin.delete("/api/v1/deployments/iris-prod").status_code == 204
    assert admin.delete("/api/v1/models/iris").status_code == 204
    assert admin.get("/api/v1/models/iris").status_code == 404
    assert user.post(infer, json=_infer_body(ROWS)).status_code == 404
