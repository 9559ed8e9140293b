"""``mlport serve`` as an operator meets it: readiness of one model, ``--exit-on-error``, taken ports, the
"serving on" line only once the ports listen, the client a local proxy forwarded for in the text access log, and
"did you mean" for mistyped commands and flags."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as tgrpc

from tests.builders import iris_onnx
from tests.conftest import Server, free_port, stop_process
from tests.integration.test_formats_tabular import index_row
from tests.waiting import wait_for


def _mlport(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def _wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout}s:\n{server.log()}")


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "one" / "broken.onnx"
    path.parent.mkdir()
    path.write_bytes(b"not an onnx model")
    return path


def test_one_broken_file_is_never_ready(serve, broken: Path) -> None:
    strict = serve(broken, wait_ready=False)
    lenient = serve(broken, "--no-strict-readiness", wait_ready=False)
    assert index_row(strict, "broken")["state"] == "UNAVAILABLE"
    _wait_ready(lenient)  # its first load is over: the failed model does not hold it back
    assert httpx.get(strict.url + "/v2/health/ready").status_code == 503
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{strict.grpc_port}")
    try:
        assert client.is_server_live() and not client.is_server_ready()
    finally:
        client.close()


def test_a_repository_stays_ready_beside_a_broken_model(serve, broken: Path) -> None:
    iris_onnx(broken.parent / "iris.onnx")
    server = serve(broken.parent)
    assert index_row(server, "broken")["state"] == "UNAVAILABLE"
    assert httpx.post(server.url + "/v2/models/iris/infer", json={"inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}).status_code == 200


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_exit_on_error_stops_when_a_model_fails(broken: Path, workers: str) -> None:
    iris_onnx(broken.parent / "iris.onnx")
    done = _mlport("serve", str(broken.parent), "--exit-on-error", "--workers", workers,
                   "--http-port", str(free_port()), "--grpc-port", str(free_port()))
    assert done.returncode == 3, done.stderr
    assert "--exit-on-error" in done.stderr and "model broken version 1" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("which", ["--http-port", "--grpc-port"])
def test_a_taken_port_is_one_line_and_no_banner(tmp_path: Path, which: str, workers: str) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        ports = {"--http-port": str(free_port()), "--grpc-port": str(free_port())}
        ports[which] = str(taken.getsockname()[1])
        done = _mlport("serve", str(model), "--workers", workers, *(x for kv in ports.items() for x in kv))
    what = "HTTP" if which == "--http-port" else "gRPC"
    assert done.returncode == 2, done.stderr
    assert f"mlport: cannot listen for {what} on 127.0.0.1:{ports[which]}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stderr


def test_the_banner_comes_once_both_ports_listen(tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlport.cli.main", "serve", str(model), "--http-port", str(http),
                             "--grpc-port", str(grpc)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MLPORT_LOG_LEVEL": "warning"})
    try:
        assert proc.stderr is not None
        line = ""
        while "serving" not in line:
            line = proc.stderr.readline()  # blocks until the server prints a line (or exits: "")
            assert line, "the server exited without its banner"
        assert f"serving {model} on http://127.0.0.1:{http} and grpc 127.0.0.1:{grpc}" in line
        for port in (http, grpc):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()  # refused unless listening
    finally:
        assert stop_process(proc) == 0  # type: ignore[arg-type]


def test_the_text_access_log_names_the_client_a_local_proxy_forwarded_for(serve, tmp_path: Path) -> None:
    """uvicorn's text access log gives the address in X-Forwarded-For when the request came from a trusted
    (local) proxy; the JSON access log has no address, and then the header is not looked at."""
    model = iris_onnx(tmp_path / "iris.onnx")
    server = serve(model, "--access-log")
    r = httpx.get(server.url + "/v2/health/live", headers={"x-forwarded-for": "203.0.113.7"}, timeout=10)
    assert r.status_code == 200
    wait_for(lambda: '203.0.113.7:0 - "GET /v2/health/live HTTP/1.1" 200' in server.log(), 30, "the log line")


def test_mistyped_commands_and_flags_get_suggestions(tmp_path: Path) -> None:
    done = _mlport("serv", "model.onnx")
    # the closest command comes first (other close ones, such as 'users', may follow)
    assert done.returncode == 2 and "unknown command 'serv' (did you mean 'serve'" in done.stderr
    done = _mlport("serve", "model.onnx", "--htp-port", "9000")
    assert done.returncode == 2 and "unknown option --htp-port (did you mean '--http-port'" in done.stderr
    done = _mlport("serve", "model.onnx", "--workrs=2")
    assert done.returncode == 2 and "unknown option --workrs (did you mean '--workers'?)" in done.stderr
    done = _mlport("--verison")
    assert done.returncode == 2 and "unknown option --verison (did you mean '--version'?)" in done.stderr
    done = _mlport("presets", "biuld")
    assert done.returncode == 2 and "'biuld' (did you mean 'build'?)" in done.stderr
    done = _mlport("hub", "--dta-dir", str(tmp_path))
    assert done.returncode == 2 and "did you mean '--data-dir'" in done.stderr
    assert "invalid choice" not in done.stderr and "Traceback" not in done.stderr
