"""mlport.client against a real server: every datatype over HTTP JSON, HTTP binary and gRPC, sync and async;
the describe/eval API with JSON and images; the repository; errors as ClientError."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlport.client import AsyncGrpcClient, AsyncHttpClient, ClientError, GrpcClient, HttpClient
from tests.builders import iris_onnx, ort_run, save_graph, scale_onnx
from tests.conftest import Server, start_server

# ---------------------------------------------------------------------------------- models

#: OIP datatype -> (ONNX element type name, numpy dtype)
DTYPES: dict[str, tuple[str, str]] = {
    "BOOL": ("BOOL", "bool"),
    "UINT8": ("UINT8", "uint8"),
    "UINT16": ("UINT16", "uint16"),
    "UINT32": ("UINT32", "uint32"),
    "UINT64": ("UINT64", "uint64"),
    "INT8": ("INT8", "int8"),
    "INT16": ("INT16", "int16"),
    "INT32": ("INT32", "int32"),
    "INT64": ("INT64", "int64"),
    "FP16": ("FLOAT16", "float16"),
    "FP32": ("FLOAT", "float32"),
    "FP64": ("DOUBLE", "float64"),
    "BYTES": ("STRING", "object"),
}


def echo_onnx(path: Path) -> Path:
    """One Identity per datatype: input 'in_<DT>' [N, M] -> output 'out_<DT>' [N, M]."""
    from onnx import TensorProto, helper

    ins, outs, nodes = [], [], []
    for dt, (elem, _) in DTYPES.items():
        code = getattr(TensorProto, elem)
        ins.append(helper.make_tensor_value_info(f"in_{dt}", code, ["N", "M"]))
        outs.append(helper.make_tensor_value_info(f"out_{dt}", code, ["N", "M"]))
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
    return save_graph(helper.make_graph(nodes, "echo", ins, outs), path)


def pixels_onnx(path: Path) -> Path:
    """An image model: 'image' UINT8 [N, H, W, 3] -> 'pixels' (the same) and 'brightness' FP32 [N] (the mean)."""
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])
    pixels = helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", "H", "W", 3])
    brightness = helper.make_tensor_value_info("brightness", TensorProto.FLOAT, ["N"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("Identity", ["image"], ["pixels"]),
        helper.make_node("Cast", ["image"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float", "axes"], ["brightness"], keepdims=0),
    ]
    return save_graph(helper.make_graph(nodes, "pixels", [image], [pixels, brightness], [axes]), path, opset=18)


def edge_values(dt: str, rows: int = 2) -> np.ndarray:
    """Extremes and ordinary values of a datatype, shape [rows, 4]."""
    np_type = DTYPES[dt][1]
    if dt == "BYTES":
        words = ["", "a", "héllo wörld", "日本語", "x" * 300, "tab\there", "0", "end"]
        return np.array((words * rows)[: rows * 4], dtype=object).reshape(rows, 4)
    if dt == "BOOL":
        return (np.arange(rows * 4).reshape(rows, 4) % 3 == 0)
    if np_type.startswith(("int", "uint")):
        info = np.iinfo(np_type)
        base = [info.min, info.max, 0, 1, info.max - 1, info.min + 1, 7, 2]
    else:
        info_f = np.finfo(np_type)
        base = [info_f.min, info_f.max, info_f.tiny, -0.0, 1.5, -2.25, np.float64(1 / 3), 1e-3]
    return np.array((base * rows)[: rows * 4], dtype=np_type).reshape(rows, 4)


def same(got: np.ndarray, want: np.ndarray, dt: str, label: str = "") -> None:
    what = f"{label} {dt}"
    assert got.shape == want.shape, what
    if dt == "BYTES":
        assert got.dtype == object, what
        assert got.tolist() == [[w.encode() for w in row] for row in want.tolist()], what
    else:
        assert got.dtype == want.dtype, what
        np.testing.assert_array_equal(got, want, err_msg=what)


X_IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client") / "models"
    echo_onnx(root / "echo" / "1" / "model.onnx")
    pixels_onnx(root / "pixels" / "1" / "model.onnx")
    iris_onnx(root / "iris" / "1" / "model.onnx")
    iris_onnx(root / "iris" / "2" / "model.onnx", c=0.05)
    (root / "iris" / "model.yaml").write_text("version_policy: {all: true}\n")
    scale_onnx(root / "spare" / "1" / "model.onnx", 3.0)
    scale_onnx(root / "big" / "1" / "model.onnx", 1.0, shape=(None, None))
    # slower than the clients' 50 ms timeouts on any machine (a compute-heavy model may take less on a fast one)
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    (root / "slow" / "model.yaml").write_text("trusted: true\n")
    return root


SLOW_MODEL = """
import time

