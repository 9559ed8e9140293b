"""``mlport score hub://MODEL/VERSION``: the version fetched through a real hub's API and sha256-verified."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mlport.cli.hubmodel import fetch_hub_model
from mlport.errors import MlportError
from tests.hubutil import start_hub
from tests.scoreutil import expected_iris, iris_model, iris_rows, iris_table, write_input


def test_hub_model_fetched_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hub://MODEL/VERSION``: a folder version (with its model.yaml) fetched through the hub's API."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = iris_model(tmp_path / "models")
    archive = tmp_path / "iris.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model, arcname="iris")
    hub = start_hub(tmp_path / "hub")
    try:
        token = hub.login()
        with hub.client(token) as admin:
            assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
            r = admin.post("/api/v1/models/iris/versions", params={"filename": archive.name},
                           content=archive.read_bytes(), headers={"content-type": "application/octet-stream"})
            assert r.status_code == 201, r.text
        inp = write_input(iris_table(40), tmp_path / "in.parquet")
        proc = subprocess.run([sys.executable, "-m", "mlport.cli.main", "score", "hub://iris/1", str(inp), "-o",
                               str(tmp_path / "out.parquet"), "--hub", hub.url, "--token", token, "--workers", "1"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert proc.returncode == 0, proc.stderr
        labels, _ = expected_iris(model, iris_rows(40))
        assert pq.read_table(tmp_path / "out.parquet").column("label").to_pylist() == labels
        local = fetch_hub_model("hub://iris/1", hub.url, token)
        assert (local / "model.yaml").is_file()
        (local / "model.yaml").write_text("tampered: true\n")  # a changed cache is fetched again
        assert fetch_hub_model("hub://iris/1", hub.url, token) == local
        assert "tampered" not in (local / "model.yaml").read_text()
        with pytest.raises(MlportError, match="404"):
            fetch_hub_model("hub://iris/9", hub.url, token)
        with pytest.raises(MlportError, match="hub://MODEL/VERSION"):
            fetch_hub_model("hub://iris/latest", hub.url, token)
    finally:
        hub.stop()
