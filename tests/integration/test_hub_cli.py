"""The hub CLI as a CI/CD script uses it: exit codes and ``--output json`` against a real hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.builders import iris_onnx
from tests.conftest import free_port
from tests.hubutil import ADMIN_PASSWORD, HubProc, start_hub, wait_for

pytestmark = pytest.mark.slow


def mlport(tmp_path: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), **(env or {})}
    full_env.pop("MLPORT_HUB_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", *args], input=stdin, capture_output=True,
                          text=True, env=full_env, timeout=300)


def ok_json(tmp_path: Path, *args: str) -> Any:
    r = mlport(tmp_path, *args, "--output", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cli_drives_the_hub(hub: HubProc, tmp_path: Path) -> None:
    # not logged in / hub unreachable: exit 3
    r = mlport(tmp_path, "models", "list", "--hub", hub.url)
    assert r.returncode == 3 and "not logged in" in r.stderr
    r = mlport(tmp_path, "login", "--hub", hub.url, "--password-stdin", stdin="wrong-password-123\n")
    assert r.returncode == 3, r.stderr
    r = mlport(tmp_path, "login", "--hub", f"http://127.0.0.1:{free_port()}", "--password-stdin", stdin="x\n")
    assert r.returncode == 3 and "cannot reach" in r.stderr

    r = mlport(tmp_path, "login", "--hub", hub.url, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    config = tmp_path / "config" / "mlport" / "hub.json"
    assert config.stat().st_mode & 0o077 == 0

    assert ok_json(tmp_path, "models", "create", "iris", "--description", "flowers")["name"] == "iris"
    r = mlport(tmp_path, "models", "create", "iris")
    assert r.returncode == 1 and "409" in r.stderr
    v1 = ok_json(tmp_path, "versions", "upload", "iris", str(iris_onnx(tmp_path / "a" / "iris.onnx")),
                 "--tags", "baseline,lr")
    assert v1["version"] == 1 and v1["format"] == "onnx" and v1["tags"] == ["baseline", "lr"]
    folder = tmp_path / "folder"
    iris_onnx(folder / "model.onnx", c=0.1)
    (folder / "model.yaml").write_text("batching: {max_batch_size: 8, max_delay_ms: 1}\n")
    v2 = ok_json(tmp_path, "versions", "upload", "iris", str(folder))
    assert v2["version"] == 2 and v2["kind"] == "folder" and v2["format"] == "onnx"
    assert [v["version"] for v in ok_json(tmp_path, "versions", "list", "iris")["versions"]] == [1, 2]

    d = ok_json(tmp_path, "deploy", "iris-prod", "--model", "iris", "--version", "1")
    assert d["target"]["primary"] == 1
    r = mlport(tmp_path, "promote", "iris-prod")
    assert r.returncode == 1 and "no candidate" in r.stderr
    d = ok_json(tmp_path, "deploy", "iris-prod", "--canary", "25", "--version", "2")
    assert d["target"]["strategy"] == "canary" and d["target"]["percent"] == 25
    assert ok_json(tmp_path, "promote", "iris-prod")["target"]["primary"] == 2
    assert ok_json(tmp_path, "rollback", "iris-prod")["target"]["primary"] == 1

    def ready() -> bool:
        status = ok_json(tmp_path, "status", "iris-prod", "--history")
        return any(v["version"] == 1 and v["ready"] for v in status["replicas"]["versions"])

    wait_for(ready, what="v1 ready")
    status = ok_json(tmp_path, "status", "iris-prod", "--history")
    assert [e["action"].split()[0] for e in status["history"]][:4] == ["rollback", "promote", "canary", "create"]
    text = mlport(tmp_path, "status")
    assert text.returncode == 0 and "iris-prod: iris v1" in text.stdout

    r = mlport(tmp_path, "models", "delete", "iris", "--yes")
    assert r.returncode == 1 and "deployed" in r.stderr
    assert mlport(tmp_path, "undeploy", "iris-prod").returncode == 0
    assert mlport(tmp_path, "models", "delete", "iris", "--yes").returncode == 0


def test_hub_serves_a_runtime_beside_it_and_stops_it(tmp_path: Path) -> None:
    import httpx

    port = free_port()
    model = iris_onnx(tmp_path / "iris.onnx")
    hub = start_hub(tmp_path / "hub", "--serve", str(model), "--serve-http-port", str(port), "--serve-grpc-port", "0")
    try:
        wait_for(lambda: _ready(f"http://127.0.0.1:{port}"), what="the runtime beside the hub")
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/iris/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]})
        assert r.status_code == 200, r.text
    finally:
        assert hub.stop() == 0
    wait_for(lambda: not _ready(f"http://127.0.0.1:{port}"), timeout=60, what="the runtime stopped with the hub")


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_hub_init_prints_a_one_time_admin_password(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPORT_HUB_")}
    r = subprocess.run([sys.executable, "-m", "mlport.cli.main", "hub", "init", "--data-dir", str(data)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    password = r.stdout.strip().splitlines()[-1]
    assert len(password) >= 20 and password not in (data / "hub.db").read_bytes().decode("latin-1")
    again = subprocess.run([sys.executable, "-m", "mlport.cli.main", "hub", "init", "--data-dir", str(data)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "exists already" in again.stdout
    hub = start_hub(data)  # the env's admin password does not replace the existing admin's
    try:
        assert hub.login(password=password)
        import httpx

        r = httpx.post(hub.url + "/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 401
    finally:
        hub.stop()
