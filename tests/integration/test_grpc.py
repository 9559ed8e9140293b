"""Open Inference Protocol over gRPC against a real server: tritonclient.grpc, raw stubs, health, reflection."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.utils import InferenceServerException

from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.grpc.proto import inference_pb2_grpc
from tests.builders import iris_onnx, ort_run, scale_onnx, slow_onnx
from tests.builders_strings import string_concat_onnx

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    string_concat_onnx(root / "strings" / "1" / "model.onnx")
    scale_onnx(root / "scale64" / "1" / "model.onnx", 2.0, dtype="float64")
    return root


def _client(server) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")


def _stub(channel: grpc.Channel) -> inference_pb2_grpc.GRPCInferenceServiceStub:
    return inference_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_health_metadata_and_repository(serve, repo: Path) -> None:
    server = serve(repo)
    client = _client(server)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
        assert not client.is_model_ready("nope") and not client.is_model_ready("iris", "7")
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "mlport" and "model_repository" in meta["extensions"]
        m = client.get_model_metadata("iris", as_json=True)
        assert m["name"] == "iris" and m["versions"] == ["1"] and m["platform"] == "onnxruntime_onnx"
        assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
        assert {o["name"]: o["datatype"] for o in m["outputs"]} == {"label": "INT64", "probabilities": "FP32"}
        with pytest.raises(InferenceServerException) as err:
            client.get_model_metadata("nope")
        assert err.value.status() == "StatusCode.NOT_FOUND"

        index = {r["name"]: r for r in client.get_model_repository_index(as_json=True)["models"]}
        assert set(index) == {"iris", "strings", "scale64"}
        assert index["iris"]["state"] == "READY" and index["iris"]["version"] == "1"

        client.unload_model("iris")
        assert not client.is_model_ready("iris")
        index = {r["name"]: r for r in client.get_model_repository_index(as_json=True)["models"]}
        assert index["iris"]["state"] == "UNAVAILABLE" and index["iris"]["reason"] == "unloaded"
        with pytest.raises(InferenceServerException) as err:
            inp = tgrpc.InferInput("input", list(X.shape), "FP32")
            inp.set_data_from_numpy(X)
            client.infer("iris", [inp])
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        client.load_model("iris")
        assert client.is_model_ready("iris")
        with pytest.raises(InferenceServerException) as err:
            client.load_model("nope")
        assert err.value.status() == "StatusCode.NOT_FOUND"
        # the same state is seen over HTTP: one manager behind both protocols
        with server.client() as c:
            assert c.get("/v2/models/iris/ready").status_code == 200
    finally:
        client.close()


def test_infer_matches_onnxruntime(serve, repo: Path) -> None:
    server = serve(repo)
    want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X})
    client = _client(server)
    try:
        inp = tgrpc.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        res = client.infer("iris", [inp], request_id="req-7", parameters={"tag": "a", "n": 3, "flag": True})
        assert res.get_response().id == "req-7"
        assert res.get_response().model_name == "iris" and res.get_response().model_version == "1"
        assert res.as_numpy("label").dtype == np.int64
        np.testing.assert_array_equal(res.as_numpy("label"), want["label"])
        np.testing.assert_allclose(res.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)
        # requested outputs, on an explicit version
        res = client.infer("iris", [inp], model_version="1", outputs=[tgrpc.InferRequestedOutput("probabilities")])
        assert [o.name for o in res.get_response().outputs] == ["probabilities"]
        assert res.as_numpy("label") is None
        np.testing.assert_allclose(res.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)
        # FP64
        x64 = np.arange(6, dtype=np.float64).reshape(2, 3)
        inp64 = tgrpc.InferInput("x", [2, 3], "FP64")
        inp64.set_data_from_numpy(x64)
        np.testing.assert_array_equal(client.infer("scale64", [inp64]).as_numpy("y"), x64 * 2)
    finally:
        client.close()
    with server.client() as c:
        metrics = c.get("/metrics").text
    assert 'protocol="grpc"' in metrics


def test_bytes_and_int64_tensors(serve, repo: Path) -> None:
    server = serve(repo)
    words = ["héllo", "", "a b"]
    ints = np.array([1, -4, 9], dtype=np.int64)
    client = _client(server)
    try:
        text = tgrpc.InferInput("text", [3], "BYTES")
        text.set_data_from_numpy(np.array([w.encode() for w in words], dtype=object))
        n = tgrpc.InferInput("n", [3], "INT64")
        n.set_data_from_numpy(ints)
        res = client.infer("strings", [text, n])
        assert [v.decode() for v in res.as_numpy("echo")] == [w + "!" for w in words]
        assert res.as_numpy("twice").tolist() == (ints * 2).tolist()
        assert {o.name: o.datatype for o in res.get_response().outputs} == {"echo": "BYTES", "twice": "INT64"}
    finally:
        client.close()


def test_typed_contents_accepted(serve, repo: Path) -> None:
    """Clients that send typed ``contents`` instead of ``raw_input_contents`` are served too."""
    server = serve(repo)
    want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X})
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = _stub(channel)
        req = pb.ModelInferRequest(model_name="iris", id="typed")
        req.inputs.add(name="input", datatype="FP32", shape=list(X.shape)).contents.fp32_contents.extend(X.ravel())
        req.outputs.add(name="label")
        res = stub.ModelInfer(req, timeout=30)
        assert res.id == "typed" and [o.name for o in res.outputs] == ["label"]
        assert list(res.outputs[0].shape) == [3]
        assert np.frombuffer(res.raw_output_contents[0], dtype="<i8").tolist() == want["label"].tolist()

        req = pb.ModelInferRequest(model_name="strings")
        req.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"x", b"yz"])
        req.inputs.add(name="n", datatype="INT64", shape=[2]).contents.int64_contents.extend([5, 6])
        res = stub.ModelInfer(req, timeout=30)
        outs = {o.name: i for i, o in enumerate(res.outputs)}
        assert res.raw_output_contents[outs["echo"]] == b"\x02\x00\x00\x00x!\x03\x00\x00\x00yz!"
        assert np.frombuffer(res.raw_output_contents[outs["twice"]], dtype="<i8").tolist() == [10, 12]

        # values in the field of another datatype are refused, naming the field
        req = pb.ModelInferRequest(model_name="iris")
        req.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.int64_contents.extend([1, 2, 3, 4])
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, timeout=30)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "fp32_contents" in (err.value.details() or "")


def test_errors_map_to_status_codes_and_the_server_keeps_serving(serve, repo: Path) -> None:
    server = serve(repo, "--max-body-bytes", "4096")
    client = _client(server)
    try:
        inp = tgrpc.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        with pytest.raises(InferenceServerException) as err:
            client.infer("nope", [inp])
        assert err.value.status() == "StatusCode.NOT_FOUND" and "nope" in err.value.message()

        bad = tgrpc.InferInput("input", [2, 2], "FP32")
        bad.set_data_from_numpy(np.ones((2, 2), dtype=np.float32))
        with pytest.raises(InferenceServerException) as err:
            client.infer("iris", [bad])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "input 'input' expects FP32 with shape [-1, 4], got shape [2, 2]" in err.value.message()

        with pytest.raises(InferenceServerException) as err:
            client.infer("iris", [inp], outputs=[tgrpc.InferRequestedOutput("nope")])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "nope" in err.value.message()

        big = tgrpc.InferInput("input", [400, 4], "FP32")  # 6.4 KB: over the 4 KB body limit
        big.set_data_from_numpy(np.ones((400, 4), dtype=np.float32))
        with pytest.raises(InferenceServerException) as err:
            client.infer("iris", [big])
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"

        # still serving after every failure
        assert client.is_server_ready()
        res = client.infer("iris", [inp])
        assert res.as_numpy("label").shape == (3,)
    finally:
        client.close()
    # and raw bytes that do not fit the shape
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        req = pb.ModelInferRequest(model_name="iris", raw_input_contents=[b"\x00" * 12])
        req.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        with pytest.raises(grpc.RpcError) as rpc_err:
            _stub(channel).ModelInfer(req, timeout=30)
        assert rpc_err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "needs 16 bytes, got 12" in (rpc_err.value.details() or "")


def test_health_service_and_reflection(serve, repo: Path) -> None:
    server = serve(repo)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "iris"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND

        db = ProtoReflectionDescriptorDatabase(channel)
        services = db.get_services()
        assert "inference.GRPCInferenceService" in services and "grpc.health.v1.Health" in services
        from google.protobuf.descriptor_pool import DescriptorPool

        described = DescriptorPool(db).FindServiceByName("inference.GRPCInferenceService")
        assert {m.name for m in described.methods} >= {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                                       "ModelMetadata", "ModelInfer", "RepositoryIndex"}
        assert described.methods_by_name["ModelInfer"].input_type.fields_by_name["raw_input_contents"].number == 7


def test_grpc_port_zero_turns_grpc_off(serve, repo: Path) -> None:
    server = serve(repo, "--grpc-port", "0")
    assert server.grpc_port == 0
    with server.client() as c:
        assert c.get("/v2/health/ready").status_code == 200
    assert "listening" not in server.log() and " and grpc " not in server.log()


def test_shutdown_lets_inflight_grpc_calls_finish(serve, tmp_path: Path) -> None:
    server = serve(slow_onnx(tmp_path / "slow.onnx"))
    x = np.ones((800, 800), dtype=np.float32)
    results: list[tuple[int, ...]] = []

    def call() -> None:
        client = _client(server)
        try:
            inp = tgrpc.InferInput("x", [800, 800], "FP32")
            inp.set_data_from_numpy(x)
            results.append(client.infer("slow", [inp], client_timeout=60).as_numpy("y").shape)
        finally:
            client.close()

    t = threading.Thread(target=call)
    t.start()
    server.wait_inflight("slow")
    code = server.stop(signal.SIGTERM)
    t.join(60)
    assert results == [(800, 800)]
    assert code == 0