class Model:
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
                 "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}]}

    def predict(self, inputs):
        time.sleep(0.5)
        return {"y": inputs["x"]}
"""


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(repo, "--poll-interval", "0", log_dir=tmp_path_factory.mktemp("logs"))
    yield s
    s.stop()


# ------------------------------------------------------------ one interface over four clients

Kind = str
KINDS = ["http-binary", "http-json", "grpc", "async-http-binary", "async-http-json", "async-grpc"]


def call(server: Server, kind: Kind, method: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``client.method(*args)`` on a fresh client of ``kind`` (async ones in their own event loop)."""
    binary = not kind.endswith("json")
    if not kind.startswith("async"):
        sync_client: HttpClient | GrpcClient = (
            GrpcClient(f"127.0.0.1:{server.grpc_port}") if kind == "grpc" else HttpClient(server.url, binary=binary)
        )
        with sync_client:
            return getattr(sync_client, method)(*args, **kwargs)

    async def run() -> Any:
        async_client: AsyncHttpClient | AsyncGrpcClient = (
            AsyncGrpcClient(f"127.0.0.1:{server.grpc_port}") if kind == "async-grpc"
            else AsyncHttpClient(server.url, binary=binary)
        )
        async with async_client:
            result: Awaitable[Any] = getattr(async_client, method)(*args, **kwargs)
            return await result

    return asyncio.run(run())


# ---------------------------------------------------------------------------------- datatypes


@pytest.mark.parametrize("kind", KINDS)
def test_every_datatype_round_trips(server: Server, kind: Kind) -> None:
    sent = {f"in_{dt}": edge_values(dt) for dt in DTYPES}
    if kind.endswith("json"):
        # JSON carries no NaN/infinity; UINT64 beyond INT64: see test_json_uint64_beyond_int64
        sent["in_UINT64"] = np.array([[0, 1, 2**53, 12345], [7, 2**40, 3, 4]], dtype=np.uint64)
    else:
        sent["in_FP32"][1, :3] = [np.inf, -np.inf, np.nan]
    got = call(server, kind, "infer", "echo", sent)
    assert set(got) == {f"out_{dt}" for dt in DTYPES}
    for dt in DTYPES:
        same(got[f"out_{dt}"], sent[f"in_{dt}"], dt, kind)


@pytest.mark.parametrize("kind", ["http-binary", "grpc", "async-http-json"])
def test_requested_outputs(server: Server, kind: Kind) -> None:
    x = np.arange(12, dtype=np.int16).reshape(3, 4)
    got = call(server, kind, "infer", "echo", {"in_INT16": x, "in_FP64": x.astype(np.float64), "in_BOOL": x > 3,
                                              **{f"in_{d}": edge_values(d, 3)[:, :4] for d in DTYPES
                                                 if d not in ("INT16", "FP64", "BOOL")}},
               outputs=["out_INT16", "out_BOOL"], version=1)
    assert set(got) == {"out_INT16", "out_BOOL"}
    same(got["out_INT16"], x, "INT16")
    same(got["out_BOOL"], x > 3, "BOOL")




@pytest.mark.parametrize("kind", ["http-binary", "http-json", "grpc", "async-grpc"])
def test_empty_batches(server: Server, kind: Kind) -> None:
    empty = {f"in_{dt}": edge_values(dt)[:0] for dt in DTYPES}
    got = call(server, kind, "infer", "echo", empty)
    for dt in DTYPES:
        same(got[f"out_{dt}"], empty[f"in_{dt}"], dt, kind)


@pytest.mark.parametrize("kind", ["http-binary", "grpc", "async-grpc"])
def test_large_tensors(server: Server, kind: Kind) -> None:
    """A 16 MiB tensor each way (past gRPC's 4 MiB default message limit)."""
    x = np.random.default_rng(1).standard_normal((2048, 2048), dtype=np.float32)
    got = call(server, kind, "infer", "big", {"x": x})
    np.testing.assert_array_equal(got["y"], x)
    got["y"][0, 0] = 1.0  # answers are the caller's arrays to change


def test_json_uint64_beyond_int64(server: Server) -> None:
    sent = {f"in_{dt}": edge_values(dt) for dt in DTYPES}
    got = call(server, "http-json", "infer", "echo", sent, outputs=["out_UINT64"])
    same(got["out_UINT64"], sent["in_UINT64"], "UINT64")


