"""Triton's model configuration and statistics extensions, and the JSON access log, against a real server
with tritonclient (HTTP and gRPC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.builders import iris_onnx, scale_onnx

TRITON_CONFIG = """
name: "tri"
platform: "onnxruntime_onnx"
max_batch_size: 4
input { name: "x" data_type: TYPE_FP32 dims: [ 3 ] }
output { name: "y" data_type: TYPE_FP32 dims: [ 3 ] }
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    scale_onnx(root / "scale" / "1" / "model.onnx", 2.0)
    scale_onnx(root / "scale" / "2" / "model.onnx", 3.0)
    (root / "scale" / "model.yaml").write_text(
        "version_policy: {all: true}\nbatching: {max_batch_size: 8, max_delay_ms: 2, preferred_batch_sizes: [4]}\n")
    scale_onnx(root / "tri" / "1" / "model.onnx", 1.0)
    (root / "tri" / "config.pbtxt").write_text(TRITON_CONFIG)
    return root


def _clients(server: Any) -> tuple[thttp.InferenceServerClient, tgrpc.InferenceServerClient]:
    return (thttp.InferenceServerClient(f"127.0.0.1:{server.port}"),
            tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}"))


def test_model_config_from_signature_and_settings(serve, repo: Path) -> None:
    server = serve(repo, "--poll-interval", "0")
    http, grpc = _clients(server)
    try:
        assert {"model_configuration", "statistics"} <= set(http.get_server_metadata()["extensions"])
        assert {"model_configuration", "statistics"} <= set(grpc.get_server_metadata(as_json=True)["extensions"])
        # batching configured: max_batch_size, and dims without the batch axis
        cfg = http.get_model_config("scale")
        assert cfg["name"] == "scale" and cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 8
        assert cfg["version_policy"] == {"all": {}}
        assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["input"]] == [("x", "TYPE_FP32", [3])]
        assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["output"]] == [("y", "TYPE_FP32", [3])]
        assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
        assert cfg["dynamic_batching"]["preferred_batch_size"] == [4]
        assert http.get_model_config("scale", "1") == cfg
        g = grpc.get_model_config("scale", as_json=True)["config"]
        assert g["max_batch_size"] == 8 and g["input"][0]["dims"] == ["3"]  # the gRPC JSON form: int64 as strings
        assert g["dynamic_batching"]["preferred_batch_size"] == [4] and g["version_policy"] == {"all": {}}
        # no batching: max_batch_size 0 and the whole shape, -1 where any size goes
        iris = http.get_model_config("iris")
        assert iris["max_batch_size"] == 0 and "dynamic_batching" not in iris
        assert iris["version_policy"] == {"latest": {"num_versions": 1}}
        assert [(t["name"], t["data_type"], t["dims"]) for t in iris["input"]] == [("input", "TYPE_FP32", [-1, 4])]
        assert {t["name"]: t["data_type"] for t in iris["output"]} == {"label": "TYPE_INT64",
                                                                      "probabilities": "TYPE_FP32"}
        # a Triton repository model answers what its config.pbtxt says
        tri = grpc.get_model_config("tri", as_json=True)["config"]
        assert tri["max_batch_size"] == 4 and tri["input"][0]["dims"] == ["3"]
        assert tri["dynamic_batching"] == {"max_queue_delay_microseconds": "500"}
        for call in (lambda: http.get_model_config("nope"), lambda: http.get_model_config("scale", "9")):
            with pytest.raises(InferenceServerException) as err:
                call()
            assert err.value.status() == "404"
        with pytest.raises(InferenceServerException) as err:
            grpc.get_model_config("nope")
        assert err.value.status() == "StatusCode.NOT_FOUND"
    finally:
        http.close()
        grpc.close()


def _infer(client: thttp.InferenceServerClient | tgrpc.InferenceServerClient, x: np.ndarray, request_id: str) -> None:
    module = thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc
    inp = module.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client.infer("scale", [inp], model_version="1", request_id=request_id)


def _numbers(stats: dict[str, Any]) -> dict[str, Any]:
    """The gRPC JSON form writes 64-bit integers as strings and leaves out zeros: as the REST form."""
    inference = stats["inference_stats"]
    return {
        "inference_count": int(stats.get("inference_count", 0)),
        "execution_count": int(stats.get("execution_count", 0)),
        **{k: int(inference.get(k, {}).get("count", 0))
           for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")},
    }


def test_statistics_and_access_log_count_what_ran(serve, repo: Path) -> None:
    server = serve(repo, "--poll-interval", "0", "--access-log-format", "json")
    http, grpc = _clients(server)
    try:
        for i in range(3):
            _infer(http, np.ones((2, 3), np.float32), f"h-ok-{i}")
        for i in range(2):
            _infer(grpc, np.ones((1, 3), np.float32), f"g-ok-{i}")
        for i, client in enumerate([http, http, grpc]):
            with pytest.raises(InferenceServerException):
                _infer(client, np.ones((2, 4), np.float32), f"bad-{i}")  # the model takes 3 columns
        with server.client() as c:
            assert c.post("/models/scale/versions/1/eval", json={"x": [[1, 2, 3]]},
                          headers={"x-request-id": "e-ok"}).status_code == 200

        want = {"inference_count": 3 * 2 + 2 * 1 + 1, "execution_count": 6, "success": 6, "fail": 3, "queue": 6,
                "compute_input": 6, "compute_infer": 6, "compute_output": 6}
        rest = http.get_inference_statistics("scale", "1")["model_stats"]
        assert [(s["name"], s["version"]) for s in rest] == [("scale", "1")]
        one = rest[0]
        assert _numbers(one) == want
        times = one["inference_stats"]
        assert all(times[k]["ns"] > 0 for k in ("success", "fail", "compute_input", "compute_infer", "compute_output"))
        assert times["success"]["ns"] > times["compute_infer"]["ns"]
        assert one["last_inference"] > 0
        assert _numbers(grpc.get_inference_statistics("scale", "1", as_json=True)["model_stats"][0]) == want

        # every ready version of a model, and of every model; versions not called count nothing
        both = http.get_inference_statistics("scale")["model_stats"]
        assert [(s["version"], s["inference_stats"]["success"]["count"]) for s in both] == [("1", 6), ("2", 0)]
        every = grpc.get_inference_statistics(as_json=True)["model_stats"]
        assert sorted((s["name"], s["version"]) for s in every) == [("iris", "1"), ("scale", "1"), ("scale", "2"),
                                                                    ("tri", "1")]
        with pytest.raises(InferenceServerException) as err:
            http.get_inference_statistics("nope")
        assert err.value.status() == "404"

        # one JSON line per inference request, with the client's request id
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        by_id = {line["request_id"]: line for line in lines}
        assert len(lines) == 9 and len(by_id) == 9
        assert {(k, v["protocol"], v["status"]) for k, v in by_id.items()} == {
            *((f"h-ok-{i}", "v2", "ok") for i in range(3)), *((f"g-ok-{i}", "grpc", "ok") for i in range(2)),
            ("bad-0", "v2", "invalid_argument"), ("bad-1", "v2", "invalid_argument"),
            ("bad-2", "grpc", "invalid_argument"), ("e-ok", "eval", "ok"),
        }
        assert all(line["model"] == "scale" and line["version"] == "1" and line["latency_ms"] > 0 for line in lines)
        assert all(line["time"].endswith("+00:00") for line in lines)
    finally:
        http.close()
        grpc.close()
