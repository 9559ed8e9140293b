"""``mlport k8s``: manifests written by the real CLI, validated by the official Kubernetes schemas and loaded by
the KServe SDK's model classes (unknown fields fail)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.builders import scale_onnx
from tests.conftest import Server
from tests.conftest import __file__ as _conftest

TOOL = Path(_conftest).parent / "tools" / "kserve_load.py"
GATEWAY_CHECK = Path(_conftest).parent / "tools" / "gateway_api_check.mjs"
#: The npm packages that check the HTTPRoutes: the Gateway API's models (validators and TypeScript types generated
#: from the Gateway API's Go types) and the TypeScript compiler (its excess-property check refuses unknown fields).
GATEWAY_PACKAGES = ("@kubernetes-models/gateway-api@2.0.0", "typescript@5.9.3")
_ROUTE_TYPE = '"@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute"'


def mlport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", *args], capture_output=True, text=True,
                          timeout=60)


def test_render_kubernetes_canary_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "iris.yaml"
    done = mlport("k8s", "render", "--name", "iris", "--image", "reg.example/iris:v1", "--canary",
                  "reg.example/iris:v2", "--percent", "20", "--max-replicas", "3", "--memory", "256Mi", "-o", str(out))
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(out.read_text()))
    kinds = [o["kind"] for o in objects]
    assert kinds.count("Deployment") == 2 and kinds.count("HTTPRoute") == 1
    for obj in objects:
        if obj["kind"] != "HTTPRoute":
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 3
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] == "256Mi"


@pytest.mark.parametrize("bad", ["iris\nkind: Secret", "iris; rm -rf /", "$(id)", "Iris"])
def test_hostile_names_are_refused(bad: str) -> None:
    done = mlport("k8s", "render", "--name", bad, "--image", "reg.example/iris:v1")
    assert done.returncode == 2 and "not a Kubernetes name" in done.stderr and "Traceback" not in done.stderr
    done = mlport("k8s", "render", "--name", "iris", "--image", bad)
    assert done.returncode == 2 and "image reference" in done.stderr


@pytest.mark.slow
def test_kserve_objects_load_with_the_kserve_sdk(tmp_path: Path, kserve_python: Path) -> None:
    runtime, isvc = tmp_path / "runtime.yaml", tmp_path / "isvc.yaml"
    assert mlport("k8s", "runtime", "--image", "reg.example/mlport:0.1.0", "-o", str(runtime)).returncode == 0
    done = mlport("k8s", "render", "--name", "iris", "--target", "kserve", "--image", "reg.example/mlport:0.1.0",
                  "--storage-uri", "s3://models/iris/1", "--canary", "reg.example/mlport:0.1.0",
                  "--candidate-storage-uri", "s3://models/iris/2", "--percent", "10", "-o", str(isvc))
    assert done.returncode == 0, done.stderr
    for path, want in ((runtime, ["ClusterServingRuntime mlport"]),
                       (isvc, ["ClusterServingRuntime mlport", "InferenceService iris"])):
        loaded = subprocess.run([str(kserve_python), str(TOOL), str(path)], capture_output=True, text=True,
                                timeout=120)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        assert loaded.stdout.split("\n")[:-1] == want
    # the loader can fail: a misspelt field is refused
    isvc.write_text(isvc.read_text().replace("storageUri", "storageURI"))
    loaded = subprocess.run([str(kserve_python), str(TOOL), str(isvc)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode != 0 and "has no field(s) ['storageURI']" in loaded.stderr


@pytest.mark.slow
def test_the_kserve_ab_graph_loads_with_the_kserve_sdk(tmp_path: Path, kserve_python: Path) -> None:
    ab = tmp_path / "ab.yaml"
    done = mlport("k8s", "render", "--name", "iris", "--target", "kserve", "--image", "reg.example/mlport:0.1.0",
                  "--storage-uri", "s3://models/iris/1", "--ab", "reg.example/mlport:0.1.0",
                  "--candidate-storage-uri", "s3://models/iris/2", "--percent", "25", "-o", str(ab))
    assert done.returncode == 0, done.stderr
    loaded = subprocess.run([str(kserve_python), str(TOOL), str(ab)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split("\n")[:-1] == ["ClusterServingRuntime mlport", "InferenceService iris-v1",
                                              "InferenceService iris-v2", "InferenceGraph iris"]
    # a misspelt field of the graph is refused
    ab.write_text(ab.read_text().replace("serviceName", "service_name"))
    loaded = subprocess.run([str(kserve_python), str(TOOL), str(ab)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode != 0 and "has no field(s) ['service_name']" in loaded.stderr
    done = mlport("k8s", "render", "--name", "iris", "--target", "kserve", "--image", "reg.example/mlport:0.1.0",
                  "--storage-uri", "s3://models/iris/1", "--shadow", "reg.example/mlport:0.1.0",
                  "--candidate-storage-uri", "s3://models/iris/2")
    assert done.returncode == 2 and "RequestMirror" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def gateway_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the Gateway API models and TypeScript from the npm registry, installed once for the module."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed to validate the Gateway API objects")
        pytest.skip("needs node and npm")
    prefix = tmp_path_factory.mktemp("gateway-api")
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(prefix),
                           *GATEWAY_PACKAGES], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        message = f"{' '.join(GATEWAY_PACKAGES)} could not be installed: {done.stderr[-2000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return prefix


def check_gateway(prefix: Path, objects: list[dict[str, Any]]) -> tuple[bool, str]:
    """The package's validators (types, enumerations, bounds, required fields), then TypeScript's check of each
    object as a literal of the package's ``IHTTPRoute`` type (a field the type does not have fails)."""
    validated = subprocess.run(["node", str(GATEWAY_CHECK), str(prefix)], input=json.dumps(objects),
                               capture_output=True, text=True, timeout=120)
    source = prefix / "routes.ts"
    lines = [f"import type {{ IHTTPRoute }} from {_ROUTE_TYPE};"]
    lines += [f"export const route{i}: IHTTPRoute = {json.dumps(obj)};" for i, obj in enumerate(objects)]
    source.write_text("\n".join(lines) + "\n")
    typed = subprocess.run([str(prefix / "node_modules" / ".bin" / "tsc"), "--noEmit", "--strict", "--skipLibCheck",
                            "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022",
                            str(source)], capture_output=True, text=True, timeout=300)
    ok = validated.returncode == 0 and typed.returncode == 0
    return ok, validated.stdout + validated.stderr + typed.stdout + typed.stderr


