"""The hub's gRPC gateway (``mlport hub --grpc-port``) in front of real replicas, with tritonclient.grpc and the
service's own stubs: answers, token rules, errors, ``x-mlport-version`` and a canary's two versions."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import trustme
from tritonclient.utils import InferenceServerException

from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.grpc.proto import inference_pb2_grpc as pb_grpc
from tests.builders import iris_onnx, ort_run
from tests.conftest import free_port
from tests.hubutil import HubProc, ready_versions, start_hub, version_status, wait_for

pytestmark = pytest.mark.slow

ROWS = np.asarray([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 5.1, 1.8],
                   [4.9, 2.4, 3.3, 1.0], [6.0, 2.2, 5.0, 1.5]], dtype=np.float32)


@dataclass
class Setup:
    hub: HubProc
    grpc_url: str
    admin: httpx.Client
    predictor: str
    other: str
    admin_token: str
    want: dict[int, dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("hub-grpc")
    paths = {1: iris_onnx(tmp / "v1.onnx"), 2: iris_onnx(tmp / "v2.onnx", c=0.01)}
    want = {v: ort_run(p, {"input": ROWS}) for v, p in paths.items()}
    assert not np.allclose(want[1]["probabilities"], want[2]["probabilities"], atol=1e-3), "the versions must differ"
    grpc_port = free_port()
    hub = start_hub(tmp / "data", "--grpc-port", str(grpc_port))
    try:
        token = hub.login()
        admin = hub.client(token)
        assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
        for path in paths.values():
            r = admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"},
                           content=path.read_bytes(), headers={"content-type": "application/octet-stream"})
            assert r.status_code == 201, r.text
        tokens = {}
        for name, deployments in (("app", ["iris-b"]), ("other-app", ["elsewhere"])):
            r = admin.post("/api/v1/service-accounts", json={"name": name, "roles": ["predictor"],
                                                              "deployments": deployments})
            assert r.status_code == 201, r.text
            tokens[name] = r.json()["access_token"]
        r = admin.post("/api/v1/deployments", json={"name": "iris-b", "model": "iris", "version": 1})
        assert r.status_code == 201, r.text
        wait_for(lambda: ready_versions(admin, "iris-b").get(1), 180, "v1 ready")
        yield Setup(hub, f"127.0.0.1:{grpc_port}", admin, tokens["app"], tokens["other-app"], token, want)
        admin.close()
    finally:
        code = hub.stop()
    # the gRPC server and its channels stop with the hub, which exits cleanly
    assert code == 0, hub.log()[-3000:]


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _infer(s: Setup, token: str | None, model: str = "iris-b", **headers: str) -> Any:
    client = triton_grpc.InferenceServerClient(s.grpc_url)
    try:
        inp = triton_grpc.InferInput("input", list(ROWS.shape), "FP32")
        inp.set_data_from_numpy(ROWS)
        return client.infer(model, [inp], headers={**(_bearer(token) if token else {}), **headers})
    finally:
        client.close()


def _refused(s: Setup, token: str | None, model: str = "iris-b") -> str:
    with pytest.raises(InferenceServerException) as info:
        _infer(s, token, model)
    return str(info.value.status())


def _raw_infer(channel: grpc.Channel, token: str, model: str = "iris-b") -> tuple[pb.ModelInferResponse,
                                                                                 dict[str, str]]:
    """A ModelInfer call with the service's own stub: the answer and its trailing metadata."""
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[ROWS.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=list(ROWS.shape))
    answer, call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(
        request, metadata=tuple(_bearer(token).items()), timeout=60)
    return answer, {m.key: m.value for m in call.trailing_metadata()}


def _probabilities(answer: pb.ModelInferResponse) -> np.ndarray:
    index = [o.name for o in answer.outputs].index("probabilities")
    assert answer.outputs[index].datatype == "FP32"
    return np.frombuffer(answer.raw_output_contents[index], dtype=np.float32).reshape(len(ROWS), -1)


