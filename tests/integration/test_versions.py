"""Repositories, version policies and hot reload: swaps lose no request, broken versions never serve."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.builders import iris_onnx, scale_onnx
from tests.integration.test_formats_tabular import index_row
from tests.waiting import wait_for

BODY = {"x": [[1.0, 2.0, 3.0]]}


def _factor(c: httpx.Client, path: str = "/models/scale/eval") -> float:
    r = c.post(path, json=BODY)
    assert r.status_code == 200, r.text
    return float(r.json()["y"][0][0])


def _publish(tmp: Path, root: Path, version: int, factor: float | None) -> None:
    """Write a version folder elsewhere, then move it in at once (as a deploy script would)."""
    stage = tmp / f"stage-{version}-{time.monotonic_ns()}"
    if factor is None:
        stage.mkdir(parents=True)
        (stage / "model.onnx").write_bytes(b"this is not an onnx model")
    else:
        scale_onnx(stage / "model.onnx", factor)
    os.rename(stage, root / "scale" / str(version))


def test_version_swap_under_load_loses_no_request(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    scale_onnx(root / "scale" / "1" / "model.onnx", 1.0)
    server = serve(root, "--poll-interval", "0.2")
    stop = threading.Event()
    seen: list[float] = []
    failures: list[str] = []

    def hammer() -> None:
        with server.client() as c:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                r = c.post("/models/scale/eval", json=BODY)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    seen.append(float(r.json()["y"][0][0]))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(seen) > 50, 30, "50 answers")
        _publish(tmp_path, root, 2, 2.0)
        wait_for(lambda: seen[-1] == 2.0 and len(seen) > 100, 30, "answers of version 2")
        mark = len(seen)
        # a broken version 3 never takes traffic; version 2 keeps serving
        _publish(tmp_path, root, 3, None)
        with server.client() as c:
            wait_for(lambda: any(r["version"] == "3" and r["state"] == "UNAVAILABLE"
                                 for r in c.post("/v2/repository/index").json()), 30, "version 3 to fail")
            index = {r["version"]: r for r in c.post("/v2/repository/index").json()}
            assert index["2"]["state"] == "READY"
            assert "onnxruntime could not load" in index["3"]["reason"]
            assert c.get("/v2/models/scale/versions/3/ready").status_code == 503
        # more answers after the failed load: still version 2 only
        answered = len(seen)
        wait_for(lambda: len(seen) >= answered + 100, 60, "100 more answers")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert set(seen) == {1.0, 2.0}
    # once version 2 answered, version 1 never did again
    first_two = seen.index(2.0)
    assert 1.0 not in seen[mark:] and seen[first_two:].count(1.0) <= 8  # in-flight requests at the swap
    assert "version 3 failed to load" in server.log()


def test_file_changed_in_place_reloads_and_removed_model_unloads(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    scale_onnx(root / "scale" / "1" / "model.onnx", 1.0)
    iris_onnx(root / "iris" / "1" / "model.onnx")
    server = serve(root, "--poll-interval", "0.2")
    with server.client() as c:
        assert _factor(c) == 1.0
        new = tmp_path / "new.onnx"
        scale_onnx(new, 5.0)
        os.replace(new, root / "scale" / "1" / "model.onnx")
        wait_for(lambda: _factor(c) == 5.0, 30, "the changed file to serve")
        shutil.rmtree(root / "iris")
        wait_for(lambda: c.get("/v2/models/iris/ready").status_code == 404, 30, "iris to unload")
        assert _factor(c) == 5.0


def test_a_manifest_reloads_when_a_file_it_uses_changes(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    scale_onnx(root / "scale" / "1" / "steps" / "x.onnx", 2.0)
    (root / "scale" / "1" / "flow.yaml").write_text("flow:\n  - model: steps/x.onnx\n")
    server = serve(root, "--poll-interval", "0.2")
    with server.client() as c:
        assert _factor(c) == 2.0
        new = tmp_path / "new.onnx"
        scale_onnx(new, 7.0)
        os.replace(new, root / "scale" / "1" / "steps" / "x.onnx")
        wait_for(lambda: _factor(c) == 7.0, 30, "the manifest to serve its changed step")


def test_broken_model_at_start_does_not_stop_the_others(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"\x00garbage")
    server = serve(root)
    with server.client() as c:
        assert c.get("/v2/health/ready").status_code == 200
        r = c.post("/models/iris/eval", json={"input": [1, 2, 3, 4]})
        assert r.status_code == 200
        bad = c.post("/models/broken/eval", json={"x": [1]})
        assert bad.status_code == 503 and "onnxruntime could not load" in bad.json()["error"]
        assert c.get("/v2/models/broken/ready").status_code == 503
        index = {r["name"]: r for r in c.post("/v2/repository/index").json()}
        assert index["broken"]["state"] == "UNAVAILABLE"
        # an explicit load retries and reports the failure
        assert c.post("/v2/repository/models/broken/load").status_code >= 400
        metrics = c.get("/metrics").text
        assert 'mlport_model_loaded{model="broken",version="1"} 0.0' in metrics
        assert 'mlport_model_loaded{model="iris",version="1"} 1.0' in metrics
    strict = serve(root, "--strict-readiness", wait_ready=False)
    index_row(strict, "broken")  # the first load has settled
    assert index_row(strict, "iris")["state"] == "READY"
    assert httpx.get(strict.url + "/v2/health/ready").status_code == 503


@pytest.mark.parametrize(
    ("policy", "served"),
    [("", ["3"]), ("version_policy: {latest: 2}\n", ["3", "2"]), ("version_policy: {all: true}\n", ["3", "2", "1"]),
     ("version_policy: {specific: [1, 3]}\n", ["3", "1"])],
)
def test_version_policies(serve, tmp_path: Path, policy: str, served: list[str]) -> None:
    root = tmp_path / "models"
    for v in (1, 2, 3):
        scale_onnx(root / "scale" / str(v) / "model.onnx", float(v))
    (root / "scale" / "model.yaml").write_text(policy)
    server = serve(root)
    with server.client() as c:
        assert c.get("/v2/models/scale").json()["versions"] == served
        assert _factor(c) == 3.0  # the highest served version answers by default
        for v in ("1", "2", "3"):
            r = c.post(f"/models/scale/versions/{v}/eval", json=BODY)
            if v in served:
                assert r.status_code == 200 and r.json()["y"][0][0] == float(v)
            else:
                assert r.status_code in (404, 503)
        tfv = c.post(f"/v2/models/scale/versions/{served[-1]}/infer", json={"inputs": [
            {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]})
        assert tfv.json()["model_version"] == served[-1]
        np.testing.assert_allclose(tfv.json()["outputs"][0]["data"], [float(served[-1])] * 3)
