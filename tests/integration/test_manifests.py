"""Manifests served like models: over HTTP (eval, OIP) and gRPC, with routes, feedback and load errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tokenizers import Tokenizer

from tests.builders import save_graph, scale_onnx
from tests.conftest import Server
from tests.integration.test_formats_tokenizer import _sentences, _wordpiece

X = np.arange(12, dtype=np.float32).reshape(4, 3)
VOCAB = 2000
DIM = 8


def _embedding_onnx(path: Path) -> np.ndarray[Any, Any]:
    """A small encoder: token embeddings averaged over the attention mask (input_ids, attention_mask -> embedding)."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(5).normal(size=(VOCAB, DIM)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["vectors"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["vectors", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["b", DIM])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.asarray([2], dtype=np.int64), "axis2"),
         numpy_helper.from_array(np.asarray([1], dtype=np.int64), "axis1")],
    )
    save_graph(graph, path)
    return table


def _grpc(server: Server) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def _grpc_infer(server: Server, model: str, x: np.ndarray[Any, Any], **kw: Any) -> Any:
    client = _grpc(server)
    try:
        inp = triton_grpc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], **kw)
    finally:
        client.close()


def test_flow_tokenizer_then_encoder_equals_running_both_by_hand(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    folder = root / "embed" / "1"
    folder.mkdir(parents=True)
    _wordpiece(folder / "tokenizer.json")
    table = _embedding_onnx(folder / "encoder.onnx")
    (folder / "flow.yaml").write_text("flow:\n  - tokenizer: tokenizer.json\n  - model: encoder.onnx\n")
    texts = _sentences(40)[:6]
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0)
    enc = tok.encode_batch(texts)
    ids = np.asarray([e.ids for e in enc])
    mask = np.asarray([e.attention_mask for e in enc], dtype=np.float32)
    want = (table[ids] * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

    server = serve(root)
    with server.client() as c:
        d = c.get("/models/embed/describe").json()
        assert d["inputs"] == [{"name": "text", "type": "string", "shape": [-1]}]
        assert [o["name"] for o in d["outputs"]] == ["embedding"]
        r = c.post("/models/embed/eval", json={"text": texts})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["embedding"], want, rtol=1e-5, atol=1e-6)
        r = c.post("/models/embed/eval", json={"text": texts[0]})
        np.testing.assert_allclose(r.json()["embedding"], want[0], rtol=1e-5, atol=1e-6)
    client = _grpc(server)
    try:
        inp = triton_grpc.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(np.asarray([t.encode() for t in texts], dtype=object))
        got = client.infer("embed", [inp]).as_numpy("embedding")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def _scales(root: Path) -> Path:
    folder = root / "parts"
    for f in (1.0, 2.0, 3.0):
        scale_onnx(folder / f"x{int(f)}.onnx", f)
    return folder


