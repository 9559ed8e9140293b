"""The hub records images built from versions and renders a deployment's Kubernetes and KServe manifests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.builders import iris_onnx
from tests.hubutil import HubProc, cli, start_hub
from tests.s3server import S3Server, make_bucket, s3_server  # noqa: F401 - the session fixture

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def hub(tmp_path: Path, s3_server: S3Server) -> Iterator[HubProc]:  # noqa: F811
    bucket = make_bucket(s3_server)
    env = {"MLPORT_HUB_STORE": f"s3://{bucket}/hub", "MLPORT_HUB_S3_ENDPOINT_URL": s3_server.endpoint_url,
           "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
           "AWS_DEFAULT_REGION": s3_server.region}
    proc = start_hub(tmp_path / "hub", env=env)
    proc.bucket = bucket  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


def test_images_and_manifests_of_a_deployment(hub: HubProc, tmp_path: Path) -> None:
    admin = hub.client(hub.login())
    assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
    for version, c in ((1, 1.0), (2, 0.02)):
        path = iris_onnx(tmp_path / f"v{version}" / "iris.onnx", c=c)
        r = admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"}, content=path.read_bytes(),
                       headers={"content-type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    r = admin.post("/api/v1/deployments", json={"name": "iris-prod", "model": "iris", "version": 1,
                                                "max_replicas": 3})
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/deployments/iris-prod/canary", json={"version": 2, "percent": 20}).status_code == 200

    # no image yet: the manifests say how to build one
    r = admin.get("/api/v1/deployments/iris-prod/manifests")
    assert r.status_code == 409 and "mlport build hub://iris/1" in r.json()["error"]
    images = "/api/v1/models/iris/versions/{}/images"
    for version in (1, 2):
        r = admin.post(images.format(version), json={"image": f"registry.example/iris:{version}", "digest": DIGEST})
        assert r.status_code == 201, r.text
        assert r.json()["pinned"] == f"registry.example/iris@{DIGEST}"
    assert admin.get(images.format(1)).json()["images"][0]["image"] == "registry.example/iris:1"
    # bad records are refused with the value named
    for bad, message in (({"image": "Iris:1", "digest": DIGEST}, "image"), ({"image": "r/i:1", "digest": "md5:x"},
                                                                             "digest"),
                         ({"image": "r/i:1", "digest": DIGEST, "extra": 1}, "unknown field")):
        r = admin.post(images.format(1), json=bad)
        assert r.status_code == 400 and message in r.json()["error"], r.text
    assert admin.post(images.format(9), json={"image": "r/i:1", "digest": DIGEST}).status_code == 404

    r = admin.get("/api/v1/deployments/iris-prod/manifests", params={"target": "kubernetes"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    objects = list(yaml.safe_load_all(r.text))
    for obj in objects:
        if obj["kind"] != "HTTPRoute":
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert [d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments] == \
        [f"registry.example/iris@{DIGEST}"] * 2
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [8000, 2000]
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 3

    r = admin.get("/api/v1/deployments/iris-prod/manifests",
                  params={"target": "kserve", "image": "registry.example/mlport:0.1.0", "format": "json"})
    assert r.status_code == 200, r.text
    runtime, isvc = r.json()["objects"]
    assert runtime["kind"] == "ClusterServingRuntime"
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"]["storageUri"] == f"s3://{hub.bucket}/hub/models/iris/2/iris.onnx"  # type: ignore[attr-defined]
    # A/B: an InferenceService per version behind an InferenceGraph's Splitter; shadow: refused, the way named
    kserve = {"target": "kserve", "image": "registry.example/mlport:0.1.0", "format": "json"}
    r = admin.post("/api/v1/deployments/iris-prod/ab", json={"version": 2, "percent": 30, "force": True})
    assert r.status_code == 200, r.text
    r = admin.get("/api/v1/deployments/iris-prod/manifests", params=kserve)
    assert r.status_code == 200, r.text
    assert [o["kind"] for o in r.json()["objects"]] == ["ClusterServingRuntime", "InferenceService",
                                                        "InferenceService", "InferenceGraph"]
    steps = r.json()["objects"][3]["spec"]["nodes"]["root"]["steps"]
    assert [(s["serviceName"], s["weight"]) for s in steps] == [("iris-prod-v1", 70), ("iris-prod-v2", 30)]
    r = admin.post("/api/v1/deployments/iris-prod/shadow", json={"version": 2, "force": True})
    assert r.status_code == 200, r.text
    r = admin.get("/api/v1/deployments/iris-prod/manifests", params=kserve)
    assert r.status_code == 400 and "RequestMirror" in r.json()["error"], r.text
    # refusals
    assert admin.get("/api/v1/deployments/iris-prod/manifests", params={"target": "kserve"}).status_code == 400
    assert admin.get("/api/v1/deployments/iris-prod/manifests", params={"target": "nomad"}).status_code == 400
    assert admin.get("/api/v1/deployments/nope/manifests").status_code == 404
    r = admin.post("/api/v1/service-accounts", json={"name": "app", "roles": ["predictor"]})
    predictor_token = r.json()["access_token"]
    assert hub.client(predictor_token).get("/api/v1/deployments/iris-prod/manifests").status_code == 403


def test_cli_renders_a_hub_deployment_and_lists_jobs(hub: HubProc, tmp_path: Path) -> None:
    admin = hub.client(hub.login())
    assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
    path = iris_onnx(tmp_path / "v1" / "iris.onnx")
    r = admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"}, content=path.read_bytes(),
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/deployments", json={"name": "iris-b", "model": "iris", "version": 1}).status_code == 201
    assert admin.post("/api/v1/models/iris/versions/1/images",
                      json={"image": "registry.example/iris:1", "digest": DIGEST}).status_code == 201
    home = tmp_path / "home"
    auth = ("--hub", hub.url, "--token", hub.login())
    out = tmp_path / "iris-b.yaml"
    done = cli(home, "k8s", "render", "iris-b", *auth, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == admin.get("/api/v1/deployments/iris-b/manifests").text
    done = cli(home, "k8s", "render", "iris-b", *auth, "--target", "kserve", "--image", "reg.example/mlport:1")
    assert done.returncode == 0 and "kind: InferenceService" in done.stdout and "storageUri: s3://" in done.stdout
    done = cli(home, "k8s", "render", "nope", *auth)
    assert done.returncode == 1 and "404" in done.stderr and "Traceback" not in done.stderr
    done = cli(home, "jobs", "list", *auth)
    assert done.returncode == 0 and "no jobs" in done.stdout
    done = cli(home, "jobs", "get", "0123abcd", *auth)
    assert done.returncode == 1 and "not found" in done.stderr
    done = cli(home, "versions", "build", "iris", "1", *auth)
    assert done.returncode == 2 and "--tag" in done.stderr
    done = cli(home, "versions", "get", "iris", "1", *auth)
    assert done.returncode == 0, done.stderr
    assert f"registry.example/iris:1  {DIGEST}" in done.stdout
    done = cli(home, "versions", "get", "iris", "1", *auth, "--output", "json")
    assert json.loads(done.stdout)["images"][0]["digest"] == DIGEST
