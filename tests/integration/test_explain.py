"""Explanations against a real ``mlport serve``: tree SHAP values equal ``shap.TreeExplainer``'s on the same model and
rows and add up to the trees' output; Kernel SHAP over a reference profile (or request rows) adds up to the served
prediction of an ONNX model; occlusion maps of an image model peak on the region it looks at, and come back as a
PNG; bounds, missing background and unknown models give clear errors."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.builders import iris_onnx, scale_onnx
from tests.conftest import Server, start_server
from tests.integration.drift_util import profiled_model

pytestmark = pytest.mark.slow

#: y = mean of rows 4..7, columns 8..11 of a 16 x 16 gray image (and the image's overall mean as a second score).
REGION_MODEL = """
import numpy as np

class Model:
    signature = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 16, 16]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }

    def predict(self, inputs):
        x = inputs["image"]
        return {"score": x[:, 4:8, 8:12].mean(axis=(1, 2))}
"""


def _x(rows: int, features: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, features))


def _build(root: Path) -> dict[str, Any]:
    """A repository: XGBoost (binary), LightGBM (regression), a scikit-learn forest (classifier), an ONNX model with
    a reference profile, the iris ONNX model without one, and a trusted Python image model."""
    import lightgbm as lgb
    import skops.io
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier

    x = _x(400, 4, 0)
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, label=y), 20)
    (root / "xgb" / "1").mkdir(parents=True)
    booster.save_model(root / "xgb" / "1" / "model.json")
    classes = np.digitize(x[:, 0] + x[:, 3], [-0.5, 0.5])
    multi = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2}, xgb.DMatrix(x, label=classes),
                      10)
    (root / "xgb3" / "1").mkdir(parents=True)
    multi.save_model(root / "xgb3" / "1" / "model.json")
    (root / "xgb3" / "model.yaml").write_text("labels: {label: [low, mid, high]}\n")
    reg = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 8},
                    lgb.Dataset(x, x[:, 0] * 2 + np.sin(x[:, 1])), 15)
    (root / "lgb" / "1").mkdir(parents=True)
    reg.save_model(root / "lgb" / "1" / "model.txt")
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
    (root / "forest" / "1").mkdir(parents=True)
    skops.io.dump(forest, root / "forest" / "1" / "model.skops")
    profiled_model(root / "scale", "")
    iris_onnx(root / "iris" / "1" / "model.onnx")
    for factor in (1.0, 3.0):  # a manifest: the mean of x and 3x, that is 2x
        scale_onnx(root / "ens" / "1" / "parts" / f"x{int(factor)}.onnx", factor)
    (root / "ens" / "1" / "ens.yaml").write_text("ensemble:\n  children: [{model: parts/x1.onnx}, "
                                                 "{model: parts/x3.onnx}]\n")
    (root / "region" / "1").mkdir(parents=True)
    (root / "region" / "1" / "model.py").write_text(textwrap.dedent(REGION_MODEL))
    (root / "region" / "model.yaml").write_text("trusted: true\n")
    return {"xgb": booster, "xgb3": multi, "lgb": reg, "forest": forest}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("explain")
    models = _build(root / "repo")
    server = start_server(root / "repo", "--explain-max-rows", "8", log_dir=root, timeout=120)
    try:
        yield server, models
    finally:
        server.stop()


def _oip(name: str, arr: np.ndarray, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": name, "datatype": "FP32", "shape": list(arr.shape),
                                        "data": arr.ravel().tolist()}]}
    if params:
        body["parameters"] = params
    return body


def _explain(server: Server, model: str, body: dict[str, Any], status: int = 200, **kw: Any) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/v2/models/{model}/explain", json=body, timeout=120, **kw)
    assert r.status_code == status, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _additive(out: dict[str, Any], tol: float) -> None:
    values = np.asarray(out["values"])
    total = np.asarray(out["base_value"]) + values.sum(axis=1)
    np.testing.assert_allclose(total, out["prediction"], atol=tol, rtol=tol)


# ------------------------------------------------------------------------------------------------- trees
def test_xgboost_values_are_tree_shap_and_add_up_to_the_margin(served: tuple[Server, dict[str, Any]]) -> None:
    import shap
    import xgboost as xgb

    server, models = served
    rows = _x(5, 4, 1).astype(np.float32)
    doc = _explain(server, "xgb", _oip("input", rows))
    assert doc["model_name"] == "xgb" and doc["model_version"] == "1" and doc["method"] == "tree_shap"
    assert doc["features"] == ["input[0]", "input[1]", "input[2]", "input[3]"]
    assert doc["limits"]["rows"] == 5 and doc["limits"]["evaluations"] >= 5 and doc["limits"]["seconds"] >= 0
    [out] = doc["outputs"]
    assert out["name"] == "probabilities" and out["element"] == 1
    booster = models["xgb"]
    margin = booster.predict(xgb.DMatrix(rows), output_margin=True)
    np.testing.assert_allclose(out["prediction"], margin, atol=1e-4)
    _additive(out, 1e-4)
    explainer = shap.TreeExplainer(booster)
    np.testing.assert_allclose(out["values"], explainer.shap_values(rows), atol=1e-5)
    np.testing.assert_allclose(out["base_value"], np.full(5, explainer.expected_value), atol=1e-5)


def test_xgboost_classes_are_explained_each_under_its_label(served: tuple[Server, dict[str, Any]]) -> None:
    import shap
    import xgboost as xgb

    server, models = served
    rows = _x(3, 4, 9).astype(np.float32)
    doc = _explain(server, "xgb3", _oip("input", rows))
    assert [(o["name"], o["element"]) for o in doc["outputs"]] == [("probabilities", c) for c in ("low", "mid", "high")]
    margins = models["xgb3"].predict(xgb.DMatrix(rows), output_margin=True)
    want = shap.TreeExplainer(models["xgb3"]).shap_values(rows)
    for k, out in enumerate(doc["outputs"]):
        np.testing.assert_allclose(out["prediction"], margins[:, k], atol=1e-4)
        np.testing.assert_allclose(out["values"], want[:, :, k], atol=1e-5)
        _additive(out, 1e-4)


def test_lightgbm_and_forest_values_are_tree_shap(served: tuple[Server, dict[str, Any]]) -> None:
    import shap

    server, models = served
    rows = _x(4, 4, 2)
    doc = _explain(server, "lgb", {"inputs": [{"name": "input", "datatype": "FP64", "shape": [4, 4],
                                               "data": rows.ravel().tolist()}]})
    [out] = doc["outputs"]
    assert (out["name"], out["element"]) == ("prediction", None)
    np.testing.assert_allclose(out["prediction"], models["lgb"].predict(rows), atol=1e-6)
    _additive(out, 1e-6)
    np.testing.assert_allclose(out["values"], shap.TreeExplainer(models["lgb"]).shap_values(rows), atol=1e-6)

    forest = models["forest"]
    doc = _explain(server, "forest", _oip("input", rows.astype(np.float32)))
    assert doc["method"] == "tree_shap"
    assert [(o["name"], o["element"]) for o in doc["outputs"]] == [("probabilities", 0), ("probabilities", 1)]
    want = shap.TreeExplainer(forest).shap_values(rows.astype(np.float32).astype(np.float64))
    proba = forest.predict_proba(rows.astype(np.float32))
    for k, out in enumerate(doc["outputs"]):
        np.testing.assert_allclose(out["values"], want[:, :, k], atol=1e-6)
        np.testing.assert_allclose(out["prediction"], proba[:, k], atol=1e-6)
        _additive(out, 1e-6)


def test_tf_serving_explain_takes_a_predict_body(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    rows = _x(2, 4, 3)
    r = httpx.post(f"{server.url}/v1/models/xgb:explain", json={"instances": rows.tolist()}, timeout=60)
    assert r.status_code == 200, r.text
    v2 = _explain(server, "xgb", _oip("input", rows.astype(np.float32)))
    assert r.json()["outputs"] == v2["outputs"]
    r = httpx.post(f"{server.url}/v1/models/xgb/versions/1:explain",
                   json={"inputs": rows.tolist(), "parameters": {"max_rows": 1}}, timeout=60)
    assert r.status_code == 413, r.text


# ------------------------------------------------------------------------------------ model-agnostic
def test_onnx_with_a_profile_adds_up_to_the_served_prediction(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    rows = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=np.float32)
    doc = _explain(server, "scale", _oip("x", rows))
    assert doc["method"] == "kernel_shap"
    assert doc["features"] == ["a", "b", "c"]  # the model config's fields
    served_y = httpx.post(f"{server.url}/v2/models/scale/infer", json=_oip("x", rows)).json()["outputs"][0]["data"]
    outs = doc["outputs"]
    assert [(o["name"], o["element"]) for o in outs] == [("y", 0), ("y", 1), ("y", 2)]
    for k, out in enumerate(outs):
        np.testing.assert_allclose(out["prediction"], np.asarray(served_y).reshape(2, 3)[:, k], atol=1e-5)
        _additive(out, 1e-5)
        # y[k] = 2 x[k]: only feature k moves it, by twice its distance from the background's mean
        values = np.asarray(out["values"])
        assert np.abs(np.delete(values, k, axis=1)).max() < 1e-6
        np.testing.assert_allclose(values[:, k], 2 * rows[:, k] - np.asarray(out["base_value"]), atol=1e-5)
    assert 0 < doc["limits"]["evaluations"] <= 500_000


def test_onnx_without_background_is_422_and_request_rows_do(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    doc = _explain(server, "iris", _oip("input", rows), status=422)
    assert "background" in doc["error"] and "mlport profile" in doc["error"]
    background = np.random.default_rng(4).uniform([4.5, 2.2, 1.0, 0.1], [7.5, 4.0, 6.5, 2.4], size=(20, 4))
    doc = _explain(server, "iris", _oip("input", rows, background=background.tolist(), nsamples=14))
    assert doc["method"] == "kernel_shap" and doc["features"] == [f"input[{i}]" for i in range(4)]
    assert [o["element"] for o in doc["outputs"]] == [0, 1, 2]
    served_p = httpx.post(f"{server.url}/v2/models/iris/infer", json=_oip("input", rows)).json()["outputs"]
    proba = np.asarray(next(o for o in served_p if o["name"] == "probabilities")["data"]).reshape(2, 3)
    for k, out in enumerate(doc["outputs"]):
        np.testing.assert_allclose(out["prediction"], proba[:, k], atol=1e-5)
        _additive(out, 1e-5)
    # 14 coalitions (every one of 4 features) over 20 background rows for 2 rows, the background and the rows
    assert doc["limits"]["evaluations"] == 2 * 14 * 20 + 20 + 2 + 2
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'mlport_explanations_total{method="",model="iris",status="unprocessable"} 1.0' in metrics
    assert 'mlport_explanations_total{method="kernel_shap",model="iris",status="ok"} 1.0' in metrics
    assert 'mlport_explanation_seconds_count{method="kernel_shap",model="iris"} 1.0' in metrics


def test_a_manifest_is_explained_through_its_own_evaluation(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    rows = np.array([[1.0, 2.0, -1.0]], dtype=np.float32)
    background = [[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]
    doc = _explain(server, "ens", _oip("x", rows, background=background))
    assert doc["method"] == "kernel_shap" and doc["features"] == ["x[0]", "x[1]", "x[2]"]
    for k, out in enumerate(doc["outputs"]):
        assert out["prediction"] == pytest.approx([2 * rows[0, k]], rel=1e-6)
        _additive(out, 1e-5)
        assert out["base_value"] == pytest.approx([2.0])  # the mean of 2x over the background
        assert out["values"][0][k] == pytest.approx(2 * rows[0, k] - 2.0, abs=1e-5)


# ------------------------------------------------------------------------------------------- images
def test_occlusion_map_peaks_on_the_region_the_model_reads(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    image = np.ones((1, 16, 16), dtype=np.float32)
    doc = _explain(server, "region", _oip("image", image, patch=4, baseline="zeros"))
    assert doc["method"] == "occlusion" and doc["features"] == ["image"]
    [out] = doc["outputs"]
    assert "values" not in out and (out["name"], out["element"]) == ("score", None)
    heat = np.asarray(out["map"][0])
    assert heat.shape == (16, 16)
    assert np.allclose(heat[4:8, 8:12], 1.0) and np.abs(np.delete(heat.ravel(), np.ravel_multi_index(
        np.mgrid[4:8, 8:12].reshape(2, -1), (16, 16)))).max() == 0.0
    assert out["prediction"] == [1.0] and out["base_value"] == [0.0]
    assert doc["limits"]["evaluations"] == 16 + 1 + 1


def test_occlusion_answers_a_png_heat_map(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    pixels = np.random.default_rng(5).integers(0, 100, size=(16, 16), dtype=np.uint8)
    pixels[4:8, 8:12] += 150  # the region the model reads is bright: hiding it under the mean lowers the score
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG")
    r = httpx.post(f"{server.url}/v2/models/region/explain", content=buf.getvalue(),
                   headers={"content-type": "image/png", "accept": "image/png"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    heat = Image.open(io.BytesIO(r.content))
    assert heat.format == "PNG" and heat.size == (16, 16)
    red = np.asarray(heat.convert("RGB"), dtype=np.int64)
    inside, outside = red[4:8, 8:12], np.delete(red.reshape(-1, 3), np.ravel_multi_index(
        np.mgrid[4:8, 8:12].reshape(2, -1), (16, 16)), axis=0)
    assert (inside[..., 0] - inside[..., 2]).mean() > (outside[:, 0] - outside[:, 2]).mean() + 50
    # a tabular model has no heat map
    r = httpx.post(f"{server.url}/v2/models/xgb/explain", json=_oip("input", _x(1, 4, 0).astype(np.float32)),
                   headers={"accept": "image/png"}, timeout=60)
    assert r.status_code == 406, r.text


# ------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize(("params", "status", "word"), [
    ({"max_rows": 100}, 400, "max_rows"),
    ({"max_evaluations": 10**9}, 400, "max_evaluations"),
    ({"timeout_s": -1}, 400, "timeout_s"),
    ({"method": "magic"}, 400, "method"),
    ({"patch": 0}, 400, "patch"),
    ({"background": "many"}, 400, "background"),
])
def test_bad_parameters_are_400(served: tuple[Server, dict[str, Any]], params: dict[str, Any], status: int,
                                word: str) -> None:
    server, _ = served
    doc = _explain(server, "xgb", _oip("input", _x(1, 4, 0).astype(np.float32), **params), status=status)
    assert word in doc["error"]


def test_rows_and_evaluations_beyond_the_bounds_are_413(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    doc = _explain(server, "xgb", _oip("input", _x(9, 4, 0).astype(np.float32)), status=413)
    assert "9 rows" in doc["error"] and "at most 8" in doc["error"]
    doc = _explain(server, "scale", _oip("x", np.ones((2, 3), np.float32), max_evaluations=50), status=413)
    assert "model evaluations" in doc["error"]
    doc = _explain(server, "region", _oip("image", np.ones((1, 16, 16), np.float32), patch=1, max_evaluations=100),
                   status=413)
    assert "patch" in doc["error"]


def test_unknown_model_is_404(served: tuple[Server, dict[str, Any]]) -> None:
    server, _ = served
    _explain(server, "nope", _oip("input", np.ones((1, 4), np.float32)), status=404)
    r = httpx.post(f"{server.url}/v1/models/nope:explain", json={"instances": [[1, 2, 3, 4]]}, timeout=30)
    assert r.status_code == 404, r.text
    _explain(server, "xgb", _oip("wrong", np.ones((1, 4), np.float32)), status=400)


# ------------------------------------------------------------------------------ the explanation threads
#: y = x0 + x1 + x2, taking half a millisecond per row; it marks the first batch larger than one request's rows.
SLOW_MODEL = """
import time
from pathlib import Path