# ------------------------------------------------------------------ models matched to onnxruntime


@pytest.mark.parametrize("kind", KINDS)
def test_iris_matches_onnxruntime_on_each_version(server: Server, repo: Path, kind: Kind) -> None:
    for version in (1, 2):
        want = ort_run(repo / "iris" / str(version) / "model.onnx", {"input": X_IRIS})
        got = call(server, kind, "infer", "iris", {"input": X_IRIS}, version=version, request_id="r-1",
                   parameters={"tag": "x", "n": 2, "flag": True, "f": 0.5})
        assert got["label"].dtype == np.int64 and got["label"].tolist() == want["label"].tolist()
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    # no version: the latest
    latest = call(server, kind, "infer", "iris", {"input": X_IRIS}, outputs=["probabilities"])
    want2 = ort_run(repo / "iris" / "2" / "model.onnx", {"input": X_IRIS})
    np.testing.assert_allclose(latest["probabilities"], want2["probabilities"], rtol=1e-6)


# ------------------------------------------------------------------------------- the eval API


@pytest.mark.parametrize("kind", ["http-binary", "async-http-json"])
def test_describe_and_eval(server: Server, repo: Path, kind: Kind) -> None:
    described = call(server, kind, "describe", "iris")
    assert described["inputs"] == [{"name": "input", "type": "float32", "shape": [-1, 4]}]
    assert {o["name"] for o in described["outputs"]} == {"label", "probabilities"}
    want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X_IRIS})
    batch = call(server, kind, "eval", "iris", {"input": X_IRIS}, version="1")
    assert batch["label"].tolist() == want["label"].tolist()
    np.testing.assert_allclose(batch["probabilities"], want["probabilities"], rtol=1e-6)
    # one instance: answered without the batch axis
    one = call(server, kind, "eval", "iris", {"input": X_IRIS[1].tolist()}, version=1)
    want_one = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X_IRIS[1:2]})
    assert one["label"].shape == () and int(one["label"]) == want_one["label"][0]
    np.testing.assert_allclose(one["probabilities"], want_one["probabilities"][0], rtol=1e-6)
    # text values: bytes and str arrays travel as JSON strings
    texts = call(server, kind, "eval", "echo", {
        **{f"in_{dt}": edge_values(dt, 1) for dt in DTYPES if dt not in ("BYTES", "FP16", "UINT64")},
        "in_FP16": np.ones((1, 4), dtype=np.float16), "in_UINT64": np.ones((1, 4), dtype=np.uint64),
        "in_BYTES": np.array([[b"a", "b", "\u00e9", ""]], dtype=object)})
    assert texts["out_BYTES"].tolist() == [["a", "b", "\u00e9", ""]]


