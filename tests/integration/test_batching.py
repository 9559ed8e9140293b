"""Adaptive batching against a real server: concurrent clients of every protocol get their own answers,
a bad request fails alone, and a version swap under batched load loses no request."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from tests.builders import iris_onnx, ort_run, scale_onnx
from tests.unit.test_batching import lookup_onnx
from tests.waiting import wait_for

BATCHING = "batching: {max_batch_size: 32, max_delay_ms: 5}\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    (root / "iris" / "model.yaml").write_text(BATCHING)
    scale_onnx(root / "free" / "1" / "model.onnx", 3.0, shape=(None, None))
    (root / "free" / "model.yaml").write_text(BATCHING)
    lookup_onnx(root / "lookup" / "1" / "model.onnx")
    (root / "lookup" / "model.yaml").write_text(BATCHING)
    return root


def _rows(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (rng.random((1 + i % 3, 4)) * [3, 2, 5, 2] + [4, 2, 1, 0]).astype(np.float32)


def test_concurrent_clients_get_their_own_answers(serve, repo: Path) -> None:
    server = serve(repo, "--inference-threads", "2")
    model = repo / "iris" / "1" / "model.onnx"
    problems: list[str] = []

    def oip(i: int) -> None:
        x = _rows(i)
        want = ort_run(model, {"input": x})
        body = {"id": f"r{i}", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                            "data": x.ravel().tolist()}]}
        if i % 2:
            body["outputs"] = [{"name": "label"}]
        r = httpx.post(server.url + "/v2/models/iris/infer", json=body, timeout=30)
        doc = r.json()
        outs = {o["name"]: o for o in doc.get("outputs", [])}
        if r.status_code != 200 or doc["id"] != f"r{i}" or outs["label"]["data"] != want["label"].tolist():
            problems.append(f"oip {i}: {r.status_code} {r.text[:200]}")
        elif (i % 2 == 1) != ("probabilities" not in outs):
            problems.append(f"oip {i}: outputs {sorted(outs)}")
        elif i % 2 == 0 and not np.allclose(outs["probabilities"]["data"], want["probabilities"].ravel(), rtol=1e-5):
            problems.append(f"oip {i}: probabilities differ")

    def single(i: int) -> None:
        x = _rows(i)[0]
        want = ort_run(model, {"input": x[None, :]})
        r = httpx.post(server.url + "/models/iris/eval", json={"input": x.tolist()}, timeout=30)
        if r.status_code != 200 or r.json()["label"] != int(want["label"][0]):
            problems.append(f"eval {i}: {r.status_code} {r.text[:200]}")

    def free(i: int) -> None:
        x = np.full((1 + i % 2, 2 + i % 3), float(i), dtype=np.float32)
        r = httpx.post(server.url + "/models/free/eval", json={"x": x.tolist()}, timeout=30)
        if r.status_code != 200 or r.json()["y"] != (x * 3).tolist():
            problems.append(f"free {i}: {r.status_code} {r.text[:200]}")

    def grpc_call(i: int) -> None:
        x = _rows(i)
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            inp = tgrpc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            got = client.infer("iris", [inp]).as_numpy("label")
        finally:
            client.close()
        if got.tolist() != ort_run(model, {"input": x})["label"].tolist():
            problems.append(f"grpc {i}: {got}")

    calls = [f for i in range(40) for f in ((oip, i), (single, i), (free, i))] + [(grpc_call, i) for i in range(12)]
    with ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda c: c[0](c[1]), calls))
    assert problems == []
    metrics = httpx.get(server.url + "/metrics").text
    assert 'mlport_requests_total{model="iris",protocol="v2",status="ok",version="1"} 40.0' in metrics
    assert 'mlport_requests_total{model="iris",protocol="grpc",status="ok",version="1"} 12.0' in metrics


def test_a_bad_request_fails_alone(serve, repo: Path) -> None:
    server = serve(repo)
    results: dict[int, httpx.Response] = {}

    def call(i: int) -> None:
        x = [1, 7] if i == 9 else [i % 3, (i + 2) % 3]
        results[i] = httpx.post(server.url + "/v2/models/lookup/infer", timeout=30, json={
            "inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": x}]})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(call, range(32)))
    bad = results.pop(9)
    assert bad.status_code == 400 and "failed on this input" in bad.json()["error"]
    assert "Traceback" not in bad.text
    for i, r in results.items():
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [(i % 3 + 1) * 10.0, ((i + 2) % 3 + 1) * 10.0]


@pytest.mark.slow
def test_version_swap_under_batched_load_loses_no_request(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    scale_onnx(root / "scale" / "1" / "model.onnx", 1.0)
    (root / "scale" / "model.yaml").write_text(BATCHING)
    server = serve(root, "--poll-interval", "0.2")
    stop = threading.Event()
    seen: list[float] = []
    failures: list[str] = []

    def hammer() -> None:
        with server.client() as c:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                r = c.post("/models/scale/eval", json={"x": [[1.0, 2.0, 3.0]]})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    seen.append(r.json()["y"][0][0])

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(seen) >= 100, 30, "100 answers")
        stage = tmp_path / "stage"
        scale_onnx(stage / "model.onnx", 2.0)
        os.rename(stage, root / "scale" / "2")
        wait_for(lambda: seen and seen[-1] == 2.0, 60, "answers of version 2")
        mark = len(seen)
        # enough answers after the swap to show version 1 is gone (16 may still have been in flight)
        wait_for(lambda: len(seen) >= mark + 200, 60, "200 more answers")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert set(seen) == {1.0, 2.0}
    assert 1.0 not in seen[mark + 16:]
