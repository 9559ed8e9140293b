"""TF Serving REST API against a real server and real onnxruntime models."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.builders import iris_onnx, ort_run, save_graph, scale_onnx
from tests.conftest import Server, start_server

RTOL = 1e-5


# ------------------------------------------------------------------------- models
def _save(path: Path, graph: Any) -> Path:

    return save_graph(graph, path)


def multi_onnx(path: Path) -> Path:
    """The docs' row example: tag (string [N]), signal (float [N,5]), sensor (float [N,2,2]) ->
    tag_out = tag, total = sum of signal per row, sensor_x2 = 2 * sensor."""
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info("tag", TensorProto.STRING, ["N"]),
        helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["N", 5]),
        helper.make_tensor_value_info("sensor", TensorProto.FLOAT, ["N", 2, 2]),
    ]
    outputs = [
        helper.make_tensor_value_info("tag_out", TensorProto.STRING, ["N"]),
        helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"]),
        helper.make_tensor_value_info("sensor_x2", TensorProto.FLOAT, ["N", 2, 2]),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Identity", ["tag"], ["tag_out"]),
        helper.make_node("ReduceSum", ["signal", "axes"], ["total"], keepdims=0),
        helper.make_node("Add", ["sensor", "sensor"], ["sensor_x2"]),
    ]
    return _save(path, helper.make_graph(nodes, "multi", inputs, outputs, [axes]))


def text_onnx(path: Path) -> Path:
    """A string input 'text' [N] echoed as 'echo' and as 'echo_bytes' (binary by its name)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])
    outs = [helper.make_tensor_value_info(n, TensorProto.STRING, ["N"]) for n in ("echo", "echo_bytes")]
    nodes = [helper.make_node("Identity", ["text"], ["echo"]), helper.make_node("Identity", ["text"], ["echo_bytes"])]
    return _save(path, helper.make_graph(nodes, "text", [x], outs))


