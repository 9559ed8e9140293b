"""Unload/load cycles through the repository API leave nothing behind in the server: no open file descriptor,
thread or metric series more per cycle (bench/soak.py churn measures the memory over 10,000 cycles)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.builders import scale_onnx
from tests.conftest import Server

#: Loads the server may still be starting threads for (its load pool starts its 3 workers as work comes).
POOL_HEADROOM = 2


def _cycles(http: httpx.Client, n: int) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    for _ in range(n):
        assert http.post("/v2/repository/models/s/unload").status_code == 200
        assert http.post("/v2/repository/models/s/load").status_code == 200
        answer = http.post("/v2/models/s/infer", json=body)
        assert answer.status_code == 200, answer.text


def _held(server: Server, http: httpx.Client) -> tuple[int, int, list[str]]:
    """Open fds, threads and the names of the metric series of the server."""
    pid = server.proc.pid
    threads = len(os.listdir(f"/proc/{pid}/task"))
    series = [line.split(" ")[0] for line in http.get("/metrics").text.splitlines() if not line.startswith("#")]
    return len(os.listdir(f"/proc/{pid}/fd")), threads, sorted(series)


def test_unload_load_cycles_leave_no_fds_threads_or_series(serve: Callable[..., Server], tmp_path: Path) -> None:
    root = tmp_path / "m"
    scale_onnx(root / "s" / "1" / "model.onnx", 2.0)
    (root / "s" / "model.yaml").write_text("batching: {max_batch_size: 8, max_delay_ms: 1}\n")
    server = serve(root, "--grpc-port", "0", "--inference-threads", "2")
    with server.client() as http:
        _cycles(http, 50)
        fds, threads, series = _held(server, http)
        _cycles(http, 150)
        fds_after, threads_after, series_after = _held(server, http)
    assert fds_after == fds
    assert threads_after <= threads + POOL_HEADROOM
    assert series_after == series
