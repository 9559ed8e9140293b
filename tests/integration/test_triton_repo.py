"""A Triton model repository (config.pbtxt per model, versioned ONNX files) served unchanged, checked with
tritonclient over HTTP and gRPC against onnxruntime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.builders import iris_onnx, ort_run, scale_onnx
from tests.builders_strings import string_concat_onnx
from tests.conftest import Server, start_server

X_IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
X3 = np.arange(15, dtype=np.float32).reshape(5, 3) / 7

IRIS = """
name: "iris"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ -1, 4 ]
  }
]
output [
  {
    name: "label"
    data_type: TYPE_INT64
    dims: [ -1 ]
  },
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ -1, 3 ]
  }
]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""

# a batching model: dims leave out the batch axis; only versions 1 and 3 serve
SCALE = """
name: "scale"
backend: "onnxruntime"
max_batch_size: 8
version_policy: { specific: { versions: [ 1, 3 ] } }
input { name: "x" data_type: TYPE_FP32 dims: [ 3 ] }
output { name: "y" data_type: TYPE_FP32 dims: [ 3 ] }
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 200 }
"""

LATEST2 = """
platform: "onnxruntime_onnx"
version_policy: { latest: { num_versions: 2 } }
"""

STRINGS = """
name: "strings"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [
  { name: "text" data_type: TYPE_STRING dims: [ ] },
  { name: "n" data_type: TYPE_INT64 dims: [ ] }
]
output [
  { name: "echo" data_type: TYPE_STRING dims: [ ] },
  { name: "twice" data_type: TYPE_INT64 dims: [ ] }
]
"""

PICKED = """
platform: "onnxruntime_onnx"
default_model_filename: "net.onnx"
"""

# batching, with Triton's usual reshape of a [batch] output to dims [1]
RESHAPED = """
platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "input" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } }
output { name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }
output { name: "probabilities" data_type: TYPE_FP32 dims: [ 3 ] }
"""

# malformed: the input message is never closed
BROKEN = """
name: "broken"
platform: "onnxruntime_onnx"
input { name: "x" data_type: TYPE_FP32 dims: [ 3 ]
"""

