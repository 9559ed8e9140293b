"""TLS on the runtime's ports (HTTPS and gRPC), with certificates made by trustme, against tritonclient and
mlport.client: mutual TLS, a wrong CA, and plain HTTP on the TLS port."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import trustme

from mlport.client import ClientError, GrpcClient, HttpClient
from tests.builders import iris_onnx, ort_run
from tests.conftest import free_port, stop_process

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.org")
    paths = Certs(root / "ca.pem", root / "cert.pem", root / "key.pem", root / "client.pem", root / "client-key.pem",
                  root / "other-ca.pem")
    ca.cert_pem.write_to_path(str(paths.ca))
    other.cert_pem.write_to_path(str(paths.other_ca))
    server.private_key_pem.write_to_path(str(paths.key))
    server.cert_chain_pems[0].write_to_path(str(paths.cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    return paths


@dataclass
class TlsServer:
    url: str
    port: int
    grpc_port: int
    proc: subprocess.Popen[bytes]
    log: Path


def _start(model: Path, certs: Certs, log_dir: Path, *extra: str) -> TlsServer:
    port, grpc_port = free_port(), free_port()
    log = log_dir / f"tls-{port}.log"
    cmd = [sys.executable, "-m", "mlport.cli.main", "serve", str(model), "--http-port", str(port),
           "--grpc-port", str(grpc_port), "--tls-cert", str(certs.cert), "--tls-key", str(certs.key), *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = TlsServer(f"https://127.0.0.1:{port}", port, grpc_port, proc, log)
    context = ssl.create_default_context(cafile=str(certs.ca))
    if "--tls-client-ca" in extra:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(server.url + "/v2/health/ready", verify=context, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"TLS server not ready:\n{log.read_text()}")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_onnx(tmp_path_factory.mktemp("tlsmodel") / "iris.onnx")


@pytest.fixture(scope="module")
def server(model: Path, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    s = _start(model, certs, tmp_path_factory.mktemp("logs"))
    try:
        yield s
    finally:
        stop_process(s.proc)


def test_https_and_grpc_tls_with_mlport_client(server: TlsServer, certs: Certs, model: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    own = ort_run(model, {"input": X})
    with HttpClient(server.url, ca=certs.ca) as client:
        np.testing.assert_array_equal(client.infer("iris", {"input": X})["label"], own["label"])
    monkeypatch.setenv("MLPORT_CA", str(certs.ca))
    with HttpClient(server.url) as client:  # the CA from MLPORT_CA
        assert client.ready()
    with GrpcClient(f"127.0.0.1:{server.grpc_port}", tls=True) as client:
        np.testing.assert_array_equal(client.infer("iris", {"input": X})["label"], own["label"])


def test_https_and_grpc_tls_with_tritonclient(server: TlsServer, certs: Certs, model: Path) -> None:
    own = ort_run(model, {"input": X})
    http = thttp.InferenceServerClient(f"127.0.0.1:{server.port}", ssl=True,
                                       ssl_context_factory=lambda: ssl.create_default_context(cafile=str(certs.ca)))
    try:
        inp = thttp.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        np.testing.assert_array_equal(http.infer("iris", [inp]).as_numpy("label"), own["label"])
    finally:
        http.close()
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}", ssl=True,
                                         root_certificates=str(certs.ca))
    try:
        inp = tgrpc.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        np.testing.assert_array_equal(client.infer("iris", [inp]).as_numpy("label"), own["label"])
    finally:
        client.close()


def test_a_wrong_ca_fails_with_a_clear_message(server: TlsServer, certs: Certs) -> None:
    with HttpClient(server.url, ca=certs.other_ca) as client, pytest.raises(ClientError) as err:
        client.ready()
    assert "certificate is not trusted" in err.value.message and "MLPORT_CA" in err.value.message
    with HttpClient(server.url) as client, pytest.raises(ClientError) as err:  # the system's CAs only
        client.ready()
    assert "certificate is not trusted" in err.value.message
    with GrpcClient(f"127.0.0.1:{server.grpc_port}", tls=True, ca=certs.other_ca, timeout=10) as client, \
            pytest.raises(ClientError) as err:
        client.ready()
    assert err.value.code == "UNAVAILABLE"


def test_plain_http_on_the_tls_port_gets_an_error_not_a_hang(server: TlsServer) -> None:
    started = time.monotonic()
    with HttpClient(f"http://127.0.0.1:{server.port}", timeout=20) as client, pytest.raises(ClientError) as err:
        client.ready()
    assert time.monotonic() - started < 15
    assert "https://" in err.value.message, err.value.message
    started = time.monotonic()
    with GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=5) as plain, pytest.raises(ClientError) as err:
        plain.ready()
    assert err.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and time.monotonic() - started < 15


def test_mutual_tls_refuses_a_client_without_a_certificate(model: Path, certs: Certs, tmp_path: Path) -> None:
    s = _start(model, certs, tmp_path, "--tls-client-ca", str(certs.ca))
    try:
        with HttpClient(s.url, ca=certs.ca, timeout=10) as client, pytest.raises(ClientError) as err:
            client.ready()
        assert err.value.code == "UNAVAILABLE"
        with HttpClient(s.url, ca=certs.ca, cert=(certs.client_cert, certs.client_key)) as client:
            assert client.ready()
        with GrpcClient(f"127.0.0.1:{s.grpc_port}", tls=True, ca=certs.ca, timeout=10) as client, \
                pytest.raises(ClientError) as err:
            client.ready()
        assert err.value.code == "UNAVAILABLE"
        with GrpcClient(f"127.0.0.1:{s.grpc_port}", tls=True, ca=certs.ca,
                        cert=(certs.client_cert, certs.client_key)) as client:
            assert client.ready()
    finally:
        stop_process(s.proc)


def test_bad_tls_files_are_one_clear_error_at_start(model: Path, certs: Certs) -> None:
    for args, expected in (
        (["--tls-cert", str(certs.cert)], "both --tls-cert and --tls-key"),
        (["--tls-cert", str(certs.cert), "--tls-key", str(certs.ca)], "not a certificate and its key"),
        (["--tls-cert", str(certs.cert) + ".missing", "--tls-key", str(certs.key)], "cannot read"),
    ):
        r = subprocess.run([sys.executable, "-m", "mlport.cli.main", "serve", str(model), "--http-port",
                            str(free_port()), "--grpc-port", str(free_port()), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_hub_over_https_with_the_cli(certs: Certs, tmp_path: Path) -> None:
    import os

    from tests.hubutil import ADMIN_PASSWORD, JWT_SECRET, ready_versions, wait_for

    port = free_port()
    env = {**os.environ, "MLPORT_HUB_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLPORT_HUB_JWT_SECRET": JWT_SECRET}
    env.pop("MLPORT_CA", None)
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlport.cli.main", "hub", "--data-dir", str(tmp_path / "hub"),
                                 "--port", str(port), "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(certs.ca))
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(url + "/healthz", verify=context, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        cli_env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "config")}

        def mlport(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "mlport.cli.main", *args], input=ADMIN_PASSWORD + "\n",
                                  capture_output=True, text=True, env={**cli_env, **(extra or {})}, timeout=120)

        untrusted = mlport("login", "--hub", url, "--password-stdin")
        assert untrusted.returncode == 3 and "certificate is not trusted" in untrusted.stderr, untrusted.stderr
        ok = mlport("login", "--hub", url, "--password-stdin", "--ca", str(certs.ca))
        assert ok.returncode == 0, ok.stderr
        listed = mlport("models", "list", extra={"MLPORT_CA": str(certs.ca)})
        assert listed.returncode == 0, listed.stderr
        plain = mlport("models", "list", "--hub", f"http://127.0.0.1:{port}")
        assert plain.returncode == 3 and "https://" in plain.stderr, plain.stderr

        # a deployment: its replicas serve HTTPS with the hub's certificate, and the gateway verifies them
        ca_env = {"MLPORT_CA": str(certs.ca)}
        assert mlport("models", "create", "iris", extra=ca_env).returncode == 0
        model = iris_onnx(tmp_path / "iris.onnx")
        assert mlport("versions", "upload", "iris", str(model), extra=ca_env).returncode == 0
        deployed = mlport("deploy", "iris-prod", "--model", "iris", "--version", "1", extra=ca_env)
        assert deployed.returncode == 0, deployed.stderr
        token = httpx.post(url + "/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD},
                           verify=context, timeout=30).json()["access_token"]
        with httpx.Client(base_url=url, verify=context, timeout=60,
                          headers={"authorization": f"Bearer {token}"}) as admin:
            wait_for(lambda: ready_versions(admin, "iris-prod").get(1), what="a TLS replica ready", timeout=120)
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(X.shape),
                                "data": X.ravel().tolist()}]}
            r = admin.post("/deployments/iris-prod/v2/models/iris-prod/infer", json=body)
            assert r.status_code == 200, r.text
            label = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
            assert label == ort_run(model, {"input": X})["label"].tolist()
        replica_logs = "".join(f.read_text(errors="replace") for f in (tmp_path / "hub").rglob("*.log"))
        assert "https://" in replica_logs, replica_logs[-2000:]
    finally:
        stop_process(proc)