def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["http-binary", "async-http-binary"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_eval_image(server: Server, kind: Kind, fmt: str) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    data = _png(pixels, fmt)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # for JPEG: not the originals
    got = call(server, kind, "eval_image", "pixels", data)
    assert got["pixels"].shape == (6, 9, 3)  # one image: no batch axis
    assert got["pixels"].tolist() == decoded.tolist()
    assert float(got["brightness"]) == pytest.approx(decoded.mean(), rel=1e-5)
    if fmt == "PNG":
        assert got["pixels"].tolist() == pixels.tolist()


def test_eval_image_errors(server: Server) -> None:
    with HttpClient(server.url) as client:
        with pytest.raises(ValueError, match="neither PNG nor JPEG"):
            client.eval_image("pixels", b"GIF89a...")
        with pytest.raises(ClientError) as err:
            client.eval_image("pixels", b"\x89PNG\r\n\x1a\n-truncated")
        assert err.value.status == 400 and err.value.code == "INVALID_ARGUMENT"
        with pytest.raises(ClientError) as err:
            client.eval_image("iris", _png(np.zeros((4, 4, 3), dtype=np.uint8)))
        assert err.value.status == 415 and "image-shaped input" in err.value.message
        with pytest.raises(ClientError) as err:
            client.eval_image("pixels", b"not an image", media_type="image/gif")
        assert err.value.status == 415


# ------------------------------------------------------------------ health, metadata, repository


@pytest.mark.parametrize("kind", ["http-binary", "grpc", "async-http-binary", "async-grpc"])
def test_health_metadata_and_repository(server: Server, kind: Kind) -> None:
    assert call(server, kind, "live") is True
    assert call(server, kind, "ready") is True
    assert call(server, kind, "model_ready", "iris") is True
    assert call(server, kind, "model_ready", "iris", 2) is True
    assert call(server, kind, "model_ready", "iris", 9) is False
    assert call(server, kind, "model_ready", "nope") is False
    meta = call(server, kind, "metadata", "iris")
    assert meta["name"] == "iris" and sorted(meta["versions"]) == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert call(server, kind, "metadata", "iris", "1")["name"] == "iris"
    info = call(server, kind, "server_metadata")
    assert info["name"] == "mlport" and "model_repository" in info["extensions"]
    rows = {(r["name"], r["version"]): r["state"] for r in call(server, kind, "models")}
    assert rows[("iris", "1")] == rows[("iris", "2")] == rows[("echo", "1")] == "READY"


@pytest.mark.parametrize("kind", ["http-binary", "async-grpc"])
def test_unload_and_load(server: Server, kind: Kind) -> None:
    x = np.ones((2, 3), dtype=np.float32)
    call(server, kind, "unload", "spare")
    try:
        assert call(server, kind, "model_ready", "spare") is False
        with pytest.raises(ClientError) as err:
            call(server, kind, "infer", "spare", {"x": x})
        assert err.value.code == "UNAVAILABLE" and err.value.status == 503 and "unloaded" in err.value.message
    finally:
        call(server, kind, "load", "spare")
    assert call(server, kind, "model_ready", "spare") is True
    np.testing.assert_array_equal(call(server, kind, "infer", "spare", {"x": x})["y"], x * 3)
    with pytest.raises(ClientError) as err:
        call(server, kind, "load", "nope")
    assert err.value.code == "NOT_FOUND"


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_are_client_errors(server: Server, kind: Kind) -> None:
    x = np.ones((2, 3), dtype=np.float32)
    not_found: list[tuple[str, tuple[Any, ...]]] = [
        ("infer", ("nope", {"x": x})), ("metadata", ("nope",)), ("infer", ("spare", {"x": x}, None, 7))]
    for method, args in not_found:
        with pytest.raises(ClientError) as err:
            call(server, kind, method, *args)
        assert err.value.code == "NOT_FOUND" and err.value.status == 404, (method, args)
        assert "nope" in err.value.message or "version 7" in err.value.message
    with pytest.raises(ClientError) as err:
        call(server, kind, "infer", "spare", {"x": np.full((2, 3), "text", dtype=object)})
    assert err.value.code == "INVALID_ARGUMENT" and err.value.status == 400
    assert "'x' expects FP32" in err.value.message and "strings" in err.value.message
    with pytest.raises(ClientError) as err:
        call(server, kind, "infer", "spare", {"x": np.ones((2, 5), dtype=np.float32)})
    assert err.value.status == 400 and "shape" in err.value.message
    with pytest.raises(ClientError) as err:
        call(server, kind, "infer", "spare", {"nope": x})
    assert err.value.status == 400 and "nope" in err.value.message
    assert "Traceback" not in str(err.value)


def test_http_only_errors(server: Server) -> None:
    with HttpClient(server.url) as client:
        with pytest.raises(ClientError) as err:
            client.eval("nope", {"x": [1.0]})
        assert err.value.status == 404 and str(err.value).startswith("[404 NOT_FOUND] model 'nope'")
        with pytest.raises(ClientError) as err:
            client.describe("nope")
        assert err.value.status == 404
        with pytest.raises(ClientError) as err:
            client.eval("spare", {"x": [[1.0, 2.0]]})
        assert err.value.status == 400 and "expects FP32 with shape [-1, 3]" in err.value.message


def test_caller_mistakes_raise_before_sending(server: Server) -> None:
    with HttpClient(server.url, binary=False) as client:
        with pytest.raises(ValueError, match="NaN or infinity"):
            client.infer("spare", {"x": np.array([[np.nan, 1, 2]], dtype=np.float32)})
        with pytest.raises(ValueError, match="not UTF-8"):
            client.infer("echo", {"in_BYTES": np.array([[b"\xff"]], dtype=object)})
        with pytest.raises(ValueError, match="no tensor datatype"):
            client.infer("spare", {"x": np.ones((1, 3), dtype=np.complex64)})
        with pytest.raises(ValueError, match="at least one input"):
            client.infer("spare", {})
    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as grpc_client, pytest.raises(ValueError, match="bytes or str"):
        grpc_client.infer("echo", {"in_BYTES": np.array([[1, 2]], dtype=object)})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_timeouts_and_limits(server: Server) -> None:
    port = _closed_port()
    with HttpClient(f"127.0.0.1:{port}", timeout=5) as client, pytest.raises(ClientError) as err:
        client.live()
    assert err.value.code == "UNAVAILABLE" and err.value.status is None
    with GrpcClient(f"127.0.0.1:{port}", timeout=5) as grpc_client, pytest.raises(ClientError) as err:
        grpc_client.live()
    assert err.value.code == "UNAVAILABLE"

    x = np.ones((2, 2), dtype=np.float32)
    with HttpClient(server.url) as client, pytest.raises(ClientError) as err:
        client.infer("slow", {"x": x}, timeout=0.05)
    assert err.value.code == "DEADLINE_EXCEEDED" and err.value.status is None
    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as grpc_client, pytest.raises(ClientError) as err:
        grpc_client.infer("slow", {"x": x}, timeout=0.05)
    assert err.value.code == "DEADLINE_EXCEEDED" and err.value.status == 504

    big = {f"in_{dt}": edge_values(dt, 100) for dt in DTYPES}
    with HttpClient(server.url, max_response_bytes=10_000) as client, pytest.raises(ClientError) as err:
        client.infer("echo", big)
    assert err.value.code == "RESOURCE_EXHAUSTED" and "max_response_bytes" in err.value.message
    with GrpcClient(f"127.0.0.1:{server.grpc_port}", max_message_bytes=10_000) as grpc_client:
        with pytest.raises(ClientError) as err:
            grpc_client.infer("echo", big)
        assert err.value.code == "RESOURCE_EXHAUSTED"
    with pytest.raises(ValueError, match="timeout"):
        HttpClient(server.url, timeout=0)


def test_async_clients_run_concurrently(server: Server, repo: Path) -> None:
    want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X_IRIS})

    async def run() -> list[dict[str, np.ndarray]]:
        async with AsyncHttpClient(server.url) as h, AsyncGrpcClient(f"127.0.0.1:{server.grpc_port}") as g:
            calls: list[Callable[[], Awaitable[dict[str, np.ndarray]]]] = []
            for i in range(8):
                client: AsyncHttpClient | AsyncGrpcClient = h if i % 2 else g
                calls.append(lambda c=client: c.infer("iris", {"input": X_IRIS}, version=1))
            return await asyncio.gather(*(c() for c in calls))

    for got in asyncio.run(run()):
        assert got["label"].tolist() == want["label"].tolist()