# well-formed, but it declares an input the model does not have
MISMATCH = """
platform: "onnxruntime_onnx"
input { name: "nope" data_type: TYPE_FP32 dims: [ -1, 3 ] }
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    (root / "iris" / "config.pbtxt").write_text(IRIS)
    iris_onnx(root / "reshaped" / "1" / "model.onnx")
    (root / "reshaped" / "config.pbtxt").write_text(RESHAPED)
    for v in (1, 2, 3):
        scale_onnx(root / "scale" / str(v) / "model.onnx", float(10 * v))
        scale_onnx(root / "latest2" / str(v) / "model.onnx", float(v))
    (root / "scale" / "config.pbtxt").write_text(SCALE)
    (root / "latest2" / "config.pbtxt").write_text(LATEST2)
    string_concat_onnx(root / "strings" / "1" / "model.onnx")
    (root / "strings" / "config.pbtxt").write_text(STRINGS)
    scale_onnx(root / "picked" / "1" / "net.onnx", 5.0)
    scale_onnx(root / "picked" / "1" / "model.onnx", 7.0)
    (root / "picked" / "config.pbtxt").write_text(PICKED)
    scale_onnx(root / "broken" / "1" / "model.onnx", 1.0)
    (root / "broken" / "config.pbtxt").write_text(BROKEN)
    scale_onnx(root / "mismatch" / "1" / "model.onnx", 1.0)
    (root / "mismatch" / "config.pbtxt").write_text(MISMATCH)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(repo, "--poll-interval", "0", log_dir=tmp_path_factory.mktemp("logs"))
    yield s
    s.stop()


@pytest.fixture
def http(server: Server) -> Iterator[thttp.InferenceServerClient]:
    client = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()


@pytest.fixture
def grpc_client(server: Server) -> Iterator[tgrpc.InferenceServerClient]:
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


def _infer(client: thttp.InferenceServerClient | tgrpc.InferenceServerClient, model: str,
           feed: dict[str, np.ndarray], version: str = "") -> dict[str, np.ndarray]:
    module = thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc
    inputs = []
    for name, arr in feed.items():
        datatype = "BYTES" if arr.dtype == object else {"float32": "FP32", "int64": "INT64"}[str(arr.dtype)]
        inp = module.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    result = client.infer(model, inputs, model_version=version)
    names = [o["name"] for o in result.get_response()["outputs"]] if module is thttp else [
        o.name for o in result.get_response().outputs]
    return {n: result.as_numpy(n) for n in names}


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest) -> thttp.InferenceServerClient | tgrpc.InferenceServerClient:
    return request.getfixturevalue("http" if request.param == "http" else "grpc_client")


def _meta(client: thttp.InferenceServerClient | tgrpc.InferenceServerClient, name: str) -> dict[str, object]:
    meta = client.get_model_metadata(name, as_json=True) if isinstance(client, tgrpc.InferenceServerClient) \
        else client.get_model_metadata(name)
    for t in [*meta["inputs"], *meta["outputs"]]:
        t["shape"] = [int(d) for d in t["shape"]]  # the gRPC JSON form writes int64 as strings
    return meta


def test_iris_matches_onnxruntime(client: thttp.InferenceServerClient | tgrpc.InferenceServerClient,
                                  repo: Path) -> None:
    want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X_IRIS})
    got = _infer(client, "iris", {"input": X_IRIS})
    assert got["label"].dtype == np.int64 and got["label"].tolist() == want["label"].tolist()
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    meta = _meta(client, "iris")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]


def test_max_batch_size_and_version_policy(client: thttp.InferenceServerClient | tgrpc.InferenceServerClient,
                                           repo: Path) -> None:
    meta = _meta(client, "scale")
    # max_batch_size 8 with dims [3]: served as [-1, 3]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert sorted(meta["versions"]) == ["1", "3"]
    assert client.is_model_ready("scale", "1") and client.is_model_ready("scale", "3")
    assert not client.is_model_ready("scale", "2")
    for version, path in (("", "3"), ("1", "1"), ("3", "3")):
        want = ort_run(repo / "scale" / path / "model.onnx", {"x": X3})
        np.testing.assert_array_equal(_infer(client, "scale", {"x": X3}, version)["y"], want["y"])
    with pytest.raises(InferenceServerException):
        _infer(client, "scale", {"x": X3}, "2")
    # the latest two of three
    assert sorted(_meta(client, "latest2")["versions"]) == ["2", "3"]
    assert not client.is_model_ready("latest2", "1")
    np.testing.assert_array_equal(_infer(client, "latest2", {"x": X3}, "2")["y"], X3 * 2)


def test_strings_and_model_file_choice(client: thttp.InferenceServerClient | tgrpc.InferenceServerClient,
                                       repo: Path) -> None:
    words = np.array(["héllo".encode(), b"", b"a b"], dtype=object)
    ints = np.array([1, -4, 9], dtype=np.int64)
    got = _infer(client, "strings", {"text": words, "n": ints})
    assert [v.decode() for v in got["echo"]] == ["héllo!", "!", "a b!"]
    assert got["twice"].tolist() == [2, -8, 18]
    assert _meta(client, "strings")["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1]}, {"name": "n", "datatype": "INT64", "shape": [-1]}]
    # default_model_filename picks net.onnx (y = 5x), not model.onnx (y = 7x)
    want = ort_run(repo / "picked" / "1" / "net.onnx", {"x": X3})
    np.testing.assert_array_equal(_infer(client, "picked", {"x": X3})["y"], want["y"])


def test_bad_configs_show_in_the_index(http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient,
                                       server: Server) -> None:
    rows = {r["name"]: r for r in http.get_model_repository_index()}
    assert rows["iris"]["state"] == "READY" and rows["scale"]["state"] == "READY"
    assert rows["broken"]["state"] == "UNAVAILABLE"
    assert rows["broken"]["reason"].startswith('config.pbtxt, line 4, column 50: Expected "}".')  # protobuf's
    assert rows["mismatch"]["state"] == "UNAVAILABLE"
    assert "the config declares input 'nope', which the model does not have" in rows["mismatch"]["reason"]
    grpc_rows = {r["name"]: r for r in grpc_client.get_model_repository_index(as_json=True)["models"]}
    assert grpc_rows["broken"]["reason"] == rows["broken"]["reason"]
    assert not http.is_model_ready("broken") and not grpc_client.is_model_ready("broken")
    with pytest.raises(InferenceServerException) as err:
        _infer(http, "broken", {"x": X3})
    assert "config.pbtxt, line 4" in str(err.value)
    # the unused fields are named once in the log
    log = server.log()
    assert log.count("model iris: config.pbtxt: fields mlport does not use are ignored: instance_group") == 1


def test_unknown_model_is_not_found(http: thttp.InferenceServerClient,
                                    grpc_client: tgrpc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as err:
        _infer(http, "nope", {"x": X3})
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException) as err:
        _infer(grpc_client, "nope", {"x": X3})
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_reshape(client, repo: Path) -> None:
    want = ort_run(repo / "reshaped" / "1" / "model.onnx", {"input": X_IRIS})
    got = _infer(client, "reshaped", {"input": X_IRIS.reshape(3, 2, 2)})
    assert got["label"].shape == (3, 1) and got["label"][:, 0].tolist() == want["label"].tolist()
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    meta = _meta(client, "reshaped")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2, 2]}]
    assert meta["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [-1, 1]}