def _check(answer: pb.ModelInferResponse, want: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(_probabilities(answer), want["probabilities"], rtol=1e-5, atol=1e-6)


def test_infer_through_the_hub_equals_onnxruntime(setup: Setup) -> None:
    for model, headers in (("iris-b", {}), ("iris", {"x-mlport-deployment": "iris-b"})):
        result = _infer(setup, setup.predictor, model, **headers)
        assert np.array_equal(result.as_numpy("label"), setup.want[1]["label"])
        np.testing.assert_allclose(result.as_numpy("probabilities"), setup.want[1]["probabilities"],
                                   rtol=1e-5, atol=1e-6)
    client = triton_grpc.InferenceServerClient(setup.grpc_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris-b", headers=_bearer(setup.predictor))
        meta = client.get_model_metadata("iris-b", headers=_bearer(setup.predictor))
        assert meta.name == "iris-b" and [i.name for i in meta.inputs] == ["input"]
    finally:
        client.close()


def test_refusals(setup: Setup) -> None:
    assert _refused(setup, None) == "StatusCode.UNAUTHENTICATED"
    assert _refused(setup, "not-a-token") == "StatusCode.UNAUTHENTICATED"
    assert _refused(setup, setup.other) == "StatusCode.PERMISSION_DENIED"
    assert _refused(setup, setup.admin_token, "no-such-deployment") == "StatusCode.NOT_FOUND"
    # a predictor of another deployment learns nothing of which deployments exist
    assert _refused(setup, setup.predictor, "no-such-deployment") == "StatusCode.PERMISSION_DENIED"


def test_version_metadata_and_metrics(setup: Setup) -> None:
    with grpc.insecure_channel(setup.grpc_url) as channel:
        answer, trailing = _raw_infer(channel, setup.predictor)
    assert trailing["x-mlport-version"] == "1" and trailing["x-mlport-deployment"] == "iris-b"
    _check(answer, setup.want[1])
    text = httpx.get(setup.hub.url + "/metrics", timeout=30).text
    assert 'mlport_hub_gateway_requests_total{deployment="iris-b",status="OK",version="1"}' in text
    assert 'status="UNAUTHENTICATED"' in text
    replicas = setup.admin.get("/api/v1/deployments/iris-b").json()["replicas"]["versions"][0]["replicas"]
    assert all(isinstance(r["grpc_port"], int) and r["grpc_port"] > 0 for r in replicas)


def test_a_canary_answers_from_both_versions(setup: Setup) -> None:
    r = setup.admin.post("/api/v1/deployments/iris-b/canary", json={"version": 2, "percent": 50})
    assert r.status_code == 200, r.text
    wait_for(lambda: ready_versions(setup.admin, "iris-b").get(2), 180, "v2 ready")
    seen: dict[str, int] = {}
    with grpc.insecure_channel(setup.grpc_url) as channel:
        for _ in range(200):
            answer, trailing = _raw_infer(channel, setup.predictor)
            version = trailing["x-mlport-version"]
            _check(answer, setup.want[int(version)])
            seen[version] = seen.get(version, 0) + 1
            if len(seen) == 2 and min(seen.values()) >= 5:
                break
    assert set(seen) == {"1", "2"}, seen


def test_no_ready_replica_is_unavailable(setup: Setup) -> None:
    admin = setup.admin
    assert admin.post("/api/v1/models", json={"name": "broken"}).status_code == 201
    r = admin.post("/api/v1/models/broken/versions", params={"filename": "broken.onnx"},
                   content=b"this is not an onnx graph" * 10, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    r = admin.post("/api/v1/deployments", json={"name": "broken-prod", "model": "broken", "version": 1})
    assert r.status_code == 201, r.text
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}
    # the HTTP gateway's answer once the load failed is known: 503 at once
    wait_for(lambda: admin.post("/deployments/broken-prod/v2/models/broken-prod/infer", json=body,
                                timeout=120).status_code == 503, 240, "the failed load known")
    client = triton_grpc.InferenceServerClient(setup.grpc_url)
    try:
        inp = triton_grpc.InferInput("input", [1, 4], "FP32")
        inp.set_data_from_numpy(ROWS[:1])
        with pytest.raises(InferenceServerException) as info:
            client.infer("broken-prod", [inp], headers=_bearer(setup.admin_token), client_timeout=120)
    finally:
        client.close()
    assert str(info.value.status()) == "StatusCode.UNAVAILABLE"
    assert "no ready replica" in str(info.value.message()), info.value.message()
    # an error after the version was chosen still names it
    request = pb.ModelInferRequest(model_name="broken-prod", raw_input_contents=[ROWS[:1].tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    with grpc.insecure_channel(setup.grpc_url) as channel, pytest.raises(grpc.RpcError) as failed:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=tuple(_bearer(setup.admin_token).items()), timeout=120)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    trailing = dict(failed.value.trailing_metadata())  # type: ignore[attr-defined]
    assert trailing["x-mlport-version"] == "1" and trailing["x-mlport-deployment"] == "broken-prod"
    assert admin.delete("/api/v1/deployments/broken-prod").status_code in (200, 204)

def test_a_deployment_with_admission_limits_queues_grpc_calls_too(setup: Setup) -> None:
    r = setup.admin.post("/api/v1/deployments", json={"name": "iris-gated", "model": "iris", "version": 1,
                                                      "max_concurrency": 1, "max_queue": 4})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(setup.admin, "iris-gated").get(1), 180, "iris-gated ready")
    with grpc.insecure_channel(setup.grpc_url) as channel, ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _raw_infer(channel, setup.admin_token, "iris-gated"), range(12)))
    for answer, trailing in results:
        _check(answer, setup.want[1])
        assert trailing["x-mlport-version"] == "1"
    text = httpx.get(setup.hub.url + "/metrics", timeout=30).text
    line = next(x for x in text.splitlines()
                if x.startswith('mlport_hub_queue_duration_seconds_count{deployment="iris-gated",version="1"}'))
    assert float(line.split()[-1]) == 12, line

