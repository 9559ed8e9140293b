"""More manifest node kinds through a real server, over HTTP and gRPC: transformers with trusted Python
transforms, flows with a transform step, a router of flows keyed by a header, and a cascade over gRPC."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc

from tests.builders import scale_onnx
from tests.conftest import Server
from tests.integration.test_manifests import cascade_repo

X = np.arange(12, dtype=np.float32).reshape(4, 3)

ADD_ONE = '''
import numpy as np

class Model:
    signature = {"inputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
                 "outputs": [{"name": "z", "datatype": "FP32", "shape": [-1, 3]}]}

    def predict(self, inputs):
        return {"z": inputs["y"] + 1.0}
'''

CENTER = '''
import numpy as np

class Model:
    signature = {"inputs": [{"name": "raw", "datatype": "FP32", "shape": [-1, 3]}],
                 "outputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]}

    def predict(self, inputs):
        raw = inputs["raw"]
        return {"x": raw - raw.mean(axis=1, keepdims=True)}
'''


def _body(name: str, x: np.ndarray[Any, Any], **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}
    if params:
        out["parameters"] = params
    return out


def _grpc_infer(server: Server, model: str, name: str, x: np.ndarray[Any, Any], **kw: Any) -> Any:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        inp = triton_grpc.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], **kw)
    finally:
        client.close()


def _index(server: Server, want: set[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        rows = {r["name"]: r for r in httpx.post(server.url + "/v2/repository/index", timeout=30).json()}
        if want <= {n for n, r in rows.items() if r.get("state") in ("READY", "UNAVAILABLE")}:
            break
        time.sleep(0.2)
    return rows


def _parts(root: Path) -> None:
    for f in (1.0, 2.0, 3.0):
        scale_onnx(root / "parts" / f"x{int(f)}.onnx", f)
    (root / "parts" / "add_one").mkdir(parents=True)
    (root / "parts" / "add_one" / "model.py").write_text(ADD_ONE)
    (root / "parts" / "center").mkdir(parents=True)
    (root / "parts" / "center" / "model.py").write_text(CENTER)


def test_transformer_and_transform_steps_over_http_and_grpc(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    _parts(root)
    # pre: centre each row; node: x * 2; post: + 1
    (root / "wrapped.yaml").write_text(
        "transformer:\n  pre: {transform: parts/center, name: center}\n  node: {model: parts/x2.onnx}\n"
        "  post: {transform: parts/add_one, name: add-one}\n")
    (root / "steps.yaml").write_text(
        "flow:\n  - {model: parts/x3.onnx}\n  - {transform: parts/add_one}\n")
    server = serve(root, "--trusted")
    want_wrapped = (X - X.mean(axis=1, keepdims=True)) * 2 + 1
    with server.client() as c:
        r = c.post("/v2/models/wrapped/infer", json=_body("raw", X))
        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        assert out["name"] == "z"
        np.testing.assert_allclose(np.reshape(out["data"], (4, 3)), want_wrapped, rtol=1e-6)
        r = c.post("/v2/models/steps/infer", json=_body("x", X))
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.reshape(r.json()["outputs"][0]["data"], (4, 3)), X * 3 + 1, rtol=1e-6)
        described = c.get("/v2/models/wrapped").json()
        assert [i["name"] for i in described["inputs"]] == ["raw"]
        assert [o["name"] for o in described["outputs"]] == ["z"]
    np.testing.assert_allclose(_grpc_infer(server, "wrapped", "raw", X).as_numpy("z"), want_wrapped, rtol=1e-6)
    np.testing.assert_allclose(_grpc_infer(server, "steps", "x", X).as_numpy("z"), X * 3 + 1, rtol=1e-6)


def test_transform_steps_need_trust(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    _parts(root)
    (root / "steps.yaml").write_text("flow:\n  - {model: parts/x3.onnx}\n  - {transform: parts/add_one}\n")
    marker = root / "parts" / "add_one" / "imported"
    (root / "parts" / "add_one" / "model.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n" + ADD_ONE)
    server = serve(root)
    rows = _index(server, {"steps"})
    assert rows["steps"]["state"] == "UNAVAILABLE"
    assert "step 2" in rows["steps"]["reason"] and "trust" in rows["steps"]["reason"]
    assert not marker.exists()


def test_router_of_flows_sticks_to_the_routing_key(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    _parts(root)
    (root / "split.yaml").write_text(
        "router:\n  strategy: sticky\n  children:\n"
        "    - {name: double, flow: [{model: parts/x2.onnx}, {model: parts/x1.onnx, inputs: {x: y}}]}\n"
        "    - {name: triple, flow: [{model: parts/x1.onnx}, {model: parts/x3.onnx, inputs: {x: y}}]}\n")
    server = serve(root)
    factor = {"double": 2.0, "triple": 3.0}
    routes: dict[str, str] = {}
    with server.client() as c:
        for i in range(40):
            key = f"user-{i % 10}"
            # OIP over HTTP with the X-Routing-Key header (the fast path) ...
            r = c.post("/v2/models/split/infer", json=_body("x", X[:1]), headers={"x-routing-key": key})
            assert r.status_code == 200, r.text
            doc = r.json()
            (route,) = doc["parameters"]["routed_to"]
            assert routes.setdefault(key, route) == route, f"{key} moved from {routes[key]} to {route}"
            np.testing.assert_allclose(doc["outputs"][0]["data"], X[0] * factor[route], rtol=1e-6)
        # ... the native eval route with the same header ...
        for key, route in routes.items():
            r = c.post("/models/split/eval", json={"x": X[:1].tolist()}, headers={"x-routing-key": key})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(np.ravel(r.json()["y"]), X[0] * factor[route], rtol=1e-6)
            assert r.headers["x-mlport-routed-to"] == route
    assert set(routes.values()) == {"double", "triple"}, routes
    # ... and gRPC with the routing_key parameter
    for key, route in routes.items():
        result = _grpc_infer(server, "split", "x", X[:1], parameters={"routing_key": key})
        assert json.loads(result.get_response().parameters["routed_to"].string_param) == [route]
        np.testing.assert_allclose(result.as_numpy("y")[0], X[0] * factor[route], rtol=1e-6)


def test_cascade_over_grpc(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    x, low, weak, strong = cascade_repo(root, 7)
    assert low.any() and not low.all()
    server = serve(root)
    result = _grpc_infer(server, "cascade", "input", x)
    assert result.as_numpy("label").tolist() == np.where(low, strong["label"], weak["label"]).tolist()
    with server.client() as c:
        r = c.post("/models/cascade/eval", json={"input": x.tolist()})
        assert r.status_code == 200, r.text
        assert r.headers["x-mlport-answered-by"] == ",".join("strong" if v else "weak" for v in low)
    answered = result.get_response().parameters["answered_by"].string_param
    assert json.loads(answered) == ["strong" if v else "weak" for v in low]
