"""Manifests loaded in process: each node kind against a hand computation, and invalid manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from mlport.errors import MlportError
from mlport.formats.base import LoadOptions, RequestContext
from mlport.formats.manifest import ManifestError, ManifestEvaluator, ManifestFormat
from tests.builders import iris_onnx, ort_run, scale_onnx

FMT = ManifestFormat()


def _load(folder: Path, text: str, name: str = "m.yaml", trusted: bool = False) -> ManifestEvaluator:
    path = folder / name
    path.write_text(text)
    assert FMT.detect(path)
    ev = FMT.load(path, LoadOptions(trusted=trusted))
    assert isinstance(ev, ManifestEvaluator)
    return ev


@pytest.fixture
def models(tmp_path: Path) -> Path:
    for f in (1.0, 2.0, 3.0):
        scale_onnx(tmp_path / f"x{int(f)}.onnx", f)
    iris_onnx(tmp_path / "strong.onnx", c=10.0)
    iris_onnx(tmp_path / "weak.onnx", max_iter=3, c=0.01)
    iris_onnx(tmp_path / "mid.onnx", c=0.1)
    return tmp_path


X = np.arange(12, dtype=np.float32).reshape(4, 3)


def test_flow_chains_steps_by_name_with_mappings(models: Path) -> None:
    ev = _load(models, """
flow:
  - model: x2.onnx
    outputs: {y: doubled}
  - model: x3.onnx
    inputs: {x: doubled}
""")
    assert ev.signature.input_names == ["x"] and ev.signature.output_names == ["y"]
    np.testing.assert_allclose(ev.predict({"x": X})["y"], X * 6)
    ev.close()


def test_flow_outputs_may_name_inner_tensors(models: Path) -> None:
    ev = _load(models, """
flow:
  - {model: x2.onnx, outputs: {y: doubled}}
  - {model: x3.onnx, inputs: {x: doubled}}
outputs: [doubled, y]
""")
    out = ev.predict({"x": X})
    np.testing.assert_allclose(out["doubled"], X * 2)
    np.testing.assert_allclose(out["y"], X * 6)


def test_ensemble_mean_weighted_mean_and_vote(models: Path) -> None:
    ev = _load(models, "ensemble:\n  children: [{model: x1.onnx}, {model: x3.onnx}]\n")
    np.testing.assert_allclose(ev.predict({"x": X})["y"], X * 2)
    ev = _load(models, """
ensemble:
  combine: weighted_mean
  weights: [3, 1]
  children: [{model: x1.onnx}, {model: x3.onnx}]
""")
    np.testing.assert_allclose(ev.predict({"x": X})["y"], X * 1.5, rtol=1e-6)

    ev = _load(models, """
ensemble:
  combine: vote
  outputs: [label]
  children: [{model: strong.onnx}, {model: weak.onnx}, {model: mid.onnx}]
""")
    x, _ = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    labels = np.stack([ort_run(models / f"{m}.onnx", {"input": x})["label"] for m in ("strong", "weak", "mid")])
    want = []
    for col in labels.T:  # the hand computation: majority, ties to the earliest child
        values, counts = np.unique(col, return_counts=True)
        best = values[counts == counts.max()]
        want.append(next(v for v in col if v in best))
    got = ev.predict({"input": x})["label"]
    assert got.tolist() == want
    assert (labels[0] != labels[1]).any()  # the children do disagree somewhere


def test_router_weighted_split_is_within_tolerance(models: Path) -> None:
    ev = _load(models, """
router:
  children: [{model: x1.onnx, name: a}, {model: x2.onnx, name: b}]
  weights: [0.8, 0.2]
  seed: 7
""")
    n = 4000
    seen = {"a": 0, "b": 0}
    for _ in range(n):
        ctx = RequestContext()
        out = ev.predict_in({"x": X[:1]}, ctx)
        (route,) = ctx.parameters["routed_to"]
        seen[route] += 1
        assert out["y"][0, 1] == (1.0 if route == "a" else 2.0)
    share = seen["a"] / n
    # 4 standard deviations of a binomial(4000, 0.8) share
    assert abs(share - 0.8) < 4 * (0.8 * 0.2 / n) ** 0.5


def test_sticky_router_keeps_a_key_on_one_child(models: Path) -> None:
    ev = _load(models, """
router:
  strategy: sticky
  children: [{model: x1.onnx, name: a}, {model: x2.onnx, name: b}]
""")
    routes: dict[str, set[str]] = {}
    for i in range(400):
        key = f"user-{i % 40}"
        ctx = RequestContext(routing_key=key)
        ev.predict_in({"x": X[:1]}, ctx)
        routes.setdefault(key, set()).update(ctx.parameters["routed_to"])
    assert all(len(r) == 1 for r in routes.values())
    firsts = [next(iter(r)) for r in routes.values()]
    assert 5 < firsts.count("a") < 35  # both children get keys


@pytest.mark.parametrize("strategy", ["epsilon_greedy", "thompson"])
def test_bandit_converges_to_the_better_arm(models: Path, strategy: str) -> None:
    ev = _load(models, f"""
router:
  strategy: {strategy}
  epsilon: 0.1
  seed: 3
  children: [{{model: x1.onnx, name: worse}}, {{model: x2.onnx, name: better}}]
