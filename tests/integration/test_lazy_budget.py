"""Models loaded on demand (``--lazy``) and unloaded under a memory budget, against real servers.

The models are trusted Python models that write one line to a file each time they load (so loads are
counted from outside the server) and carry a large sparse data file: a model's memory is the larger of
the process's growth at its load and the size of its files, so the 40 MiB file sets it.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.builders import counted_python_model

MIB = 1024 * 1024
DATA_BYTES = 40 * MIB


def _model(root: Path, name: str, loads: Path, factor: float = 1.0, load_delay: float = 0.0,
           yaml: str = "") -> None:
    folder = counted_python_model(root / name / "1", loads, name, factor, load_delay)
    with (folder / "data.bin").open("wb") as f:  # sparse: no disk space, but its size counts
        f.truncate(DATA_BYTES)
    (root / name / "model.yaml").write_text("trusted: true\n" + yaml)


def _infer(client: httpx.Client, name: str, x: float = 0.0) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [x]}]}
    return client.post(f"/v2/models/{name}/infer", json=body, timeout=60)


def _loads(loads: Path) -> list[str]:
    return loads.read_text().split() if loads.exists() else []


def _states(client: httpx.Client) -> dict[str, dict[str, object]]:
    rows = client.post("/v2/repository/index", json={}).json()
    return {r["name"]: r for r in rows}


def _metric(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def test_lazy_model_loads_once_for_fifty_concurrent_first_requests(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "slowload", loads, load_delay=1.0)
    _model(root, "other", loads)
    server = serve(root, "--lazy", "--grpc-port", "0")
    with server.client() as c:
        assert _loads(loads) == []  # nothing loads at start
        states = _states(c)
        assert states["slowload"]["state"] == "NOT_LOADED"
        assert "loads on its first request" in str(states["slowload"]["reason"])
        # metadata of a model not loaded says so (503 with Retry-After) and loads nothing
        meta = c.get("/v2/models/slowload")
        assert meta.status_code == 503 and "not loaded now" in meta.json()["error"]
        assert meta.headers["retry-after"]
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: _infer(c, "slowload", 0.0), range(50)))
        assert [a.status_code for a in answers] == [200] * 50, answers[0].text
        assert all(a.json()["outputs"][0]["data"] == [1.0] for a in answers)
        assert _loads(loads) == ["slowload"]
        states = _states(c)
        assert states["slowload"]["state"] == "READY"
        assert states["other"]["state"] == "NOT_LOADED"
        metrics = c.get("/metrics").text
        assert _metric(metrics, "mlport_model_loads_total", '{model="slowload"}') == 1
        assert _metric(metrics, "mlport_cache_misses_total") == 50
        assert _metric(metrics, "mlport_cold_load_seconds_count") == 1
        assert _metric(metrics, "mlport_cache_hits_total") == 0
        assert c.get("/v2/models/slowload").status_code == 200  # metadata is not a use of the model
        assert _infer(c, "slowload").status_code == 200
        assert _metric(c.get("/metrics").text, "mlport_cache_hits_total") == 1


def test_a_request_waits_up_to_the_load_timeout_then_gets_503_with_retry_after(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "sluggish", loads, load_delay=4.0)
    server = serve(root, "--lazy", "--load-timeout", "0.5", "--grpc-port", "0")
    with server.client() as c:
        first = _infer(c, "sluggish")
        assert first.status_code == 503, first.text
        assert "still loading after 0.5 s" in first.json()["error"]
        assert int(first.headers["retry-after"]) >= 1
        deadline = time.monotonic() + 60
        while _states(c)["sluggish"]["state"] != "READY":  # the load went on
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _infer(c, "sluggish").status_code == 200
        assert _loads(loads) == ["sluggish"]


def test_budget_evicts_the_least_recently_used_and_evicted_models_reload(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    for name in ("a", "b", "c"):
        _model(root, name, loads)
    # room for two models of 40 MiB, not three
    server = serve(root, "--lazy", "--memory-budget", "100MiB", "--grpc-port", "0")
    with server.client() as c:
        for name in ("a", "b", "a", "c"):  # b is the least recently used when c loads
            assert _infer(c, name).status_code == 200
        states = _states(c)
        assert states["b"]["state"] == "EVICTED", states
        assert "evicted" in str(states["b"]["reason"])
        assert states["a"]["state"] == states["c"]["state"] == "READY"
        assert int(states["a"]["memory_bytes"]) >= DATA_BYTES  # type: ignore[call-overload]
        models = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert models["b"]["versions"][0]["state"] == "EVICTED"
        assert models["a"]["versions"][0]["memory_bytes"] == states["a"]["memory_bytes"]
        # an evicted model is described from what its last load read, without loading it again
        described = c.get("/models/b/describe")
        assert described.status_code == 200, described.text
        assert [t["name"] for t in described.json()["inputs"]] == ["x"]
        assert c.get("/v2/models/b").json()["outputs"][0]["name"] == "y"
        assert c.get("/v2/models/b/config").status_code == 200
        assert _loads(loads) == ["a", "b", "c"]
        # the evicted model loads again on its next request, evicting the LRU one (a)
        assert _infer(c, "b").status_code == 200
        states = _states(c)
        assert states["a"]["state"] == "EVICTED" and states["b"]["state"] == "READY"
        assert _loads(loads) == ["a", "b", "c", "b"]
        # metrics and the repository index agree
        metrics = c.get("/metrics").text
        ready = [s for s in states.values() if s["state"] == "READY"]
        assert _metric(metrics, "mlport_loaded_models") == len(ready) == 2
        assert _metric(metrics, "mlport_loaded_model_bytes") == sum(int(s["memory_bytes"]) for s in ready)  # type: ignore[call-overload]
        assert _metric(metrics, "mlport_model_evictions_total", '{model="b"}') == 1
        assert _metric(metrics, "mlport_model_evictions_total", '{model="a"}') == 1
        assert _metric(metrics, "mlport_model_loads_total", '{model="b"}') == 2
        assert _metric(metrics, "mlport_model_loaded", '{model="a",version="1"}') == 0
        assert _metric(metrics, "mlport_model_loaded", '{model="b",version="1"}') == 1


def _manifest(root: Path, name: str, loads: Path) -> None:
    """A manifest whose one step is a counted model (with its 40 MiB file) in a folder beside it."""
    folder = root / name / "1"
    _model(folder, "child", loads)
    (folder / "child" / "1" / "model.py").rename(folder / "child" / "model.py")
    (folder / "child" / "1" / "data.bin").rename(folder / "child" / "data.bin")
    (folder / "child" / "1").rmdir()
    (folder / "child" / "model.yaml").unlink()
    (folder / "flow.yaml").write_text("flow:\n  - model: child\n")
    (root / name / "model.yaml").write_text("trusted: true\n")


def test_a_manifest_counts_the_memory_of_the_models_it_uses(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    for name in ("a", "b", "c"):
        _manifest(root, name, loads)
    server = serve(root, "--lazy", "--memory-budget", "100MiB", "--grpc-port", "0")
    with server.client() as c:
        for name in ("a", "b", "a", "c"):  # each needs its step's 40 MiB: b is evicted to make room for c
            assert _infer(c, name).status_code == 200
        states = _states(c)
        assert states["b"]["state"] == "EVICTED", states
        assert states["a"]["state"] == states["c"]["state"] == "READY"
        assert int(states["c"]["memory_bytes"]) >= DATA_BYTES  # type: ignore[call-overload]
        assert _loads(loads) == ["child", "child", "child"]


def test_pinned_and_busy_models_are_never_evicted(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "pinned", loads, yaml="pinned: true\n")
    _model(root, "busy", loads)
    _model(root, "idle", loads)
    _model(root, "late", loads)
    # room for three models, not four
    server = serve(root, "--lazy", "--memory-budget", "140MiB", "--grpc-port", "0")
    with server.client() as c:
        for name in ("pinned", "busy", "idle"):
            assert _infer(c, name).status_code == 200
        slow = threading.Thread(target=lambda: _infer(c, "busy", 5.0))
        slow.start()
        try:
            server.wait_inflight("busy")
            assert _infer(c, "idle").status_code == 200
            # LRU order now: pinned, then busy (its slow request began before idle's), then idle: pinned is
            # pinned and busy has a request in flight, so idle goes
            assert _infer(c, "late").status_code == 200
            states = _states(c)
            assert states["idle"]["state"] == "EVICTED", states
            assert states["pinned"]["state"] == states["busy"]["state"] == "READY"
            # with only late left to evict besides them, idle evicts late; then nothing else can go
            assert _infer(c, "idle").status_code == 200
            assert _states(c)["late"]["state"] == "EVICTED"
        finally:
            slow.join()


def test_a_budget_too_small_for_one_model_gives_a_clear_503(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "big", loads)
    server = serve(root, "--lazy", "--memory-budget", "10MiB", "--grpc-port", "0")
    with server.client() as c:
        answer = _infer(c, "big")
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert "no memory to load model 'big'" in error
        assert "more than the whole memory budget of 10.0 MiB" in error
        assert answer.headers["retry-after"]
        assert _loads(loads) == []
        row = _states(c)["big"]
        assert row["state"] == "NOT_LOADED" and "no memory to load" in str(row["reason"])


def test_each_worker_gets_its_share_of_the_budget(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "big", loads)
    # 60 MiB would hold the 40 MiB model, but two workers hold 30 MiB each
    server = serve(root, "--lazy", "--memory-budget", "60MiB", "--workers", "2", "--grpc-port", "0")
    with server.client() as c:
        for _ in range(4):  # whichever worker answers
            answer = _infer(c, "big")
            assert answer.status_code == 503
            assert "more than the whole memory budget of 30.0 MiB" in answer.json()["error"]
        assert _loads(loads) == []


@pytest.mark.slow
def test_a_scan_of_ten_thousand_folders_loads_nothing_and_blocks_no_request(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "hot", loads)
    source = (root / "hot" / "1" / "model.py").read_text().replace("'hot'", "'cold'")
    for i in range(10_000):
        folder = root / f"m{i:05d}" / "1"
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(source)
        (root / f"m{i:05d}" / "model.yaml").write_text("trusted: true\n")
    server = serve(root, "--lazy", "--max-models", "20000", "--poll-interval", "0.5", "--grpc-port", "0")
    with server.client() as c:
        assert _infer(c, "hot").status_code == 200
        rows = _states(c)
        assert len(rows) == 10_001
        assert sum(1 for r in rows.values() if r["state"] == "NOT_LOADED") == 10_000
        # the rescans every half second walk the 10,000 folders; requests keep being answered meanwhile
        deadline = time.monotonic() + 5
        slowest = 0.0
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert _infer(c, "hot").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        # one scan of these folders takes 10-20 s on a 2-core machine: no request waited for a whole one
        assert slowest < 5, slowest
        assert _loads(loads) == ["hot"]  # nothing else was loaded


def test_a_full_budget_names_the_models_that_hold_it(serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "keeper", loads, yaml="pinned: true\n")
    _model(root, "newcomer", loads)
    server = serve(root, "--lazy", "--memory-budget", "60MiB", "--grpc-port", "0")
    with server.client() as c:
        assert _infer(c, "keeper").status_code == 200
        answer = _infer(c, "newcomer")
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert "no memory to load model 'newcomer'" in error
        assert re.search(r"held by keeper \(\d+\.\d MiB, pinned\)", error), error
        assert _states(c)["keeper"]["state"] == "READY"


@pytest.mark.parametrize("flag", ["--lazy", "--no-lazy"])
def test_lazy_in_model_yaml_wins_over_the_flag(serve, tmp_path: Path, flag: str) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "eager", loads, yaml="lazy: false\n")
    _model(root, "onrequest", loads, yaml="lazy: true\n")
    server = serve(root, flag, "--grpc-port", "0")
    with server.client() as c:
        states = _states(c)
        assert states["eager"]["state"] == "READY"
        assert states["onrequest"]["state"] == "NOT_LOADED"
        tf = c.get("/v1/models/onrequest").json()
        assert tf["model_version_status"][0]["state"] == "START"
    assert _loads(loads) == ["eager"]


def test_lazy_versions_load_through_tf_serving_labels_and_grpc(serve, tmp_path: Path) -> None:
    import numpy as np
    import tritonclient.grpc as tgrpc

    from tests.builders import scale_onnx

    root = tmp_path / "repo"
    for version, factor in ((1, 2.0), (2, 3.0)):
        (root / "scale" / str(version)).mkdir(parents=True)
        scale_onnx(root / "scale" / str(version) / "model.onnx", factor)
    (root / "scale" / "model.yaml").write_text("version_policy: {all: true}\nversion_labels: {stable: 1}\n")
    scale_onnx(root / "viagrpc.onnx", 5.0)
    server = serve(root, "--lazy")
    with server.client() as c:
        assert {r["state"] for r in c.post("/v2/repository/index", json={}).json()} == {"NOT_LOADED"}
        answer = c.post("/v1/models/scale/labels/stable:predict", json={"instances": [[1.0, 1.0, 1.0]]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [[2.0, 2.0, 2.0]]
        index = c.post("/v2/repository/index", json={}).json()
        rows = {r["version"]: r["state"] for r in index if r["name"] == "scale"}
        assert rows == {"1": "READY", "2": "READY"}  # the model loads its served versions together
        assert _states(c)["viagrpc"]["state"] == "NOT_LOADED"
    grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        x = tgrpc.InferInput("x", [1, 3], "FP32")
        x.set_data_from_numpy(np.ones((1, 3), np.float32))
        out = grpc_client.infer("viagrpc", [x]).as_numpy("y")  # its first request
        assert out.tolist() == [[5.0, 5.0, 5.0]]
    finally:
        grpc_client.close()


def test_an_evicted_model_stays_unloaded_when_its_files_change_and_loads_the_new_version(
        serve, tmp_path: Path) -> None:
    root, loads = tmp_path / "repo", tmp_path / "loads.txt"
    _model(root, "a", loads, factor=1.0)
    _model(root, "b", loads)
    server = serve(root, "--lazy", "--memory-budget", "60MiB", "--poll-interval", "0.2", "--grpc-port", "0")
    with server.client() as c:
        assert _infer(c, "a").status_code == 200
        assert _infer(c, "b").status_code == 200  # room for one: a goes
        assert _states(c)["a"]["state"] == "EVICTED"
        v2 = root / "a" / "2"
        v2.mkdir()
        (v2 / "model.py").write_text((root / "a" / "1" / "model.py").read_text().replace("x + 1.0", "x + 10.0"))
        deadline = time.monotonic() + 30
        while not any(r["name"] == "a" and r["version"] == "2" for r in c.post("/v2/repository/index", json={}).json()):
            assert time.monotonic() < deadline, "the scan did not find version 2"
            time.sleep(0.1)
        assert _states(c)["a"]["state"] == "EVICTED"  # the scan loads nothing
        assert _loads(loads) == ["a", "b"]
        answer = _infer(c, "a")
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [10.0]
        assert answer.json()["model_version"] == "2"
        assert _loads(loads) == ["a", "b", "a"]
