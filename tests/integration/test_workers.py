"""``mlport serve --workers N``: worker processes sharing the ports, metrics summed over them, readiness of
the whole group, restart after a crash, and a clean drain on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from tests.builders import iris_onnx, slow_onnx
from tests.conftest import Server, free_port
from tests.waiting import wait_for

X = [[5.1, 3.5, 1.4, 0.2]]
BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": X[0]}]}


def _workers(server: Server) -> list[int]:
    """The worker processes (multiprocessing's resource tracker, also a child, serves nothing)."""
    pid = server.proc.pid
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [c for c in children if "spawn_main" in _cmdline(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _listening(pids: list[int], port: int) -> list[int]:
    """Which of ``pids`` listen on TCP ``port`` (from /proc: the sockets each holds, the kernel's LISTEN table)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    found = []
    for pid in pids:
        held = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                held.add(target[8:-1])
        if held & inodes:
            found.append(pid)
    return found


def _cpu(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    return iris_onnx(tmp_path / "iris.onnx")


def _wait_workers(server: Server, count: int, timeout: float = 60) -> list[int]:
    def found() -> list[int] | None:
        workers = _workers(server)
        return workers if len(workers) == count else None

    workers: list[int] = wait_for(found, timeout, f"{count} workers")
    return workers


def test_workers_share_the_port_and_the_work(serve, iris: Path) -> None:
    server = serve(iris, "--workers", "2")
    workers = _wait_workers(server, 2)
    before = {w: _cpu(w) for w in workers}
    # ready means every worker is: fresh connections, spread over both, never meet a loading worker
    for _ in range(300):
        r = httpx.post(server.url + "/v2/models/iris/infer", json=BODY, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [0]
    busy = [w for w in workers if _cpu(w) - before[w] > 0]
    assert len(busy) == 2, "both workers should have served requests"
    metrics = httpx.get(server.url + "/metrics").text
    # counters and histograms are summed over the workers; gauges carry the worker's pid
    assert 'mlport_requests_total{model="iris",protocol="v2",status="ok",version="1"} 300.0' in metrics
    loaded = re.findall(r'mlport_model_loaded\{model="iris",pid="(\d+)",version="1"\} 1.0', metrics)
    assert sorted(int(p) for p in loaded) == sorted(workers)
    assert 'mlport_request_duration_seconds_count{model="iris",protocol="v2"} 300.0' in metrics
    for w in workers:
        assert _rss_mb(w) < 150, f"worker {w} uses {_rss_mb(w):.0f} MB"


def test_workers_serve_grpc(serve, iris: Path) -> None:
    server = serve(iris, "--workers", "2")
    workers = _wait_workers(server, 2)
    # every worker listens on the HTTP port and on the gRPC port
    assert sorted(_listening(workers, server.port)) == sorted(workers)
    assert len(_listening(workers, server.grpc_port)) == 2
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        assert client.is_server_ready()
        x = tgrpc.InferInput("input", [1, 4], "FP32")
        x.set_data_from_numpy(np.array(X, dtype=np.float32))
        assert client.infer("iris", [x]).as_numpy("label").tolist() == [0]
    finally:
        client.close()


def test_a_crashed_worker_is_replaced(serve, iris: Path) -> None:
    server = serve(iris, "--workers", "2")
    first = _wait_workers(server, 2)
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: len(now := _workers(server)) == 2 and first[0] not in now, 60, "the killed worker's replacement")
    assert server.proc.poll() is None
    wait_for(lambda: httpx.get(server.url + "/v2/health/ready").status_code == 200, 60, "the workers to be ready")
    for _ in range(50):
        assert httpx.post(server.url + "/v2/models/iris/infer", json=BODY, timeout=30).status_code == 200
    assert "starting it again" in server.log()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_every_worker_and_exits_0(serve, tmp_path: Path, sig: int) -> None:
    # slow enough to be seen in flight: the workers copy their in-flight counts to the shared gauge every 0.25 s
    model = slow_onnx(tmp_path / "slow.onnx", repeats=120)
    server = serve(model, "--workers", "2")
    workers = _wait_workers(server, 2)
    x = np.ones((800, 800), dtype=np.float32)
    results: list[int] = []

    def call() -> None:
        r = httpx.post(server.url + "/v2/models/slow/infer", timeout=60, json={"inputs": [
            {"name": "x", "shape": [800, 800], "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
        results.append(r.status_code)

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: re.search(r'mlport_inflight_requests\{model="slow",pid="\d+"\} 1.0',
                               httpx.get(server.url + "/metrics").text), 30, "the request to reach a worker")
    code = server.stop(sig)
    t.join(60)
    assert results == [200]
    assert code == 0
    for w in workers:
        assert not Path(f"/proc/{w}").exists() or "zombie" in Path(f"/proc/{w}/status").read_text()


def test_a_port_in_use_is_refused_clearly(iris: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "mlport.cli.main", "serve", str(iris), "--workers", "2",
                              "--http-port", str(port), "--grpc-port", str(free_port())],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "cannot listen for HTTP" in out.stderr and "Traceback" not in out.stderr