def test_ensemble_over_http_and_grpc(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    _scales(root)
    (root / "mean.yaml").write_text("ensemble:\n  children: [{model: parts/x1.onnx}, {model: parts/x3.onnx}]\n")
    (root / "weighted.yaml").write_text("ensemble:\n  combine: weighted_mean\n  weights: [3, 1]\n"
                                        "  children: [{model: parts/x1.onnx}, {model: parts/x3.onnx}]\n")
    server = serve(root)
    with server.client() as c:
        names = {r["name"] for r in c.post("/v2/repository/index").json()}
        assert {"mean", "weighted"} <= names
        r = c.post("/v2/models/mean/infer", json={"inputs": [
            {"name": "x", "shape": [4, 3], "datatype": "FP32", "data": X.ravel().tolist()}]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.reshape(r.json()["outputs"][0]["data"], (4, 3)), X * 2)
        assert c.get("/v2/models/mean").json()["platform"] == "mlport-manifest"
    np.testing.assert_allclose(_grpc_infer(server, "weighted", X).as_numpy("y"), X * 1.5, rtol=1e-6)


def test_router_reports_its_route_and_learns_from_feedback(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    _scales(root)
    (root / "ab.yaml").write_text("router:\n  weights: [0.5, 0.5]\n  seed: 1\n  children:\n"
                                  "    - {model: parts/x1.onnx, name: a}\n    - {model: parts/x2.onnx, name: b}\n")
    (root / "bandit.yaml").write_text("router:\n  strategy: thompson\n  seed: 2\n  children:\n"
                                      "    - {model: parts/x1.onnx, name: worse}\n"
                                      "    - {model: parts/x2.onnx, name: better}\n")
    server = serve(root)
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
    with server.client() as c:
        seen = set()
        for _ in range(30):
            doc = c.post("/v2/models/ab/infer", json=body).json()
            (route,) = doc["parameters"]["routed_to"]
            assert doc["outputs"][0]["data"][0] == (1.0 if route == "a" else 2.0)
            seen.add(route)
        assert seen == {"a", "b"}
        # a sticky key over the header of the native API, a parameter over OIP
        assert "mlport_routes_total" in c.get("/metrics").text

        rng = np.random.default_rng(4)
        p = {"worse": 0.2, "better": 0.8}
        late = []
        for i in range(400):
            doc = c.post("/v2/models/bandit/infer", json={**body, "id": f"q{i}"}).json()
            (arm,) = doc["parameters"]["routed_to"]
            r = c.post("/models/bandit/feedback", json={"id": f"q{i}", "reward": float(rng.random() < p[arm])})
            assert r.status_code == 200, r.text
            if i >= 250:
                late.append(arm)
        assert late.count("better") / len(late) > 0.75
        r = c.post("/models/bandit/feedback", json={"id": "q3", "reward": 1})
        assert r.status_code == 404  # rewarded already
        r = c.post("/models/bandit/feedback", json={"id": "x"})
        assert r.status_code == 400
        r = c.post("/models/ab/feedback", json={"id": "x", "reward": 1})
        assert r.status_code == 400 and "bandit" in r.text
    result = _grpc_infer(server, "ab", X[:1])
    routes = result.get_response().parameters["routed_to"].string_param
    assert routes in ('["a"]', '["b"]')


def cascade_repo(root: Path, step: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], dict[str, Any],
                                                  dict[str, Any]]:
    """A cascade of a weak iris model falling back to a strong one below confidence 0.6; returns the iris rows
    taken every ``step``, which rows fall back, and both models' own answers."""
    from sklearn.datasets import load_iris

    from tests.builders import iris_onnx, ort_run

    iris_onnx(root / "parts" / "weak.onnx", max_iter=3, c=0.01)
    iris_onnx(root / "parts" / "strong.onnx", c=10.0)
    (root / "cascade.yaml").write_text(
        "cascade:\n  first: {model: parts/weak.onnx}\n  fallback: {model: parts/strong.onnx}\n"
        "  confidence: {output: probabilities, threshold: 0.6}\n")
    x, _ = load_iris(return_X_y=True)
    x = x[::step].astype(np.float32)
    weak = ort_run(root / "parts" / "weak.onnx", {"input": x})
    strong = ort_run(root / "parts" / "strong.onnx", {"input": x})
    return x, weak["probabilities"].max(axis=1) < 0.6, weak, strong


def test_cascade_says_which_stage_answered(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    x, low, weak, strong = cascade_repo(root, 10)
    server = serve(root)
    with server.client() as c:
        r = c.post("/v2/models/cascade/infer", json={"inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
        assert r.status_code == 200, r.text
        doc = r.json()
        outs = {o["name"]: o["data"] for o in doc["outputs"]}
        assert outs["label"] == np.where(low, strong["label"], weak["label"]).tolist()
        assert doc["parameters"]["answered_by"] == ["strong" if v else "weak" for v in low]


def test_invalid_manifest_fails_at_load_with_the_step_named(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    _scales(root)
    (root / "broken.yaml").write_text("flow:\n  - model: parts/x1.onnx\n  - {model: parts/x2.onnx, inputs: {z: y}}\n")
    (root / "ok.yaml").write_text("flow:\n  - model: parts/x1.onnx\n")
    server = serve(root)
    deadline = time.monotonic() + 30
    rows: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = {r["name"]: r for r in httpx.post(server.url + "/v2/repository/index", timeout=30).json()}
        if rows.get("broken", {}).get("state") == "UNAVAILABLE":
            break
        time.sleep(0.2)
    assert rows["ok"]["state"] == "READY"
    assert "step 2" in rows["broken"]["reason"] and "'z'" in rows["broken"]["reason"]


@pytest.mark.slow
def test_sentiment_preset(tmp_path: Path, serve) -> None:
    import os
    import subprocess
    import sys

    cache = Path(os.environ.get("MLPORT_TEST_PRESETS_DIR") or tmp_path / "presets")
    env = {"MLPORT_PRESETS_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "presets"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)
    assert done.returncode == 0 and "sentiment-en" in done.stdout, done.stderr
    # the first use builds it (a few minutes); serving then starts at once
    built = subprocess.run([sys.executable, "-m", "mlport.cli.main", "presets", "build", "sentiment-en"],
                           capture_output=True, text=True, env={**os.environ, **env}, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    server = serve(Path("preset:sentiment-en"), env=env)
    with server.client() as c:
        r = c.post("/models/sentiment-en/eval", json={"text": ["I love this", "this is terrible"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == ["positive", "negative"]
        assert body["score"][0] > 0.5 > body["score"][1]
        # a negation cue switches the head to its negated weights
        r = c.post("/models/sentiment-en/eval", json={"text": ["This is not good", "Not bad at all"]})
        assert r.status_code == 200, r.text
        assert r.json()["label"] == ["negative", "positive"]
    about = json.loads((cache / "sentiment-en" / "about.json").read_text())
    assert about["negation_sentences"] == 20 and about["accuracy_negation_sentences"] >= 0.75
    assert "accuracy_hand_written_sentences" in about
