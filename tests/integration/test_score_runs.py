"""``mlport score`` against the server and across a crash: offline answers equal ``mlport serve``'s, and a run
killed with SIGKILL resumes with no row missing or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from tests.conftest import Server
from tests.scoreutil import IRIS_FIELDS, iris_model, iris_rows, iris_table, probabilities, read_output, write_input


def _score_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", "score", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("out_name", ["out.parquet", "out.csv"])
def test_offline_answers_equal_the_servers(serve: Callable[..., Server], tmp_path: Path, out_name: str) -> None:
    model = iris_model(tmp_path / "models")
    server = serve(model, "--poll-interval", "0", "--grpc-port", "0")
    n = 300
    inp = write_input(iris_table(n, seed=3), tmp_path / "in.csv")
    proc = _score_cli(str(model), str(inp), "-o", str(tmp_path / out_name), "--workers", "2", "--batch-size", "50",
                      "--keep", "id")
    assert proc.returncode == 0, proc.stderr
    offline = read_output(tmp_path / out_name)
    x = iris_rows(n, seed=3)
    body = {f: x[:, i].tolist() for i, f in enumerate(IRIS_FIELDS)}  # by field name, as the eval API takes them
    with server.client() as c:
        r = c.post("/models/iris/eval", json=body)
    assert r.status_code == 200, r.text
    online = r.json()
    assert offline.column("label").to_pylist() == online["label"]
    np.testing.assert_allclose(probabilities(offline), np.asarray(online["probabilities"]), atol=1e-6, rtol=0)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    """The process runs (a zombie waiting to be reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_resume_after_sigkill(tmp_path: Path, workers: str) -> None:
    model = iris_model(tmp_path / "models")
    n = 200_000
    inp = write_input(iris_table(n, seed=5), tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    args = [str(model), str(inp), "-o", str(out), "--batch-size", "500", "--keep", "id", "--workers", workers]
    proc = subprocess.Popen([sys.executable, "-m", "mlport.cli.main", "score", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait(lambda: (parts.is_dir() and len(list(parts.glob("part-*.arrow"))) >= 20) or proc.poll() is not None,
              240, "20 finished chunks")
        assert proc.poll() is None, "the run ended before it could be killed"
        workers_pids = _children(proc.pid)
        assert len(workers_pids) == (0 if workers == "1" else 2)
        os.kill(proc.pid, signal.SIGKILL)  # the run alone, as a crash would: its workers notice and end
        proc.wait(30)
        _wait(lambda: not any(_alive(p) for p in workers_pids), 30, "the workers to end")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    finished = len(list(parts.glob("part-*.arrow")))
    assert 20 <= finished < n // 500
    resumed = _score_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after {finished} finished chunks" in resumed.stderr
    assert f"read {n} rows, scored {n}, failed 0" in resumed.stderr
    ids = read_output(out).column("id").to_numpy().astype(np.int64)  # CSV columns pass through as text
    np.testing.assert_array_equal(ids, np.arange(n))
    fresh = tmp_path / "fresh.parquet"
    assert _score_cli(str(model), str(inp), "-o", str(fresh), "--batch-size", "500", "--keep", "id").returncode == 0
    assert read_output(out).equals(read_output(fresh))
    assert not parts.exists()


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    model = iris_model(tmp_path / "models")
    inp = write_input(iris_table(10), tmp_path / "in.csv")
    parts = tmp_path / "out.csv.parts"
    parts.mkdir()
    (parts / "run.json").write_text('{"batch_size": 3}')
    proc = _score_cli(str(model), str(inp), "-o", str(tmp_path / "out.csv"), "--resume")
    assert proc.returncode == 2 and "cannot resume" in proc.stderr and "batch_size" in proc.stderr, proc.stderr
    # without --resume an old checkpoint is replaced
    proc = _score_cli(str(model), str(inp), "-o", str(tmp_path / "out.csv"), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert pacsv.read_csv(tmp_path / "out.csv").num_rows == 10
