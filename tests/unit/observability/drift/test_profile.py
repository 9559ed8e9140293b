"""Reference profiles: what they hold, and how a bad profile file is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlport.errors import InvalidInput
from mlport.observability.drift import build_profile, find_profile, read_profile
from mlport.observability.drift.features import Column, columns_of
from mlport.observability.drift.outliers import OutlierScorer
from mlport.observability.drift.profile import MAX_CATEGORIES, OTHER


def test_columns_of_names_fields_and_skips_images() -> None:
    assert columns_of("input", "x", (-1, 3), {"a": 0, "c": 2}) == [
        Column("a", "x", 0, "input"), Column("x[1]", "x", 1, "input"), Column("c", "x", 2, "input")]
    assert columns_of("output", "label", (-1,)) == [Column("label", "label", None, "output")]
    assert columns_of("input", "img", (-1, 28, 28, 1)) == []
    assert columns_of("input", "v", (-1, -1)) == []


def test_profile_holds_quantiles_histogram_missing_rate_and_frequencies(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 2.0, size=(1000, 2))
    x[:50, 1] = np.nan
    labels = np.array([f"c{i % (MAX_CATEGORIES + 5)}" for i in range(1000)], dtype=object)
    cols = [*columns_of("input", "x", (-1, 2)), Column("label", "label", None, "output")]
    profile = build_profile(cols, {"input": {"x": x}, "output": {"label": labels}}, 1010, {"x[0]": 10})
    first, second, label = profile.features
    assert first.missing_rate == pytest.approx(10 / 1010)
    assert second.missing_rate == pytest.approx(50 / 1010)  # its NaN values
    assert first.quantiles["0.5"] == pytest.approx(float(np.median(x[:, 0])))
    assert first.mean == pytest.approx(float(x[:, 0].mean()))
    assert first.histogram is not None and sum(first.histogram.fractions) == pytest.approx(1.0)
    assert len(first.histogram.fractions) == len(first.histogram.edges) + 1 == 10
    assert label.kind == "categorical" and label.frequencies is not None
    assert len(label.frequencies) == MAX_CATEGORIES + 1 and label.frequencies[OTHER] > 0
    assert sum(label.frequencies.values()) == pytest.approx(1.0)
    path = tmp_path / "profile.json"
    path.write_bytes(profile.to_json())
    assert read_profile(path) == profile


def test_outlier_scores_are_the_mahalanobis_distance(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref = rng.multivariate_normal([0, 5], [[1.0, 0.8], [0.8, 4.0]], size=5000)
    profile = build_profile(columns_of("input", "x", (-1, 2)), {"input": {"x": ref}}, 5000)
    scorer = OutlierScorer(profile)
    rows = np.array([[0.0, 5.0], [5.0, 5.0], [np.nan, 1.0]])
    scores = scorer.scores({"x": rows})
    assert scores is not None
    mean, cov = ref.mean(axis=0), np.cov(ref, rowvar=False)
    for row, score in zip(rows[:2], scores[:2], strict=True):
        d = row - mean
        assert score == pytest.approx(float(np.sqrt(d @ np.linalg.inv(cov) @ d)), rel=1e-3)
    assert np.isnan(scores[2])
    assert scores[1] > scorer.threshold > scores[0]


@pytest.mark.parametrize("text, message", [
    (b"not json", "cannot read the profile"),
    (b'{"format": "other", "rows": 1, "features": []}', "is not an mlport profile: format"),
    (b'{"rows": -1, "features": []}', "rows"),
])
def test_a_bad_profile_is_refused_with_its_problem(tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "profile.json"
    path.write_bytes(text)
    with pytest.raises(InvalidInput, match=message):
        read_profile(path)


def test_find_profile_looks_in_the_version_folder_then_beside_model_yaml(tmp_path: Path) -> None:
    model = tmp_path / "m" / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    assert find_profile(model) is None
    (tmp_path / "m" / "profile.json").write_text("{}")
    assert find_profile(model) == tmp_path / "m" / "profile.json"
    (tmp_path / "m" / "1" / "profile.json").write_text("{}")
    assert find_profile(model) == tmp_path / "m" / "1" / "profile.json"
    single = tmp_path / "iris.onnx"
    single.write_bytes(b"")
    (tmp_path / "iris.profile.json").write_text("{}")
    assert find_profile(single) == tmp_path / "iris.profile.json"
