"""describe/eval with JSON: batches, single instances, named fields, errors and limits."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import numpy as np

from tests.builders import iris_onnx, ort_run, scale_onnx
from tests.builders_strings import string_concat_onnx

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def test_describe_and_eval_batch_and_single(serve, tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    server = serve(model)
    want = ort_run(model, {"input": X})
    with server.client() as c:
        d = c.get("/describe").json()
        assert d == c.get("/models/iris/describe").json() == c.get("/models/iris/versions/1/describe").json()
        assert d["inputs"] == [{"name": "input", "type": "float32", "shape": [-1, 4]}]
        batch = c.post("/eval", json={"input": X.tolist()}).json()
        assert batch["label"] == want["label"].tolist()
        np.testing.assert_allclose(batch["probabilities"], want["probabilities"], rtol=1e-6)
        one = c.post("/models/iris/eval", json={"input": X[1].tolist()}).json()
        want1 = ort_run(model, {"input": X[1:2]})
        assert one["label"] == int(want1["label"][0])
        np.testing.assert_allclose(one["probabilities"], want1["probabilities"][0], rtol=1e-6)
        ints = c.post("/eval", json={"input": [[5, 3, 1, 0]]})  # integers for a float input
        assert ints.status_code == 200
        listing = c.get("/models").json()["models"]
        assert listing[0]["name"] == "iris" and listing[0]["ready"]


def test_fields_mapping(serve, tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    (tmp_path / "iris.model.yaml").write_text(
        "fields:\n  input: {sepal_length: 0, sepal_width: 1, petal_length: 2, petal_width: 3}\n")
    server = serve(model)
    want = ort_run(model, {"input": X})
    with server.client() as c:
        names = [i["name"] for i in c.get("/describe").json()["inputs"]]
        assert names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        one = c.post("/eval", json=dict(zip(names, X[0].tolist(), strict=True))).json()
        assert one["label"] == int(want["label"][0])
        cols = {n: X[:, i].tolist() for i, n in enumerate(names)}
        batch = c.post("/eval", json=cols).json()
        np.testing.assert_allclose(batch["probabilities"], want["probabilities"], rtol=1e-6)
        # the tensor itself is still accepted
        assert c.post("/eval", json={"input": X.tolist()}).json()["label"] == want["label"].tolist()
        missing = c.post("/eval", json={"sepal_length": 1, "sepal_width": 2, "petal_length": 3})
        assert missing.status_code == 400 and "petal_width" in missing.json()["error"]


def test_string_and_numeric_single_instance(serve, tmp_path: Path) -> None:
    model = string_concat_onnx(tmp_path / "strings.onnx")
    server = serve(model)
    with server.client() as c:
        assert c.post("/eval", json={"text": "abc", "n": 4}).json() == {"echo": "abc!", "twice": 8}
        assert c.post("/eval", json={"text": ["a", "b"], "n": [1, 2]}).json() == {"echo": ["a!", "b!"],
                                                                                  "twice": [2, 4]}
        mixed = c.post("/eval", json={"text": ["a", "b"], "n": 1})
        assert mixed.status_code == 400 and "mix of single" in mixed.json()["error"]


def test_errors(serve, tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    server = serve(model, "--max-body-bytes", "4096")
    with server.client() as c:
        cases = [
            (c.post("/eval", content=b"{oops", headers={"content-type": "application/json"}), 400, "malformed"),
            (c.post("/eval", json=[1, 2]), 400, "JSON object"),
            (c.post("/eval", json={"inputx": [1, 2, 3, 4]}), 400, "unknown input 'inputx'"),
            (c.post("/eval", json={}), 400, "missing input 'input'"),
            (c.post("/eval", json={"input": [[1, 2, 3]]}), 400,
             "expects FP32 with shape [-1, 4], got shape [1, 3]"),
            (c.post("/eval", json={"input": [[1, 2, 3, 4], [1, 2]]}), 400, "rectangular"),
            (c.post("/eval", json={"input": [["a", "b", "c", "d"]]}), 400, "got strings"),
            (c.post("/eval", json={"input": [[1, 2, 3, None], [True, None, 1, 2]]}), 400, "null"),
            (c.post("/eval", content=b"x", headers={"content-type": "text/csv"}), 415, "text/csv"),
            (c.post("/eval", json={"input": [1, 2, 3, 4]}, headers={"accept": "application/xml"}), 406,
             "cannot answer"),
            (c.post("/models/nope/eval", json={}), 404, "nope"),
            (c.get("/models/iris/versions/3/describe"), 404, "version 3"),
            (c.post("/eval", json={"input": [[0.5] * 4] * 2000}), 413, "limit"),
            (c.get("/no/such/route"), 404, "no route"),
            (c.get("/eval"), 405, ""),
        ]
        for r, status, fragment in cases:
            assert r.status_code == status, (r.status_code, r.text)
            assert fragment in r.json()["error"], r.text
            assert "Traceback" not in r.text
        assert c.post("/eval", json={"input": [1, 2, 3, 4]}).status_code == 200
        # null is a missing value: a float input gets NaN, which reaches the model
        assert c.post("/eval", json={"input": [[1, 2, 3, None]]}).status_code == 200
    assert "Traceback" not in server.log()


def test_413_before_the_body_is_read(serve, tmp_path: Path) -> None:
    server = serve(iris_onnx(tmp_path / "iris.onnx"), "--max-body-bytes", "4096")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /eval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n" + b"[" * 100)
        started = time.monotonic()
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
        assert time.monotonic() - started < 10

    def chunks():
        for _ in range(100):
            yield b" " * 1024

    # no Content-Length (chunked): refused once the stream passes the limit
    r = httpx.post(server.url + "/eval", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_single_model_routes_refuse_with_several_models(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    iris_onnx(root / "iris.onnx")
    scale_onnx(root / "scale.onnx", 2.0)
    server = serve(root)
    with server.client() as c:
        r = c.get("/describe")
        assert r.status_code == 404 and "several models" in r.json()["error"]
        assert c.post("/models/scale/eval", json={"x": [1, 2, 3]}).json() == {"y": [2.0, 4.0, 6.0]}


def test_single_instance_beside_an_input_without_batch_axis(serve, tmp_path: Path) -> None:
    from tests.builders import scaled_by_input_onnx

    server = serve(scaled_by_input_onnx(tmp_path / "scaled.onnx"))
    with server.client() as c:
        assert c.post("/eval", json={"x": [1, 2, 3], "k": 2}).json() == {"y": [2.0, 4.0, 6.0]}
        assert c.post("/eval", json={"x": [[1, 2, 3]], "k": 3}).json() == {"y": [[3.0, 6.0, 9.0]]}


def test_bytes_that_are_not_text_get_400(serve, tmp_path: Path) -> None:
    import json
    import struct

    server = serve(string_concat_onnx(tmp_path / "strings.onnx"))
    blob = struct.pack("<I", 1) + b"\xff"
    header = json.dumps({"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}},
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [1]}]}).encode()
    with server.client() as c:
        r = c.post("/v2/models/strings/infer", content=header + blob,
                   headers={"Inference-Header-Content-Length": str(len(header))})
        assert r.status_code == 400 and "not UTF-8" in r.json()["error"]
