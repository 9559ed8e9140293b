"""Hub batch jobs end to end against a real hub: submit, progress, cancel, logs, and a hub restart mid-job."""

from __future__ import annotations

import os
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


def _submit(admin: httpx.Client, inp: Path, out: Path, **extra: Any) -> str:
    r = admin.post("/api/v1/jobs", json={"model": "iris", "input": str(inp), "output": str(out),
                                         "options": {"batch_size": 500, "keep": ["id"], "workers": 1}, **extra})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "batch-score" and r.json()["spec"]["version"] == 1
    return str(r.json()["id"])


@pytest.mark.slow
def test_score_jobs_submit_progress_cancel_logs_and_restart(tmp_path: Path) -> None:
    # enough rows that progress shows before the end even on a quiet machine (about 4 s of scoring)
    n = 1_000_000
    inp = write_input(iris_table(n), tmp_path / "rows.csv")
    # an input that never delivers a row (a named pipe no one writes to): a job reading it runs until stopped
    never = tmp_path / "never.csv"
    os.mkfifo(never)
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
            done_id = _submit(admin, inp, tmp_path / "scored.parquet")
            dropped = _submit(admin, never, tmp_path / "cancelled.parquet")
            wait_for(lambda: "scored" in _job(admin, done_id)["message"], timeout=240, what="progress")
            wait_for(lambda: _job(admin, dropped)["state"] == "running", timeout=120, what="the second job running")
            assert admin.post(f"/api/v1/jobs/{dropped}/cancel").status_code == 200
            assert _job(admin, dropped)["state"] == "cancelled"
            assert admin.post(f"/api/v1/jobs/{dropped}/cancel").status_code == 409
            done = wait_for(lambda: _job(admin, done_id)["state"] in ("succeeded", "failed") and _job(admin, done_id),
                            timeout=400, what="the job to end")
            assert done["state"] == "succeeded", done
            result = done["result"]
            assert (result["rows_read"], result["rows_scored"], result["rows_failed"]) == (n, n, 0)
            assert not (tmp_path / "cancelled.parquet").exists()
            ids = pq.read_table(tmp_path / "scored.parquet").column("id").to_numpy().astype(np.int64)
            np.testing.assert_array_equal(ids, np.arange(n))
            cli = subprocess.run([sys.executable, "-m", "mlport.cli.main", "jobs", "logs", done_id, "--hub", hub.url,
                                  "--token", token], capture_output=True, text=True, timeout=120)
            assert cli.returncode == 0 and f'"rows_scored": {n}' in cli.stdout, cli.stderr
            cut = _submit(admin, never, tmp_path / "cut.parquet")
            wait_for(lambda: _job(admin, cut)["state"] == "running", timeout=120, what="the third job running")
        assert hub.stop() == 0  # mid-job: the job is marked failed, never left "running"
    finally:
        hub.stop()
    hub = start_hub(tmp_path / "hub")
    try:
        token = hub.login()
        with hub.client(token) as admin:
            job = _job(admin, cut)
            assert job["state"] == "failed" and "hub stopped" in job["message"], job
        cli = subprocess.run([sys.executable, "-m", "mlport.cli.main", "jobs", "get", done_id, "--hub", hub.url,
                              "--token", token], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0 and "succeeded" in cli.stdout and "batch-score" in cli.stdout, cli.stderr
    finally:
        hub.stop()