def weights_onnx(path: Path) -> Path:
    """y = x * w with x [N,3] and w [3]: two inputs whose 0-th dimensions differ."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    return _save(path, helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "weights", [x, w], [y]))


# ------------------------------------------------------------------------- server
class Repo:
    def __init__(self, root: Path, server: Server) -> None:
        self.root = root
        self.server = server
        self.client = server.client()

    def model(self, name: str, version: int = 1) -> Path:
        return self.root / name / str(version) / "model.onnx"


def _wait_settled(server: Server, expect: dict[str, set[str]], timeout: float = 60) -> None:
    """Wait until each model's versions reach the expected TF Serving states."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        done = True
        for name, states in expect.items():
            r = httpx.get(f"{server.url}/v1/models/{name}", timeout=5)
            seen[name] = r.text
            got = {row["state"] for row in r.json().get("model_version_status", [])} if r.status_code == 200 else set()
            done = done and got == states
        if done:
            return
        time.sleep(0.1)
    raise AssertionError(f"models did not settle: {seen}\n{server.log()}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("tfs") / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    scale_onnx(root / "half" / "1" / "model.onnx", 0.5, shape=(None,))
    scale_onnx(root / "pairs" / "1" / "model.onnx", 3.0, shape=(None, 1, 2))
    multi_onnx(root / "multi" / "1" / "model.onnx")
    text_onnx(root / "text" / "1" / "model.onnx")
    weights_onnx(root / "weights" / "1" / "model.onnx")
    scale_onnx(root / "scale" / "1" / "model.onnx", 1.0)
    scale_onnx(root / "scale" / "2" / "model.onnx", 2.0)
    (root / "scale" / "model.yaml").write_text(
        "version_policy: {all: true}\nversion_labels: {stable: 1, canary: 2}\n", encoding="utf-8"
    )
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    (root / "broken" / "model.yaml").write_text("version_labels: {stable: 1}\n", encoding="utf-8")
    logs = tmp_path_factory.mktemp("logs")
    server = start_server(root, "--poll-interval", "0", log_dir=logs, wait_ready=False)
    try:
        ok = {"AVAILABLE"}
        _wait_settled(server, {"iris": ok, "half": ok, "pairs": ok, "multi": ok, "text": ok, "weights": ok,
                               "scale": ok, "broken": {"END"}})
        r = Repo(root, server)
        yield r
        r.client.close()
    finally:
        server.stop()


def predict(repo: Repo, path: str, body: Any) -> httpx.Response:
    return repo.client.post(f"/v1/models/{path}:predict", json=body)


def ok_json(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


# ------------------------------------------------------------------ status, metadata
def test_status_of_every_version(repo: Repo) -> None:
    rows = ok_json(repo.client.get("/v1/models/scale"))["model_version_status"]
    assert sorted(rows, key=lambda r: r["version"]) == [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in ("1", "2")
    ]
    only = ok_json(repo.client.get("/v1/models/scale/versions/1"))["model_version_status"]
    assert [r["version"] for r in only] == ["1"]
    by_label = ok_json(repo.client.get("/v1/models/scale/labels/canary"))["model_version_status"]
    assert [r["version"] for r in by_label] == ["2"]


def test_status_of_a_failed_version(repo: Repo) -> None:
    rows = ok_json(repo.client.get("/v1/models/broken"))["model_version_status"]
    assert len(rows) == 1
    assert rows[0]["version"] == "1" and rows[0]["state"] == "END"
    assert rows[0]["status"]["error_code"] == "UNKNOWN"
    assert rows[0]["status"]["error_message"]


def test_metadata(repo: Repo) -> None:
    doc = ok_json(repo.client.get("/v1/models/iris/metadata"))
    assert doc["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"] == {"input": {
        "dtype": "DT_FLOAT", "name": "input",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}], "unknown_rank": False},
    }}
    assert sig["outputs"]["label"]["dtype"] == "DT_INT64"
    assert [d["size"] for d in sig["outputs"]["label"]["tensor_shape"]["dim"]] == ["-1"]
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["outputs"]["probabilities"]["tensor_shape"]["dim"]] == ["-1", "3"]
    text = ok_json(repo.client.get("/v1/models/text/metadata"))["metadata"]["signature_def"]["signature_def"]
    assert text["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"


def test_metadata_by_version_and_label(repo: Repo) -> None:
    assert ok_json(repo.client.get("/v1/models/scale/metadata"))["model_spec"]["version"] == "2"
    assert ok_json(repo.client.get("/v1/models/scale/versions/1/metadata"))["model_spec"]["version"] == "1"
    assert ok_json(repo.client.get("/v1/models/scale/labels/stable/metadata"))["model_spec"]["version"] == "1"


# ------------------------------------------------------------------------- predict
IRIS_X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


def test_iris_row_format_matches_onnxruntime(repo: Repo) -> None:
    want = ort_run(repo.model("iris"), {"input": IRIS_X})
    rows = ok_json(predict(repo, "iris", {"instances": IRIS_X.tolist()}))["predictions"]
    assert len(rows) == 3 and all(set(r) == {"label", "probabilities"} for r in rows)
    assert [r["label"] for r in rows] == want["label"].tolist()
    np.testing.assert_allclose([r["probabilities"] for r in rows], want["probabilities"], rtol=RTOL)


def test_iris_columnar_format_matches_onnxruntime(repo: Repo) -> None:
    want = ort_run(repo.model("iris"), {"input": IRIS_X})
    for inputs in (IRIS_X.tolist(), {"input": IRIS_X.tolist()}):
        out = ok_json(predict(repo, "iris", {"inputs": inputs, "signature_name": "serving_default"}))["outputs"]
        assert out["label"] == want["label"].tolist()
        np.testing.assert_allclose(out["probabilities"], want["probabilities"], rtol=RTOL)


def test_docs_scalar_instances(repo: Repo) -> None:
    # {"instances": [1.0, 2.0, 5.0]} against y = x / 2
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    got = ok_json(predict(repo, "half", {"instances": x.tolist()}))["predictions"]
    np.testing.assert_allclose(got, ort_run(repo.model("half"), {"x": x})["y"], rtol=RTOL)
    assert got == [0.5, 1.0, 2.5]
    got = ok_json(predict(repo, "half", {"inputs": x.tolist()}))["outputs"]
    assert got == [0.5, 1.0, 2.5]


def test_docs_instances_of_shape_1x2(repo: Repo) -> None:
    # {"instances": [[[1, 2]], [[3, 4]]]}: two tensors of shape [1, 2]
    x = np.array([[[1, 2]], [[3, 4]]], dtype=np.float32)
    got = ok_json(predict(repo, "pairs", {"instances": x.tolist()}))["predictions"]
    np.testing.assert_allclose(got, ort_run(repo.model("pairs"), {"x": x})["y"], rtol=RTOL)
    assert np.asarray(got).shape == (2, 1, 2)


def test_docs_string_instances(repo: Repo) -> None:
    # {"instances": ["foo", "bar", "baz"]}
    got = ok_json(predict(repo, "text", {"instances": ["foo", "bar", "baz"]}))["predictions"]
    assert [r["echo"] for r in got] == ["foo", "bar", "baz"]
    assert [r["echo_bytes"] for r in got] == [{"b64": base64.b64encode(s).decode()} for s in (b"foo", b"bar", b"baz")]


MULTI_ROWS: list[dict[str, Any]] = [
    {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
    {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
]


def _multi_feed() -> dict[str, np.ndarray]:
    return {
        "tag": np.array([r["tag"] for r in MULTI_ROWS], dtype=object),
        "signal": np.array([r["signal"] for r in MULTI_ROWS], dtype=np.float32),
        "sensor": np.array([r["sensor"] for r in MULTI_ROWS], dtype=np.float32),
    }


def test_docs_named_instances(repo: Repo) -> None:
    want = ort_run(repo.model("multi"), _multi_feed())
    rows = ok_json(predict(repo, "multi", {"instances": MULTI_ROWS}))["predictions"]
    assert [r["tag_out"] for r in rows] == ["foo", "bar"]
    np.testing.assert_allclose([r["total"] for r in rows], want["total"], rtol=RTOL)
    np.testing.assert_allclose([r["sensor_x2"] for r in rows], want["sensor_x2"], rtol=RTOL)


def test_docs_named_columns(repo: Repo) -> None:
    feed = _multi_feed()
    want = ort_run(repo.model("multi"), feed)
    body = {"inputs": {"tag": ["foo", "bar"], "signal": feed["signal"].tolist(), "sensor": feed["sensor"].tolist()}}
    out = ok_json(predict(repo, "multi", body))["outputs"]
    assert set(out) == {"tag_out", "total", "sensor_x2"}
    assert out["tag_out"] == ["foo", "bar"]
    np.testing.assert_allclose(out["total"], want["total"], rtol=RTOL)
    np.testing.assert_allclose(out["sensor_x2"], want["sensor_x2"], rtol=RTOL)


def test_columns_with_different_batch_sizes(repo: Repo) -> None:
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    w = np.array([1, 10, 100], dtype=np.float32)
    out = ok_json(predict(repo, "weights", {"inputs": {"x": x.tolist(), "w": w.tolist()}}))["outputs"]
    np.testing.assert_allclose(out, ort_run(repo.model("weights"), {"x": x, "w": w})["y"], rtol=RTOL)


def test_b64_input(repo: Repo) -> None:
    rows = ok_json(predict(repo, "text", {"instances": [{"b64": base64.b64encode(b"hello").decode()}, "plain"]}))
    assert [r["echo"] for r in rows["predictions"]] == ["hello", "plain"]
    assert rows["predictions"][0]["echo_bytes"] == {"b64": "aGVsbG8="}
    out = ok_json(predict(repo, "text", {"inputs": {"text": [{"b64": "Y2Fmw6k="}]}}))["outputs"]
    assert out == {"echo": ["café"], "echo_bytes": [{"b64": "Y2Fmw6k="}]}
    named = [{**r, "tag": {"b64": base64.b64encode(r["tag"].encode()).decode()}} for r in MULTI_ROWS]
    rows = ok_json(predict(repo, "multi", {"instances": named}))["predictions"]
    assert [r["tag_out"] for r in rows] == ["foo", "bar"]


def test_non_finite_input_tokens(repo: Repo) -> None:
    r = repo.client.post("/v1/models/half:predict", content=b'{"instances": [NaN, Infinity, -Infinity, 4.0]}',
                         headers={"content-type": "application/json"})
    got = ok_json(r)["predictions"]
    assert got[3] == 2.0
    assert got[:3] == [None, None, None]  # non-finite results are written as JSON null


def test_curl_default_content_type(repo: Repo) -> None:
    r = repo.client.post("/v1/models/half:predict", content=b'{"instances": [1.0]}',
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert ok_json(r) == {"predictions": [0.5]}


def test_versions_and_labels_route_predict(repo: Repo) -> None:
    x = [[1.0, 2.0, 3.0]]
    assert ok_json(predict(repo, "scale", {"instances": x}))["predictions"] == [[2.0, 4.0, 6.0]]
    assert ok_json(predict(repo, "scale/versions/1", {"instances": x}))["predictions"] == [[1.0, 2.0, 3.0]]
    assert ok_json(predict(repo, "scale/versions/2", {"inputs": x}))["outputs"] == [[2.0, 4.0, 6.0]]
    assert ok_json(predict(repo, "scale/labels/stable", {"instances": x}))["predictions"] == [[1.0, 2.0, 3.0]]
    assert ok_json(predict(repo, "scale/labels/canary", {"instances": x}))["predictions"] == [[2.0, 4.0, 6.0]]


def test_predict_is_counted_in_metrics(repo: Repo) -> None:
    ok_json(predict(repo, "half", {"instances": [1.0]}))
    text = repo.client.get("/metrics").text
    assert any('protocol="v1"' in line and 'model="half"' in line for line in text.splitlines())


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/models/nope", 404),
        ("GET", "/v1/models/nope/metadata", 404),
        ("GET", "/v1/models/scale/versions/9", 404),
        ("GET", "/v1/models/scale/versions/abc", 404),
        ("GET", "/v1/models/scale/versions/9/metadata", 404),
        ("GET", "/v1/models/scale/labels/nope", 404),
        ("GET", "/v1/models/scale/labels/nope/metadata", 404),
        ("GET", "/v1/models/scale/other", 404),
        ("GET", "/v1/models/", 404),
        ("GET", "/v1/models/broken/metadata", 503),
        ("GET", "/v1/models/broken/labels/stable", 503),
        ("GET", "/v1/models/iris:predict", 405),
        ("POST", "/v1/models/iris", 405),
        ("POST", "/v1/models/iris:classify", 404),
        ("POST", "/v1/models/nope:predict", 404),
        ("POST", "/v1/models/scale/versions/9:predict", 404),
        ("POST", "/v1/models/scale/labels/nope:predict", 404),
        ("POST", "/v1/models/broken:predict", 503),
        ("POST", "/v1/models/broken/versions/1:predict", 503),
    ],
)
def test_route_errors(repo: Repo, method: str, path: str, status: int) -> None:
    error(repo.client.request(method, path, json={"instances": [[1.0, 2.0, 3.0]]}), status)


@pytest.mark.parametrize(
    ("model", "body", "words"),
    [
        ("iris", {"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, "both"),
        ("iris", {"signature_name": "serving_default"}, "instances"),
        ("iris", [[1, 2, 3, 4]], "JSON object"),
        ("iris", {"instances": [[1, 2, 3, 4]], "signature_name": "predict_images"}, "serving_default"),
        ("iris", {"instances": [[1, 2, 3]]}, "shape"),
        ("iris", {"instances": [[1, 2, 3, 4], [1, 2]]}, "rectangular"),
        ("iris", {"instances": "x"}, "list"),
        ("iris", {"inputs": {"nope": [[1, 2, 3, 4]]}}, "unknown input"),
        ("iris", {"instances": [["a", "b", "c", "d"]]}, "strings"),
        ("text", {"instances": [{"b64": "%%%"}]}, "base64"),
        ("text", {"instances": [{"b64": "aGk="}, {"x": 1}]}, "b64"),
        ("multi", {"instances": [{"tag": "a", "signal": [1, 2, 3, 4, 5]}]}, "missing input"),
        ("multi", {"instances": [MULTI_ROWS[0], {"tag": "b"}]}, "same inputs"),
        ("multi", {"instances": ["a", "b"]}, "several inputs"),
        ("multi", {"inputs": ["a", "b"]}, "several inputs"),
        ("multi", {"inputs": {"tag": ["a"], "signal": [[1, 2, 3, 4, 5]] * 2, "sensor": [[[1, 2], [3, 4]]]}},
         "batch size"),
    ],
)
def test_body_errors(repo: Repo, model: str, body: Any, words: str) -> None:
    assert words in error(predict(repo, model, body), 400)


def test_malformed_json(repo: Repo) -> None:
    for raw in (b"{", b"", b'{"instances": [nan]}'):
        r = repo.client.post("/v1/models/half:predict", content=raw, headers={"content-type": "application/json"})
        error(r, 400)


def test_unsupported_media_type(repo: Repo) -> None:
    r = repo.client.post("/v1/models/half:predict", content=b'{"instances": [1.0]}',
                         headers={"content-type": "application/octet-stream"})
    assert "Content-Type" in error(r, 415)


def test_body_too_large(serve: Callable[..., Server], tmp_path: Path) -> None:
    model = scale_onnx(tmp_path / "half.onnx", 0.5, shape=(None,))
    server = serve(model, "--max-body-bytes", "1024")
    with server.client() as c:
        assert ok_json(c.post("/v1/models/half:predict", json={"instances": [1.0]})) == {"predictions": [0.5]}
        error(c.post("/v1/models/half:predict", json={"instances": [1.0] * 1000}), 413)
