"""Open Inference Protocol v2 over REST: plain JSON, the binary extension, and tritonclient.http."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.builders import iris_onnx, ort_run
from tests.builders_strings import string_concat_onnx

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    string_concat_onnx(root / "strings" / "1" / "model.onnx")
    return root


def test_health_and_metadata(serve, repo: Path) -> None:
    server = serve(repo)
    with server.client() as c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").json() == {"ready": True}
        meta = c.get("/v2").json()
        assert meta["name"] == "mlport" and "binary_tensor_data" in meta["extensions"]
        m = c.get("/v2/models/iris").json()
        assert m["name"] == "iris" and m["versions"] == ["1"] and m["platform"] == "onnxruntime_onnx"
        assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert {o["name"]: o["datatype"] for o in m["outputs"]} == {"label": "INT64", "probabilities": "FP32"}
        assert c.get("/v2/models/iris/versions/1").status_code == 200
        assert c.get("/v2/models/iris/ready").status_code == 200
        assert c.get("/v2/models/iris/versions/1/ready").status_code == 200
        assert c.get("/v2/models/nope/ready").status_code == 404
        assert c.get("/v2/models/iris/versions/7").status_code == 404


def test_infer_json_matches_onnxruntime(serve, repo: Path) -> None:
    server = serve(repo)
    want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X})
    body = {"id": "req-1",
            "inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": X.ravel().tolist()}]}
    with server.client() as c:
        r = c.post("/v2/models/iris/infer", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["id"] == "req-1" and doc["model_name"] == "iris" and doc["model_version"] == "1"
        outs = {o["name"]: o for o in doc["outputs"]}
        assert outs["label"]["shape"] == [3] and outs["label"]["data"] == want["label"].tolist()
        np.testing.assert_allclose(np.array(outs["probabilities"]["data"]).reshape(3, 3), want["probabilities"],
                                   rtol=1e-6)
        # nested data, the versioned path and requested outputs
        body2 = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": X.tolist()}],
                 "outputs": [{"name": "label"}]}
        doc2 = c.post("/v2/models/iris/versions/1/infer", json=body2).json()
        assert [o["name"] for o in doc2["outputs"]] == ["label"]
        assert doc2["outputs"][0]["data"] == want["label"].tolist()


def test_infer_binary_extension_raw(serve, repo: Path) -> None:
    server = serve(repo)
    want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X})
    raw = X.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
    }).encode()
    with server.client() as c:
        r = c.post("/v2/models/iris/infer", content=header + raw,
                   headers={"Inference-Header-Content-Length": str(len(header)),
                            "Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        n = int(r.headers["inference-header-content-length"])
        doc = json.loads(r.content[:n])
        outs = {o["name"]: o for o in doc["outputs"]}
        assert outs["label"]["data"] == want["label"].tolist()
        size = outs["probabilities"]["parameters"]["binary_data_size"]
        probs = np.frombuffer(r.content[n : n + size], dtype="<f4").reshape(outs["probabilities"]["shape"])
        np.testing.assert_allclose(probs, want["probabilities"], rtol=1e-6)
        assert len(r.content) == n + size
        # Inference-Header-Content-Length: 0 -> the whole body is the single input's bytes
        r0 = c.post("/v2/models/iris/infer", content=raw, headers={"Inference-Header-Content-Length": "0"})
        assert r0.status_code == 200, r0.text
        assert {o["name"]: o["data"] for o in r0.json()["outputs"]}["label"] == want["label"].tolist()


def test_bytes_tensors_binary_and_json(serve, repo: Path) -> None:
    server = serve(repo)
    words = ["héllo", "", "a b"]
    ints = np.array([1, -4, 9], dtype=np.int64)
    enc = b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)
    header = json.dumps({
        "inputs": [
            {"name": "text", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(enc)}},
            {"name": "n", "shape": [3], "datatype": "INT64", "data": ints.tolist()},
        ],
        "parameters": {"binary_data_output": True},
    }).encode()
    with server.client() as c:
        r = c.post("/v2/models/strings/infer", content=header + enc,
                   headers={"Inference-Header-Content-Length": str(len(header))})
        assert r.status_code == 200, r.text
        n = int(r.headers["inference-header-content-length"])
        doc = json.loads(r.content[:n])
        pos = n
        got = {}
        for o in doc["outputs"]:
            size = o["parameters"]["binary_data_size"]
            got[o["name"]] = (o, r.content[pos : pos + size])
            pos += size
        o, blob = got["echo"]
        assert o["datatype"] == "BYTES"
        items, p = [], 0
        while p < len(blob):
            (k,) = struct.unpack_from("<I", blob, p)
            items.append(blob[p + 4 : p + 4 + k].decode())
            p += 4 + k
        assert items == [w + "!" for w in words]
        assert np.frombuffer(got["twice"][1], dtype="<i8").tolist() == (ints * 2).tolist()
        j = c.post("/v2/models/strings/infer", json={"inputs": [
            {"name": "text", "shape": [3], "datatype": "BYTES", "data": words},
            {"name": "n", "shape": [3], "datatype": "INT64", "data": ints.tolist()}]}).json()
        assert {o["name"]: o["data"] for o in j["outputs"]} == {"echo": [w + "!" for w in words],
                                                                "twice": (ints * 2).tolist()}


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_http(serve, repo: Path, binary: bool) -> None:
    server = serve(repo)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris")
        meta = client.get_model_metadata("iris")
        assert meta["inputs"][0]["name"] == "input"
        inp = triton.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        outs = [triton.InferRequestedOutput("probabilities", binary_data=binary),
                triton.InferRequestedOutput("label", binary_data=binary)]
        res = client.infer("iris", [inp], outputs=outs, request_id="abc")
        want = ort_run(repo / "iris" / "1" / "model.onnx", {"input": X})
        np.testing.assert_allclose(res.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)
        np.testing.assert_array_equal(res.as_numpy("label"), want["label"])
        assert res.get_response()["id"] == "abc"

        text = np.array([b"x", b"yz"], dtype=object)
        t_in = triton.InferInput("text", [2], "BYTES")
        t_in.set_data_from_numpy(text, binary_data=binary)
        n_in = triton.InferInput("n", [2], "INT64")
        n_in.set_data_from_numpy(np.array([3, 5], dtype=np.int64), binary_data=binary)
        res2 = client.infer("strings", [t_in, n_in],
                            outputs=[triton.InferRequestedOutput("echo", binary_data=binary),
                                     triton.InferRequestedOutput("twice", binary_data=binary)])
        assert [v.decode() if isinstance(v, bytes) else v for v in res2.as_numpy("echo")] == ["x!", "yz!"]
        assert res2.as_numpy("twice").tolist() == [6, 10]

        index = client.get_model_repository_index()
        assert {(m["name"], m["state"]) for m in index} == {("iris", "READY"), ("strings", "READY")}
        client.unload_model("strings")
        assert not client.is_model_ready("strings")
        with pytest.raises(InferenceServerException):
            client.infer("strings", [t_in, n_in])
        client.load_model("strings")
        assert client.is_model_ready("strings")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"inputs": []}', 400, "non-empty"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}', 400,
         "needs 4 values"),
        (b'{"inputs": [{"name": "other", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}', 400,
         "unknown input 'other'"),
        (b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}', 400,
         "expects FP32 with shape [-1, 4], got shape [1, 2]"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}', 400,
         "unknown datatype"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]}',
         400, "must be numbers"),
        (b'{"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}]}', 400,
         "rectangular"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}', 400, "neither 'data'"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],'
         b' "outputs": [{"name": "nope"}]}', 400, "unknown output 'nope'"),
    ],
)
def test_infer_errors(serve, repo: Path, body: bytes, status: int, fragment: str) -> None:
    server = serve(repo)
    with server.client() as c:
        r = c.post("/v2/models/iris/infer", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        assert fragment in r.json()["error"]
        assert "Traceback" not in r.text
        # the server keeps serving
        ok = c.post("/v2/models/iris/infer", json={"inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
        assert ok.status_code == 200


def test_binary_errors_and_unknown_model(serve, repo: Path) -> None:
    server = serve(repo)
    with server.client() as c:
        assert c.post("/v2/models/nope/infer", json={"inputs": []}).status_code == 404
        assert c.post("/v2/models/iris/versions/9/infer", json={"inputs": []}).status_code == 404
        header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 16}}]}).encode()
        short = c.post("/v2/models/iris/infer", content=header + b"\0" * 8,
                       headers={"Inference-Header-Content-Length": str(len(header))})
        assert short.status_code == 400 and "does not fit" in short.json()["error"]
        bad_len = c.post("/v2/models/iris/infer", content=header,
                         headers={"Inference-Header-Content-Length": "99999"})
        assert bad_len.status_code == 400
        nan_len = c.post("/v2/models/iris/infer", content=header,
                         headers={"Inference-Header-Content-Length": "x"})
        assert nan_len.status_code == 400
        raw_odd = c.post("/v2/models/iris/infer", content=b"\0" * 15, headers={"Inference-Header-Content-Length": "0"})
        assert raw_odd.status_code == 400
        assert c.post("/v2/repository/models/nope/load").status_code == 404
