"""A lazy server describes a never-loaded ONNX model from its file (OIP metadata over REST and gRPC, model config,
describe, TF Serving metadata) exactly as after loading it, and the model stays unloaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import tritonclient.grpc as tgrpc

from tests.builders import iris_onnx, scale_onnx


def _views(c: httpx.Client, grpc: tgrpc.InferenceServerClient, name: str) -> dict[str, Any]:
    views: dict[str, Any] = {}
    for key, path in (("metadata", f"/v2/models/{name}"), ("version", f"/v2/models/{name}/versions/1"),
                      ("config", f"/v2/models/{name}/config"), ("describe", f"/models/{name}/describe"),
                      ("tfserving", f"/v1/models/{name}/metadata")):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text)
        views[key] = r.json()
    views["grpc"] = grpc.get_model_metadata(name, as_json=True)
    views["grpc_config"] = grpc.get_model_config(name, as_json=True)
    return views


def _loads(c: httpx.Client, name: str) -> float:
    found = re.search(rf'^mlport_model_loads_total{{model="{name}"}} (\S+)$', c.get("/metrics").text, re.M)
    return float(found[1]) if found else 0.0


def _state(c: httpx.Client, name: str) -> str:
    rows = {r["name"]: r for r in c.post("/v2/repository/index", json={}).json()}
    return str(rows[name]["state"])


def test_a_never_loaded_onnx_model_is_described_from_its_file(serve, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    scale_onnx(root / "scale" / "1" / "model.onnx", 2.0, shape=(None, 3), dtype="float64")
    # a config that renames an output and labels nothing: seen through the config as a load would
    (root / "scale" / "model.yaml").write_text("signature:\n  outputs:\n    - name: y\n      alias: doubled\n")
    server = serve(root, "--lazy")
    grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with server.client() as c:
        cold = {name: _views(c, grpc, name) for name in ("iris", "scale")}
        for name in ("iris", "scale"):
            assert _state(c, name) == "NOT_LOADED" and _loads(c, name) == 0
        assert cold["scale"]["metadata"]["outputs"] == [{"name": "doubled", "datatype": "FP64", "shape": [-1, 3]}]
        assert cold["scale"]["metadata"]["platform"] == "onnxruntime_onnx"
        assert cold["scale"]["metadata"]["versions"] == ["1"]  # requestable: it loads on its request
        body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}
        answer = c.post("/v2/models/scale/infer", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["name"] == "doubled"
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
        assert c.post("/v2/models/iris/infer", json=body).status_code == 200
        for name in ("iris", "scale"):
            assert _state(c, name) == "READY" and _loads(c, name) == 1
            assert _views(c, grpc, name) == cold[name], name
