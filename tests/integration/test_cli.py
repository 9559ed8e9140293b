"""The command line: serve settings from flags, environment and YAML; describe; formats; clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from tests.builders import iris_onnx, slow_onnx
from tests.conftest import free_port


def _mlport(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "mlport.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_describe_prints_signature(tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    out = _mlport("describe", str(model))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["iris"]["inputs"] == [{"name": "input", "type": "float32", "shape": [-1, 4]}]
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    bad = _mlport("describe", str(tmp_path / "bad.onnx"))
    assert bad.returncode == 1 and "could not load" in json.loads(bad.stdout)["bad"]["error"]
    missing = _mlport("describe", str(tmp_path / "missing.onnx"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_formats_lists_onnx() -> None:
    out = _mlport("formats")
    assert out.returncode == 0 and "onnx" in out.stdout and "available" in out.stdout


def test_settings_from_env_and_yaml(serve, tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    cfg = tmp_path / "mlport.yaml"
    cfg.write_text("name: flowers\nmax_body_bytes: 2048\n")
    server = serve(model, "--config", str(cfg), env={"MLPORT_MAX_BODY_BYTES": "100000"})
    with server.client() as c:
        assert c.get("/models/flowers/describe").status_code == 200  # from the YAML file
        body = {"input": [[1.0, 2.0, 3.0, 4.0]] * 100}  # ~2.5 KB: over the file's limit, under the env's
        assert c.post("/models/flowers/eval", json=body).status_code == 200
    bad = _mlport("serve", str(model), "--http-port", "99999")
    assert bad.returncode == 2 and "http_port" in bad.stderr


def test_env_port(tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    port = free_port()
    import os

    proc = subprocess.Popen([sys.executable, "-m", "mlport.cli.main", "serve", str(model)],
                            env={**os.environ, "MLPORT_HTTP_PORT": str(port), "MLPORT_GRPC_PORT": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not come up on the port from MLPORT_HTTP_PORT")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_ctrl_c_drains_inflight_requests(serve, tmp_path: Path) -> None:
    model = slow_onnx(tmp_path / "slow.onnx")
    server = serve(model)
    x = np.ones((800, 800), dtype=np.float32)
    results: list[int] = []

    def call() -> None:
        r = httpx.post(server.url + "/v2/models/slow/infer", timeout=60, json={"inputs": [
            {"name": "x", "shape": [800, 800], "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
        results.append(r.status_code)

    t = threading.Thread(target=call)
    t.start()
    server.wait_inflight("slow")
    code = server.stop(signal.SIGINT)
    t.join(60)
    assert results == [200]
    assert code == 0
