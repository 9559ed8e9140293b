"""Under a memory budget, the metric series of evicted models leave ``/metrics``: the server's memory follows the
loaded models, not every model it ever served (a real lazy server)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.builders import counted_python_model

MIB = 1024 * 1024


def _model(root: Path, name: str, loads: Path) -> None:
    folder = counted_python_model(root / name / "1", loads, name, 1.0, 0.0)
    with (folder / "data.bin").open("wb") as f:  # sparse 40 MiB: the model's memory at least
        f.truncate(40 * MIB)
    (root / name / "model.yaml").write_text("trusted: true\n")


def _infer(client: httpx.Client, name: str) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    answer = client.post(f"/v2/models/{name}/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text


def _series(text: str, metric: str, model: str) -> list[str]:
    return re.findall(rf'^{metric}\{{model="{model}"[^}}]*\}} (\S+)$', text, re.M)


def test_evicted_models_lose_their_request_series_and_get_them_back(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    names = [f"m{i}" for i in range(6)]
    for name in names:
        _model(root, name, loads)
    server = serve(root, "--lazy", "--memory-budget", "100MiB", "--grpc-port", "0")  # room for two
    with server.client() as c:
        for name in names:
            _infer(c, name)
        states = {r["name"]: r["state"] for r in c.post("/v2/repository/index", json={}).json()}
        loaded = [n for n in names if states[n] == "READY"]
        assert loaded == ["m4", "m5"], states
        text = c.get("/metrics").text
        for name in names:
            present = name in loaded
            for metric in ("mlport_requests_total", "mlport_request_duration_seconds_count",
                           "mlport_inference_duration_seconds_count", "mlport_inflight_requests"):
                assert bool(_series(text, metric, name)) is present, (metric, name)
            # what tells the model's life stays, and agrees with the index
            assert _series(text, "mlport_model_loaded", name) == ["1.0" if present else "0.0"]
            assert _series(text, "mlport_model_loads_total", name) == ["1.0"]
            assert _series(text, "mlport_model_evictions_total", name) == ([] if present else ["1.0"])
        # served again, an evicted model gets its series back, counted from zero
        _infer(c, "m0")
        text = c.get("/metrics").text
        assert _series(text, "mlport_requests_total", "m0") == ["1.0"]
        assert _series(text, "mlport_model_loaded", "m0") == ["1.0"]
        assert _series(text, "mlport_request_duration_seconds_count", "m4") == []  # m4 went for it


def test_a_model_unloaded_through_the_repository_api_loses_its_series(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    for name in ("a", "b"):
        _model(root, name, loads)
    server = serve(root, "--grpc-port", "0")
    with server.client() as c:
        for name in ("a", "b"):
            _infer(c, name)
        assert c.post("/v2/repository/models/a/unload", json={}).status_code == 200
        text = c.get("/metrics").text
        assert _series(text, "mlport_requests_total", "a") == []
        assert _series(text, "mlport_request_duration_seconds_count", "a") == []
        assert _series(text, "mlport_model_loaded", "a") == ["0.0"]  # as the index says: unloaded
        assert _series(text, "mlport_requests_total", "b") == ["1.0"]
        assert _series(text, "mlport_model_loaded", "b") == ["1.0"]
        assert c.post("/v2/repository/models/a/load", json={}).status_code == 200
        _infer(c, "a")
        text = c.get("/metrics").text
        assert _series(text, "mlport_requests_total", "a") == ["1.0"]
        assert _series(text, "mlport_model_loaded", "a") == ["1.0"]
