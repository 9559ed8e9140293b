"""The hook on the inference path: cheap for unwatched models, never raising, outlier scores inline."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mlport.formats.config import ModelConfig
from mlport.observability.drift import DriftWatch, build_profile
from mlport.observability.drift.features import columns_of
from mlport.observability.metrics import Metrics
from tests.waiting import wait_for


@dataclass(eq=False)
class _Source:
    path: Path


@dataclass(eq=False)
class _Version:
    """The fields of a loaded version the hook reads (:class:`mlport.runtime.states.LoadedVersion`)."""

    model: str
    version: int
    source: _Source
    config: ModelConfig


def _version(tmp_path: Path, profile: bytes | None, **cfg: object) -> _Version:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"")
    if profile is not None:
        (folder / "profile.json").write_bytes(profile)
    return _Version("m", 1, _Source(folder / "model.onnx"), ModelConfig.model_validate(cfg))


def _profile() -> bytes:
    ref = np.random.default_rng(0).normal(size=(1000, 2))
    return build_profile(columns_of("input", "x", (-1, 2)), {"input": {"x": ref}}, 1000).to_json()


@pytest.fixture
def watch() -> DriftWatch:
    return DriftWatch(Metrics())


def test_a_model_without_profile_is_not_watched(tmp_path: Path, watch: DriftWatch) -> None:
    lv = _version(tmp_path, None, outliers=True)
    assert watch.observe(lv, {"x": np.zeros((2, 2))}, {}) == {}
    assert watch.results("m") is None and watch._thread is None
    watch.close()


def test_a_bad_profile_leaves_the_model_unwatched(tmp_path: Path, watch: DriftWatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    lv = _version(tmp_path, b'{"rows": "many"}', outliers=True)
    assert watch.observe(lv, {"x": np.zeros((2, 2))}, {}, {"routed_to": ["a"]}) == {"routed_to": ["a"]}
    assert "is not an mlport profile" in caplog.text and watch.results("m") is None
    watch.close()


def test_outlier_scores_and_rows_for_the_window(tmp_path: Path, watch: DriftWatch) -> None:
    lv = _version(tmp_path, _profile(), outliers=True, drift={"interval_s": 0.05, "min_rows": 10})
    params = watch.observe(lv, {"x": np.array([[0.0, 0.0], [np.nan, 1.0], [9.0, -9.0]])}, {})
    scores = params["outlier_scores"]
    assert scores[0] < params["outlier_threshold"] < scores[2] and scores[1] is None
    for _ in range(5):
        watch.observe(lv, {"x": np.random.default_rng(1).normal(size=(4, 2))}, {})
    result = wait_for(lambda: (r := watch.results("m")) and r[0]["rows_seen"] == 23 and r[0], what="23 rows")
    assert result["status"] in ("ok", "warning", "drift") and result["rows"] == 23
    watch.close()


def test_inputs_the_profile_does_not_fit_never_fail_the_request(tmp_path: Path, watch: DriftWatch) -> None:
    lv = _version(tmp_path, _profile(), outliers=True)
    assert watch.observe(lv, {"x": np.zeros(3)}, {"y": [1, 2]}) == {}  # one value per row: no column 1
    assert watch.observe(lv, {"other": np.zeros((2, 2))}, {}) == {}
    watch.close()


def test_requests_alternating_between_versions_each_get_their_own_watch(tmp_path: Path, watch: DriftWatch) -> None:
    scored = _version(tmp_path / "a", _profile(), outliers=True)
    plain = _version(tmp_path / "b", None, outliers=True)
    x = {"x": np.zeros((1, 2))}
    for _ in range(3):
        assert "outlier_scores" in watch.observe(scored, x, {})
        assert watch.observe(plain, x, {}) == {}
        assert "outlier_scores" in watch.observe(scored, x, {})
    del scored  # a version gone from the server is not kept alive by the watch
    gc.collect()
    assert len(watch._watches) == 1
    watch.close()