@pytest.mark.slow
def test_http_routes_validate_against_the_gateway_api_models(gateway_models: Path) -> None:
    """Canary and A/B weights and the shadow mirror pass the Gateway API models' checks; a wrong enum, a weight out
    of range, a missing required field or a misspelt optional one fails them."""
    routes = []
    for flag in ("--canary", "--ab", "--shadow"):
        done = mlport("k8s", "render", "--name", "iris", "--image", "reg.example/iris:v1", flag, "reg.example/iris:v2",
                      "--percent", "12.5")
        assert done.returncode == 0, done.stderr
        routes += [o for o in yaml.safe_load_all(done.stdout) if o["kind"] == "HTTPRoute"]
    assert len(routes) == 3
    ok, output = check_gateway(gateway_models, routes)
    assert ok, output
    assert output.split("\n")[:-1] == ["ok HTTPRoute iris"] * 3
    canary, _, shadow = routes
    bad_enum = json.loads(json.dumps(shadow))
    bad_enum["spec"]["rules"][0]["filters"][0]["type"] = "Mirror"
    bad_weight = json.loads(json.dumps(canary))
    bad_weight["spec"]["rules"][0]["backendRefs"][0]["weight"] = -5
    no_name = json.loads(json.dumps(canary))
    no_name["spec"]["rules"][0]["backendRefs"][1]["nmae"] = no_name["spec"]["rules"][0]["backendRefs"][1].pop("name")
    misspelt = json.loads(json.dumps(canary))
    misspelt["spec"]["rules"][0]["backendRefs"][0]["wieght"] = misspelt["spec"]["rules"][0]["backendRefs"][0].pop(
        "weight")
    for bad, message in ((bad_enum, "type must be equal to one of the allowed values"),
                         (bad_weight, "weight must be >= 0"), (no_name, "must have required property name"),
                         (misspelt, """'"wieght"' does not exist in type 'IHTTPBackendRef'""")):
        ok, output = check_gateway(gateway_models, [bad])
        assert not ok and message in output, output


def test_a_kserve_ab_version_answers_where_the_graph_router_posts(tmp_path: Path,
                                                                   serve: Callable[..., Server]) -> None:
    """KServe's router posts to /v2/models/<InferenceService name>/infer: a version started with its
    InferenceService's args on a folder like the one the storage initializer fills answers there."""
    done = mlport("k8s", "render", "--name", "iris", "--target", "kserve", "--image", "reg.example/mlport:0.1.0",
                  "--storage-uri", "s3://models/iris/1", "--ab", "reg.example/mlport:0.1.0",
                  "--candidate-storage-uri", "s3://models/iris/2", "--percent", "25")
    assert done.returncode == 0, done.stderr
    runtime, _, candidate, graph = yaml.safe_load_all(done.stdout)
    assert runtime["spec"]["containers"][0]["args"][:2] == ["serve", "/mnt/models"]
    step = graph["spec"]["nodes"]["root"]["steps"][1]
    assert step["serviceName"] == candidate["metadata"]["name"] == "iris-v2"
    models = tmp_path / "mnt-models"
    models.mkdir()
    scale_onnx(models / "scale.onnx", 3.0)  # the artifact under the storage URI, as the initializer leaves it
    server = serve(models, *candidate["spec"]["predictor"]["model"]["args"], "--grpc-port", "0")
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}
    answer = httpx.post(f"{server.url}/v2/models/{step['serviceName']}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0]
