"""Hub batch jobs end to end against a real hub: submit, progress, cancel, logs, and a hub restart mid-job."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.hubutil import start_hub, wait_for
from tests.scoreutil import iris_model, iris_table, write_input


def _upload_iris(admin: httpx.Client, tmp_path: Path) -> None:
    model = iris_model(tmp_path / "models")
    archive = tmp_path / "iris.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model, arcname="iris")
    assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
    r = admin.post("/api/v1/models/iris/versions", params={"filename": archive.name}, content=archive.read_bytes(),
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text


def _job(admin: httpx.Client, job_id: str) -> dict[str, Any]:
    r = admin.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.slow
def test_jobs_submit_progress_cancel_and_restart(tmp_path: Path) -> None:
    n = 200_000
    inp = write_input(iris_table(n), tmp_path / "rows.csv")
    hub = start_hub(tmp_path / "hub")
    try:
        token = hub.login()
        with hub.client(token) as admin:
            _upload_iris(admin, tmp_path)
            bad = admin.post("/api/v1/jobs", json={"model": "iris", "input": str(inp), "output": "x.csv",
                                                   "options": {"bogus": 1}})
            assert bad.status_code == 400 and "bogus" in bad.text
            assert admin.post("/api/v1/jobs", json={"model": "iris", "version": 7, "input": "a.csv",
                                                    "output": "b.csv"}).status_code == 404
            opts = {"batch_size": 500, "keep": ["id"], "workers": 1}
            r = admin.post("/api/v1/jobs", json={"model": "iris", "input": str(inp),
                                                 "output": str(tmp_path / "scored.parquet"), "options": opts})
            assert r.status_code == 201, r.text
            kept = r.json()["id"]
            r = admin.post("/api/v1/jobs", json={"model": "iris", "input": str(inp),
                                                 "output": str(tmp_path / "cancelled.parquet"), "options": opts})
            dropped = r.json()["id"]
            wait_for(lambda: _job(admin, kept)["progress"]["rows_scored"] > 0, timeout=240, what="progress")
            wait_for(lambda: _job(admin, dropped)["state"] == "running", timeout=120, what="the second job running")
            cancelled = admin.post(f"/api/v1/jobs/{dropped}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            wait_for(lambda: _job(admin, dropped)["state"] == "cancelled", timeout=60, what="the cancel")
            assert admin.post(f"/api/v1/jobs/{dropped}/cancel").status_code == 409
            assert not (tmp_path / "cancelled.parquet").exists()
            assert _job(admin, kept)["state"] == "running"
        assert hub.stop() == 0  # mid-job: the job stays "running" and the next hub resumes it
    finally:
        hub.stop()
    hub = start_hub(tmp_path / "hub")
    try:
        token = hub.login()
        with hub.client(token) as admin:
            done = wait_for(lambda: _job(admin, kept)["state"] in ("succeeded", "failed") and _job(admin, kept),
                            timeout=400, what="the resumed job")
            assert done["state"] == "succeeded", done
            assert done["progress"] == {"rows_scored": n, "rows_failed": 0, "rows_total": n}
            log = admin.get(f"/api/v1/jobs/{kept}/logs").json()["log"]
            assert "resumed after" in log
        ids = pq.read_table(tmp_path / "scored.parquet").column("id").to_numpy().astype(np.int64)
        np.testing.assert_array_equal(ids, np.arange(n))
        cli = subprocess.run([sys.executable, "-m", "mlport.cli.main", "jobs", "status", kept, "--hub", hub.url,
                              "--token", token], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0 and "succeeded" in cli.stdout and f"{n}/{n} rows" in cli.stdout, cli.stderr
        cli = subprocess.run([sys.executable, "-m", "mlport.cli.main", "jobs", "logs", kept, "--hub", hub.url,
                              "--token", token], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0 and f"read {n} rows" in cli.stdout, cli.stderr
    finally:
        hub.stop()