""")
    rng = np.random.default_rng(11)
    p = {"worse": 0.3, "better": 0.7}
    late = []
    for i in range(1500):
        ctx = RequestContext(request_id=f"r{i}")
        ev.predict_in({"x": X[:1]}, ctx)
        (arm,) = ctx.parameters["routed_to"]
        ev.feedback(f"r{i}", float(rng.random() < p[arm]))
        if i >= 1000:
            late.append(arm)
    assert late.count("better") / len(late) > 0.8
    arms = ev.arms()["router1"] if "router1" in ev.arms() else next(iter(ev.arms().values()))
    assert arms["better"]["pulls"] > arms["worse"]["pulls"]
    with pytest.raises(MlportError, match="no routed request"):
        ev.feedback("r5", 1.0)  # rewarded already


def test_cascade_takes_the_fallback_exactly_below_the_threshold(models: Path) -> None:
    ev = _load(models, """
cascade:
  first: {model: weak.onnx}
  fallback: {model: strong.onnx}
  confidence: {output: probabilities, threshold: 0.6}
""")
    x, _ = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    weak = ort_run(models / "weak.onnx", {"input": x})
    strong = ort_run(models / "strong.onnx", {"input": x})
    low = weak["probabilities"].max(axis=1) < 0.6
    assert 0 < low.sum() < len(x)
    ctx = RequestContext()
    out = ev.predict_in({"input": x}, ctx)
    np.testing.assert_array_equal(out["label"], np.where(low, strong["label"], weak["label"]))
    np.testing.assert_allclose(out["probabilities"],
                               np.where(low[:, None], strong["probabilities"], weak["probabilities"]), rtol=1e-6)
    assert ctx.parameters["answered_by"] == ["strong" if v else "weak" for v in low]


def test_nested_nodes_and_included_manifests(models: Path) -> None:
    (models / "inner.yaml").write_text("ensemble:\n  children: [{model: x1.onnx}, {model: x3.onnx}]\n")
    ev = _load(models, """
flow:
  - manifest: inner.yaml
  - model: x2.onnx
    inputs: {x: y}
""")
    np.testing.assert_allclose(ev.predict({"x": X})["y"], X * 4)


def _error(models: Path, text: str, **kw: Any) -> str:
    with pytest.raises(MlportError) as info:
        _load(models, text, **kw)
    return str(info.value)


def test_invalid_manifests_fail_at_load_naming_the_step_and_field(models: Path) -> None:
    msg = _error(models, "flow:\n  - {model: x1.onnx}\n  - {predictor: x2.onnx}\n")
    assert "step 2" in msg and "'predictor'" in msg
    msg = _error(models, "flow:\n  - {model: x1.onnx}\n  - {model: nothere.onnx, name: second}\n")
    assert "second" in msg and "nothere.onnx" in msg and "does not exist" in msg
    msg = _error(models, "flow:\n  - {model: x1.onnx}\n  - {model: x2.onnx, inputs: {z: y}}\n")
    assert "step 2" in msg and "inputs" in msg and "'z'" in msg
    msg = _error(models, "flow:\n  - {model: ../outside.onnx}\n")
    assert "outside the manifest's folder" in msg
    msg = _error(models, "flow:\n  - {model: x1.onnx}\noutputs: [nope]\n")
    assert "'nope'" in msg
    (models / "a.yaml").write_text("flow:\n  - manifest: b.yaml\n")
    (models / "b.yaml").write_text("flow:\n  - manifest: a.yaml\n")
    with pytest.raises(ManifestError, match=r"cycle: a\.yaml -> b\.yaml -> a\.yaml"):
        FMT.load(models / "a.yaml", LoadOptions())
    msg = _error(models, "router:\n  children: [{model: x1.onnx}]\n  weights: [1, 2]\n")
    assert "weights" in msg
    msg = _error(models, "cascade:\n  first: {model: weak.onnx}\n  fallback: {model: strong.onnx}\n"
                         "  confidence: {output: certainty, threshold: 0.5}\n")
    assert "confidence.output 'certainty'" in msg
    msg = _error(models, "ensemble:\n  children: [{model: x1.onnx}, {model: strong.onnx}]\n")
    assert "no output name in common" in msg


def test_other_yaml_files_are_not_manifests(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text("flow: not really\n")
    (tmp_path / "x.model.yaml").write_text("flow: not really\n")
    (tmp_path / "settings.yaml").write_text("threads: 3\n")
    for name in ("model.yaml", "x.model.yaml", "settings.yaml"):
        assert not FMT.detect(tmp_path / name)


def test_a_declared_signature_over_a_manifest_keeps_routes_and_feedback(models: Path) -> None:
    from mlport.formats.adapt import adapt
    from mlport.formats.base import ContextEvaluator, send_feedback
    from mlport.formats.config import ModelConfig

    ev = _load(models, """
router:
  strategy: epsilon_greedy
  seed: 1
  children: [{model: x1.onnx, name: a}, {model: x2.onnx, name: b}]
""")
    config = ModelConfig.model_validate({"signature": {"inputs": [{"name": "x", "alias": "features"}],
                                                       "outputs": [{"name": "y", "alias": "scaled"}]}})
    adapted = adapt(ev, config)
    assert isinstance(adapted, ContextEvaluator)
    ctx = RequestContext(request_id="r1")
    out = adapted.predict_in({"features": X[:1]}, ctx)
    (route,) = ctx.parameters["routed_to"]
    np.testing.assert_allclose(out["scaled"], X[:1] * (1.0 if route == "a" else 2.0))
    send_feedback(adapted, "r1", 1.0)
    assert ev.arms()[next(iter(ev.arms()))][route]["pulls"] == 1
    with pytest.raises(MlportError, match="takes no feedback"):
        send_feedback(ev.root.children()[0].evaluator, "r1", 1.0)  # type: ignore[attr-defined]