class Model:
    signature = {{
        "inputs": [{{"name": "x", "datatype": "FP32", "shape": [-1, 3]}}],
        "outputs": [{{"name": "y", "datatype": "FP32", "shape": [-1]}}],
    }}

    def predict(self, inputs):
        x = inputs["x"]
        if len(x) > 100:
            Path({marker!r}).touch()
        time.sleep(0.0005 * len(x))
        return {{"y": x.sum(axis=1)}}
"""


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    marker = tmp_path / "explaining"
    (tmp_path / "slow" / "1").mkdir(parents=True)
    (tmp_path / "slow" / "1" / "model.py").write_text(textwrap.dedent(SLOW_MODEL.format(marker=str(marker))))
    (tmp_path / "slow" / "model.yaml").write_text("trusted: true\n")
    server = start_server(tmp_path / "slow", "--inference-threads", "1", "--explain-threads", "1",
                          log_dir=tmp_path, timeout=120)
    try:
        yield server, marker
    finally:
        server.stop()


def test_predictions_are_answered_while_a_long_explanation_runs(slow: tuple[Server, Path]) -> None:
    import threading

    from tests.waiting import wait_for

    server, marker = slow
    rows = _x(8, 3, 6).astype(np.float32)
    background = _x(200, 3, 7).tolist()
    answer: dict[str, Any] = {}

    def explain() -> None:  # about 8 * 6 * 200 rows at 0.5 ms each: several seconds of model time
        answer["doc"] = _explain(server, "slow", _oip("x", rows, background=background, nsamples=6))

    worker = threading.Thread(target=explain)
    worker.start()
    try:
        wait_for(marker.exists, what="the explanation to run the model")
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for i in range(10):
                r = c.post("/v2/models/slow/infer", json=_oip("x", rows[i % 8:i % 8 + 1]))
                assert r.status_code == 200, r.text
                assert r.json()["outputs"][0]["data"] == pytest.approx([float(rows[i % 8].sum())], rel=1e-6)
        assert worker.is_alive(), "the explanation ended before the predictions: it was not long enough to tell"
    finally:
        worker.join(120)
    [out] = answer["doc"]["outputs"]
    _additive(out, 1e-4)
    np.testing.assert_allclose(out["prediction"], rows.sum(axis=1), rtol=1e-5)


def test_an_explanation_past_its_time_bound_is_504(slow: tuple[Server, Path]) -> None:
    server, _ = slow
    rows = _x(8, 3, 6).astype(np.float32)
    doc = _explain(server, "slow", _oip("x", rows, background=_x(200, 3, 7).tolist(), nsamples=6, timeout_s=0.5),
                   status=504)
    assert "time bound of 0.5 s" in doc["error"]


# ------------------------------------------------------------------------------------------------- gRPC
def test_grpc_model_infer_with_explain_answers_the_explanation(served: tuple[Server, dict[str, Any]]) -> None:
    import json

    import grpc

    from mlport.protocols.grpc.proto import inference_pb2 as pb
    from mlport.protocols.grpc.proto import inference_pb2_grpc

    server, _ = served
    rows = _x(3, 3, 8).astype(np.float32)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = pb.ModelInferRequest(model_name="scale", id="why")
        req.inputs.add(name="x", datatype="FP32", shape=[3, 3]).contents.fp32_contents.extend(rows.ravel())
        req.parameters["explain"].bool_param = True
        req.parameters["background_rows"].int64_param = 20
        res = stub.ModelInfer(req, timeout=60)
        assert res.id == "why" and not res.outputs
        doc = json.loads(res.parameters["explanation"].string_param)
        rest = _explain(server, "scale", _oip("x", rows, background_rows=20))
        assert doc["method"] == "kernel_shap" and doc["outputs"] == rest["outputs"]

        req = pb.ModelInferRequest(model_name="iris")
        req.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([5.0, 3.0, 1.5, 0.2])
        req.parameters["explain"].bool_param = True
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, timeout=60)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "background" in (err.value.details() or "")