# ------------------------------------------------------------------ KServe's Python client

# KServe's client does not install into this environment without changing installed versions (pandas,
# pydantic...), so it runs from a virtualenv of its own that sees this environment's packages.
KSERVE_SCRIPT = r'''
import asyncio, json, sys
import grpc, httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as kpb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

http_url, grpc_target, work = sys.argv[1:4]
arrays = dict(np.load(f"{work}/inputs.npz"))
with open(f"{work}/texts.json") as f:
    arrays["in_BYTES"] = np.array([[t.encode() for t in row] for row in json.load(f)], dtype=object)
DT = {"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "int8": "INT8",
      "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16", "float32": "FP32",
      "float64": "FP64", "object": "BYTES"}
ECHO = [n for n in arrays if n.startswith("in_")]
numeric, texts, facts = {}, {}, {}


def request(model, names, binary, **kw):
    inputs = []
    for n in names:
        inp = InferInput(n, list(arrays[n].shape), DT[str(arrays[n].dtype)])
        inp.set_data_from_numpy(arrays[n], binary_data=binary)
        inputs.append(inp)
    return InferRequest(model, inputs, request_id="kserve-1", **kw)


def keep(label, response):
    facts[label + "/model_name"] = response.model_name
    for out in response.outputs:
        arr = out.as_numpy()
        if arr.dtype == object:
            texts[f"{label}/{out.name}"] = [[v.decode() if isinstance(v, bytes) else v for v in row]
                                            for row in arr.tolist()]
        else:
            numeric[f"{label}/{out.name}"] = arr


async def main():
    config = RESTConfig(protocol="v2", retries=0, timeout=60)
    async with InferenceRESTClient(config) as rest:
        facts["rest_live"] = await rest.is_server_live(http_url)
        facts["rest_ready"] = await rest.is_server_ready(http_url)
        facts["rest_model_ready"] = await rest.is_model_ready(http_url, "iris")
        facts["rest_model_ready_nope"] = await rest.is_model_ready(http_url, "nope")
        keep("rest_binary_in", await rest.infer(http_url, request("echo", ECHO, True), model_name="echo"))
        keep("rest_binary_both", await rest.infer(
            http_url, request("echo", ECHO, True, parameters={"binary_data_output": True}), model_name="echo"))
        keep("rest_json", await rest.infer(http_url, request("iris", ["input"], False), model_name="iris"))
        try:
            await rest.infer(http_url, request("nope", ["input"], False), model_name="nope")
        except httpx.HTTPStatusError as exc:
            facts["rest_error"] = [exc.response.status_code, str(exc)]
    async with InferenceGRPCClient(grpc_target, retries=0, timeout=60) as client:
        facts["grpc_live"] = await client.is_server_live()
        facts["grpc_ready"] = await client.is_server_ready()
        facts["grpc_model_ready"] = await client.is_model_ready("iris")
        facts["grpc_model_ready_nope"] = await client.is_model_ready("nope")
        keep("grpc", await client.infer(request("echo", ECHO, True)))
        keep("grpc_iris", await client.infer(request("iris", ["input"], True)))
        try:
            await client.infer(request("nope", ["input"], True))
        except grpc.RpcError as exc:
            facts["grpc_error"] = [exc.code().name, exc.details()]
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        meta = await GRPCInferenceServiceStub(channel).ModelMetadata(kpb.ModelMetadataRequest(name="iris"))
        facts["grpc_metadata"] = {"name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
                                  "inputs": [[t.name, t.datatype, list(t.shape)] for t in meta.inputs]}


asyncio.run(main())
np.savez(f"{work}/numeric.npz", **numeric)
with open(f"{work}/facts.json", "w") as f:
    json.dump({"facts": facts, "texts": texts}, f)
'''


