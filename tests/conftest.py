"""Shared fixtures: a real ``mlport serve`` process on 127.0.0.1, started and stopped by the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    #: Port of the gRPC service (0 when the test turned it off with ``--grpc-port 0``).
    grpc_port: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]

    def wait_inflight(self, model: str, timeout: float = 30) -> None:
        """Wait until the server reports one request of ``model`` in flight."""
        want = f'mlport_inflight_requests{{model="{model}"}} 1.0'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want in httpx.get(self.url + "/metrics").text:
                return
            time.sleep(0.01)
        raise AssertionError(f"no request of {model} reached the model")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return stop_process(self.proc, sig, timeout)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send ``sig`` to a process this test started, wait for it (SIGKILL after ``timeout``), return its code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def start_server(
    path: Path, *args: str, log_dir: Path, wait_ready: bool = True, env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Server:
    port = free_port()
    grpc_port = port
    while grpc_port == port:
        grpc_port = int(args[args.index("--grpc-port") + 1]) if "--grpc-port" in args else free_port()
    log_path = log_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "mlport.cli.main", "serve", str(path), "--http-port", str(port),
           "--grpc-port", str(grpc_port), *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", port, proc, log_path, grpc_port)
    deadline = time.monotonic() + timeout
    path_ = "/v2/health/ready" if wait_ready else "/v2/health/live"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + path_, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not {'ready' if wait_ready else 'live'} after {timeout}s:\n{server.log()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(path, *cli_args, wait_ready=True)`` starts a server; all are stopped after the test."""
    started: list[Server] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir(exist_ok=True)

    def _start(path: Path, *args: str, wait_ready: bool = True, env: dict[str, str] | None = None) -> Server:
        server = start_server(path, *args, log_dir=log_dir, wait_ready=wait_ready, env=env)
        started.append(server)
        return server

    yield _start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def kserve_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with KServe's SDK (pinned), over this environment's packages, made once per test run."""
    venv = tmp_path_factory.mktemp("kserve") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "kserve==0.21.0"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        message = f"kserve could not be installed in a virtualenv: {done.stderr[-2000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the registry is there: a failed install is a failure, not a skip
        pytest.skip(message)
    return python
