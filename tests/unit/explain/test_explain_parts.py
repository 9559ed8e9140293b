"""The pure parts of explanations: parameters within the server's bounds, features of a tabular model, the
occlusion map (against a plain loop over patches), background rows, and the heat map."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.explain.agnostic import profile_background, request_background
from mlport.explain.heatmap import heatmap_png
from mlport.explain.layout import tabular_layout, targets_of
from mlport.explain.occlusion import explain_occlusion
from mlport.explain.params import ExplainLimits, parse_params
from mlport.explain.result import Budget, ModelFunction
from mlport.formats.base import Arrays, Evaluator
from mlport.observability.drift import build_profile
from mlport.observability.drift.features import columns_of

LIMITS = ExplainLimits(max_rows=8, max_evaluations=1000, timeout_s=10.0)


def test_parameters_may_only_lower_the_bounds() -> None:
    p = parse_params({"max_rows": 2, "max_evaluations": 10, "timeout_s": 0.5}, LIMITS)
    assert (p.max_rows, p.max_evaluations, p.timeout_s) == (2, 10, 0.5)
    assert parse_params(None, LIMITS).max_rows == 8
    for bad in ({"max_rows": 9}, {"max_evaluations": 1001}, {"timeout_s": 11}, {"timeout_s": "1"},
                {"max_rows": True}, {"baseline": "noise"}, {"background": {"a": 1}}, {"background": "[1,"}):
        with pytest.raises(InvalidInput) as err:
            parse_params(bad, LIMITS)
        assert next(iter(bad)) in str(err.value)
    assert parse_params({"background": "[[1, 2]]"}, LIMITS).background == [[1, 2]]


def test_features_are_inputs_columns_or_fields() -> None:
    sig = Signature((TensorSpec("x", DataType.FP32, (-1, 3)), TensorSpec("age", DataType.INT64, (-1,))),
                    (TensorSpec("y", DataType.FP32, (-1, 2)),))
    inputs = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "age": np.array([30, 40])}
    layout = tabular_layout(sig, inputs, {"x": {"height": 1}})
    assert layout is not None
    assert layout.names == ["x[0]", "height", "x[2]", "age"]
    m = layout.matrix(inputs)
    assert m.tolist() == [[0, 1, 2, 30], [3, 4, 5, 40]]
    back = layout.inputs(m + 0.4)
    assert back["x"].dtype == np.float32 and back["age"].tolist() == [30, 40] and back["age"].dtype == np.int64
    assert tabular_layout(sig, {"x": np.zeros((1, 2, 2)), "age": np.zeros(1)}, {}) is None
    targets = targets_of(sig, {"y": np.zeros((2, 2), np.float32)}, None, {"label": ("cat", "dog")})
    assert [(t.name, t.index, t.element) for t in targets] == [("y", 0, "cat"), ("y", 1, "dog")]
    with pytest.raises(MlportError) as err:
        targets_of(sig, {"y": np.zeros((2, 2), np.int64)}, None, {})
    assert err.value.code is ErrorCode.UNPROCESSABLE


class _Weighted(Evaluator):
    """score = sum of the image's pixels times a weight map (so each pixel's part is known)."""

    def __init__(self, weights: np.ndarray[Any, Any]) -> None:
        self.weights = weights
        self.calls = 0
        self.signature = Signature((TensorSpec("img", DataType.FP32, (-1, *weights.shape, 3)),),
                                   (TensorSpec("s", DataType.FP32, (-1,)),))

    def predict(self, inputs: Arrays) -> Arrays:
        self.calls += 1
        return {"s": np.einsum("nhwc,hw->n", inputs["img"], self.weights).astype(np.float32)}


def test_occlusion_matches_a_plain_loop_over_patches() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(9, 7))
    model = _Weighted(weights)
    images = rng.uniform(size=(2, 9, 7, 3)).astype(np.float32)
    params = parse_params({"patch": 3, "stride": 2, "baseline": "zeros"}, ExplainLimits(max_evaluations=10_000))
    fn = ModelFunction(model, "w", Budget(10_000, 10.0), chunk_rows=5)
    outputs = model.predict({"img": images})
    result = explain_occlusion(fn, model.signature.inputs[0], {"img": images}, outputs, None, {}, params)
    [out] = result.outputs
    assert out.map is not None and out.map.shape == (2, 9, 7)
    starts_y, starts_x = [0, 2, 4, 6], [0, 2, 4]
    for r in range(2):
        total, count = np.zeros((9, 7)), np.zeros((9, 7))
        full = float((images[r].astype(np.float64).sum(-1) * weights).sum())
        for y in starts_y:
            for x in starts_x:
                hidden = images[r].astype(np.float64).copy()
                hidden[y:y + 3, x:x + 3] = 0
                drop = full - float((hidden.sum(-1) * weights).sum())
                total[y:y + 3, x:x + 3] += drop
                count[y:y + 3, x:x + 3] += 1
        np.testing.assert_allclose(out.map[r], total / count, rtol=1e-4, atol=1e-4)
    assert result.evaluations == 0 and fn.budget.used == 2 * (12 + 1)
    assert model.calls == 1 + 2 * (1 + 3)  # the prediction, then per image: the baseline and 12 patches in chunks of 5


def test_budget_stops_at_its_bounds() -> None:
    model = _Weighted(np.ones((2, 2)))
    fn = ModelFunction(model, "w", Budget(3, 10.0), chunk_rows=10)
    fn({"img": np.zeros((3, 2, 2, 3), np.float32)})
    with pytest.raises(MlportError) as err:
        fn({"img": np.zeros((1, 2, 2, 3), np.float32)})
    assert err.value.code is ErrorCode.TOO_LARGE
    late = ModelFunction(model, "w", Budget(100, 0.0), chunk_rows=10)
    with pytest.raises(MlportError) as err:
        late({"img": np.zeros((1, 2, 2, 3), np.float32)})
    assert err.value.code is ErrorCode.DEADLINE_EXCEEDED


def test_background_rows_come_from_the_profile_or_the_request() -> None:
    sig = Signature((TensorSpec("x", DataType.FP32, (-1, 2)), TensorSpec("k", DataType.INT64, (-1,))),
                    (TensorSpec("y", DataType.FP32, (-1,)),))
    rng = np.random.default_rng(1)
    x = rng.normal(loc=[0.0, 100.0], size=(500, 2))
    k = rng.integers(0, 3, 500)
    cols = columns_of("input", "x", (-1, 2)) + columns_of("input", "k", (-1,))
    profile = build_profile(cols, {"input": {"x": x, "k": k}}, 500)
    layout = tabular_layout(sig, {"x": x[:1].astype(np.float32), "k": k[:1]}, {})
    assert layout is not None
    bg = profile_background(profile, layout, 300)
    assert bg.shape == (300, 3)
    assert abs(bg[:, 1].mean() - 100.0) < 0.5 and set(np.unique(bg[:, 2])) <= {0.0, 1.0, 2.0}
    assert request_background([[1, 2, 3]], layout, 5).tolist() == [[1, 2, 3]]
    with pytest.raises(InvalidInput):
        request_background([[1, 2]], layout, 5)
    with pytest.raises(MlportError) as err:
        request_background([[1, 2, 3]] * 6, layout, 5)
    assert err.value.code is ErrorCode.TOO_LARGE


def test_heat_map_is_red_where_attribution_is_positive() -> None:
    attribution = np.zeros((5, 6))
    attribution[1, 2] = 3.0
    attribution[4, 5] = -3.0
    png = heatmap_png(np.full((5, 6, 3), 0.5), attribution)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    assert img.shape == (5, 6, 3)
    assert img[1, 2, 0] > 150 and img[1, 2, 2] < 50  # red
    assert img[4, 5, 2] > 150 and img[4, 5, 0] < 50  # blue
    assert img[0, 0, 0] == img[0, 0, 2]  # gray


def test_without_shap_the_error_says_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mlport.explain.shapload import import_shap

    monkeypatch.setitem(sys.modules, "shap", None)  # an import of shap now fails as if it were not installed
    with pytest.raises(MlportError) as err:
        import_shap()
    assert "pip install 'mlport[explain]'" in str(err.value)