@pytest.mark.slow
def test_kserve_client(server: Server, repo: Path, kserve_python: Path, tmp_path: Path) -> None:
    import json
    import subprocess

    sent = {f"in_{dt}": edge_values(dt) for dt in DTYPES if dt != "BYTES"}
    sent["in_FP32"][1, :3] = [np.inf, -np.inf, np.nan]
    texts = edge_values("BYTES").tolist()
    np.savez(tmp_path / "inputs.npz", **sent, input=X_IRIS)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = tmp_path / "kserve_client.py"
    script.write_text(KSERVE_SCRIPT)
    done = subprocess.run([str(kserve_python), str(script), server.url, f"127.0.0.1:{server.grpc_port}",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads((tmp_path / "facts.json").read_text())
    facts, got_texts = doc["facts"], doc["texts"]
    numeric = dict(np.load(tmp_path / "numeric.npz"))

    for key in ("rest_live", "rest_ready", "rest_model_ready", "grpc_live", "grpc_ready", "grpc_model_ready"):
        assert facts[key] is True, key
    assert facts["rest_model_ready_nope"] is False and facts["grpc_model_ready_nope"] is False
    # every datatype, through KServe's REST binary form (answers in JSON and in binary) and its gRPC raw form
    for label in ("rest_binary_in", "rest_binary_both", "grpc"):
        assert facts[f"{label}/model_name"] == "echo"
        for dt in DTYPES:
            if dt == "BYTES":
                assert got_texts[f"{label}/out_BYTES"] == texts, label
                continue
            got, want = numeric[f"{label}/out_{dt}"], sent[f"in_{dt}"]
            if label == "rest_binary_in" and dt in ("FP32", "FP64", "FP16"):
                got, want = got[0], want[0]  # JSON answers cannot carry the NaN/infinity of row 1
            assert got.dtype == want.dtype, (label, dt)
            np.testing.assert_array_equal(got, want, err_msg=f"{label} {dt}")
    want = ort_run(repo / "iris" / "2" / "model.onnx", {"input": X_IRIS})
    for label in ("rest_json", "grpc_iris"):
        assert numeric[f"{label}/label"].tolist() == want["label"].tolist(), label
        np.testing.assert_allclose(numeric[f"{label}/probabilities"], want["probabilities"], rtol=1e-6)
    status, message = facts["rest_error"]
    assert status == 404 and "model 'nope' is not served here" in message
    assert facts["grpc_error"] == ["NOT_FOUND", "model 'nope' is not served here"]
    assert facts["grpc_metadata"] == {"name": "iris", "versions": ["2", "1"], "platform": "onnxruntime_onnx",
                                      "inputs": [["input", "FP32", [-1, 4]]]}
