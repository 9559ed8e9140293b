"""A deployment's drift through a real ``mlport hub``: the profile uploaded with the version (``mlport versions
upload --profile``), the figures of each replica through the hub, and ``mlport drift``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.hubutil import cli, ready_versions, start_hub, wait_for
from tests.integration.drift_util import profiled_model, send

pytestmark = pytest.mark.slow


def test_deployment_drift_through_the_hub(tmp_path: Path) -> None:
    built = profiled_model(tmp_path / "built" / "m", "drift: {window_rows: 300, interval_s: 0.1}\n")
    flat = tmp_path / "upload"
    flat.mkdir()
    shutil.copy(built / "1" / "model.onnx", flat / "m.onnx")
    shutil.copy(built / "model.yaml", flat / "m.model.yaml")
    hub = start_hub(tmp_path / "hub")
    try:
        token = hub.login()
        admin = hub.client(token)
        assert admin.post("/api/v1/models", json={"name": "m"}).status_code == 201
        # the profile goes with the version: the CLI sends a folder of m.onnx, model.yaml and profile.json
        bad = cli(tmp_path / "cfg", "versions", "upload", "m", str(flat / "m.onnx"), "--profile",
                  str(flat / "m.model.yaml"), "--hub", hub.url, "--token", token)
        assert bad.returncode == 2 and "cannot read the profile m.model.yaml" in bad.stderr
        done = cli(tmp_path / "cfg", "versions", "upload", "m", str(flat / "m.onnx"), "--profile",
                   str(built / "profile.json"), "--hub", hub.url, "--token", token)
        assert done.returncode == 0, done.stderr
        assert admin.get("/api/v1/models/m/versions").json()["versions"][0]["version"] == 1
        r = admin.post("/api/v1/deployments", json={"name": "m-d", "model": "m", "version": 1})
        assert r.status_code == 201, r.text
        wait_for(lambda: ready_versions(admin, "m-d").get(1), what="version 1 ready")
        assert admin.get("/api/v1/deployments/m-d/drift").json()["status"] == "unwatched"

        rows = np.random.default_rng(7).normal(size=(300, 3))
        rows[:, 2] += 1.5
        send(admin, "/deployments/m-d/v2/models/m-d/infer", rows, per_request=30)

        def seen() -> dict[str, object] | None:
            data = admin.get("/api/v1/deployments/m-d/drift").json()
            versions = data["replicas"][0].get("versions") or [{}]
            return data if versions[0].get("rows_seen") == 300 else None

        data = wait_for(seen, what="the replica's figures over 300 rows")
        assert data["status"] == "drift" and data["model"] == "m"
        replica = data["replicas"][0]
        assert (replica["version"], replica["replica"], replica["status"]) == (1, 0, "drift")
        status = {f["name"]: f["status"] for f in replica["versions"][0]["features"]}
        assert status == {"a": "ok", "b": "ok", "c": "drift", "y[0]": "ok", "y[1]": "ok", "y[2]": "drift"}
        assert httpx.get(hub.url + "/deployments/m-d/drift",
                         headers={"authorization": f"Bearer {token}"}).json()["status"] == "drift"
        assert httpx.get(hub.url + "/api/v1/deployments/m-d/drift").status_code == 401
        assert admin.get("/api/v1/deployments/nope/drift").status_code == 404

        done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "drift", "m-d", "--hub", hub.url,
                               "--token", token], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("m-d: drift") and "version 1 replica 0: drift over 300 rows" in done.stdout
    finally:
        hub.stop()
