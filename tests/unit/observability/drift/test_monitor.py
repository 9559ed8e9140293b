"""The sliding window and one version's monitor, without a server."""

from __future__ import annotations

import numpy as np

from mlport.formats.config import DriftConfig
from mlport.observability.drift import build_profile
from mlport.observability.drift.features import columns_of
from mlport.observability.drift.monitor import VersionMonitor
from mlport.observability.drift.window import Window


def test_the_window_keeps_the_last_rows_and_the_recent_ones() -> None:
    w = Window(1, max_rows=5, max_seconds=10.0)
    w.add(0.0, [np.arange(3)])
    w.add(1.0, [np.arange(3, 7)])
    assert w.rows == 5 and w.column(0).tolist() == [2, 3, 4, 5, 6]
    w.add(2.0, [np.arange(100, 120)])  # one batch larger than the window: its last rows
    assert w.column(0).tolist() == [115, 116, 117, 118, 119]
    assert not w.expire(11.5)
    assert w.expire(12.5) and w.rows == 0 and w.added == 27


def test_the_values_are_copied_so_a_reused_request_buffer_cannot_change_them() -> None:
    w = Window(1, max_rows=10)
    buf = np.zeros(3)
    w.add(0.0, [buf])
    buf[:] = 7
    assert w.column(0).tolist() == [0, 0, 0]


def _monitor(**cfg: object) -> VersionMonitor:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3000, 3)).astype(np.float32)
    cols = columns_of("input", "x", (-1, 3), {"a": 0, "b": 1, "c": 2}) + columns_of("output", "y", (-1,))
    profile = build_profile(cols, {"input": {"x": ref}, "output": {"y": ref.sum(axis=1)}}, 3000)
    return VersionMonitor("m", 1, profile, DriftConfig.model_validate({"interval_s": 0.05, **cfg}))


def _feed(m: VersionMonitor, rows: np.ndarray, at: float = 0.0) -> None:
    for chunk in np.array_split(rows, 20):
        m.add(at, {"x": chunk}, {"y": chunk.sum(axis=1)})


def test_a_shifted_feature_drifts_and_the_others_stay_ok() -> None:
    m = _monitor(window_rows=600)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    _feed(m, x[:50])
    assert m.compute(1.0)["status"] == "insufficient"
    _feed(m, x)
    assert m.compute(2.0)["status"] == "ok"
    shifted = rng.normal(size=(600, 3)).astype(np.float32)
    shifted[:, 1] += 1.5
    _feed(m, shifted)
    result = m.compute(3.0)
    status = {f["name"]: f["status"] for f in result["features"]}
    assert status == {"a": "ok", "b": "drift", "c": "ok", "y": "drift"}
    assert result["status"] == "drift" and result["rows"] == 600 and result["rows_seen"] == 1250


def test_figures_are_due_after_the_interval_when_the_window_changed() -> None:
    m = _monitor(window_seconds=5.0)
    m.compute(100.0)
    assert not m.due(100.01)
    _feed(m, np.zeros((100, 3), dtype=np.float32), at=100.0)
    assert not m.due(100.01) and m.due(100.1)
    m.compute(100.1)
    assert not m.due(101.0)
    assert m.due(106.0)  # the rows grew older than the window: dropped, figures again
    assert m.compute(106.0)["rows"] == 0


def test_a_request_without_the_profiled_tensors_is_left_out() -> None:
    m = _monitor()
    m.add(0.0, {"other": np.zeros((4, 3))}, {"y": np.zeros(4)})
    assert m.window.rows == 0