def test_a_replica_killed_under_load_loses_no_call(setup: Setup) -> None:
    r = setup.admin.post("/api/v1/deployments", json={"name": "iris-two", "model": "iris", "version": 1,
                                                      "min_replicas": 2, "max_replicas": 2})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(setup.admin, "iris-two").get(1) == 2, 180, "two ready replicas")
    victim = version_status(setup.admin, "iris-two", 1)["pids"][0]
    done = threading.Event()
    answered = [0]
    lock = threading.Lock()

    def call(channel: grpc.Channel) -> str:
        try:
            answer, _ = _raw_infer(channel, setup.admin_token, "iris-two")
            _check(answer, setup.want[1])
            status = "OK"
        except grpc.RpcError as exc:
            status = f"{exc.code()}: {exc.details()}"  # type: ignore[attr-defined]
        with lock:
            answered[0] += 1
            if answered[0] == 60:
                done.set()
        return status

    with grpc.insecure_channel(setup.grpc_url) as channel, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call, channel) for _ in range(300)]
        assert done.wait(120)
        os.kill(victim, signal.SIGKILL)
        results = [f.result(timeout=120) for f in futures]
    assert results.count("OK") == len(results), {x: results.count(x) for x in set(results)}


def test_over_tls_to_the_hub_and_to_its_replicas(tmp_path: Path) -> None:
    """With the hub's TLS on, its gRPC port serves TLS and its replicas' gRPC ports are reached over TLS."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    grpc_port = free_port()
    hub = start_hub(tmp_path / "hub", "--grpc-port", str(grpc_port), "--tls-cert", str(cert), "--tls-key", str(key),
                    ca=ca_path, timeout=120)
    try:
        token = hub.login()
        model = iris_onnx(tmp_path / "iris.onnx")
        with hub.client(token) as admin:
            assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
            r = admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"},
                           content=model.read_bytes(), headers={"content-type": "application/octet-stream"})
            assert r.status_code == 201, r.text
            r = admin.post("/api/v1/deployments", json={"name": "iris-tls", "model": "iris", "version": 1})
            assert r.status_code == 201, r.text
            wait_for(lambda: ready_versions(admin, "iris-tls").get(1), 180, "a TLS replica ready")
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}", ssl=True,
                                                   root_certificates=str(ca_path))
        try:
            inp = triton_grpc.InferInput("input", list(ROWS.shape), "FP32")
            inp.set_data_from_numpy(ROWS)
            result = client.infer("iris-tls", [inp], headers=_bearer(token))
            np.testing.assert_allclose(result.as_numpy("probabilities"),
                                       ort_run(model, {"input": ROWS})["probabilities"], rtol=1e-5, atol=1e-6)
        finally:
            client.close()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as plain, pytest.raises(grpc.RpcError):
            pb_grpc.GRPCInferenceServiceStub(plain).ServerLive(pb.ServerLiveRequest(), timeout=10)
    finally:
        code = hub.stop()
    assert code == 0, hub.log()[-3000:]
