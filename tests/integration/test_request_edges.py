"""Requests at the edges, against one real server: deep JSON at every JSON entry point, strings with NUL bytes
over every protocol, null as a missing value, and gray images for inputs without a channel axis."""

from __future__ import annotations

import base64
import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image

from tests.builders import iris_onnx
from tests.conftest import Server, start_server
from tests.hubutil import ready_versions, start_hub, wait_for

DEEP = b"[" * 50_000 + b"]" * 50_000
#: Deep, and within the 64 KiB a feedback body may have.
DEEP_SMALL = b"[" * 20_000 + b"]" * 20_000
TEXTS = ["a\u0000b", "\u0000", "", "tail\u0000\u0000", "\u00e9\u0000"]

_ECHO = '''
import numpy as np


class Model:
    signature = {{
        "inputs": [{{"name": "x", "datatype": "{dt}", "shape": {shape}}}],
        "outputs": [{{"name": "out", "datatype": "{dt}", "shape": {shape}}}],
    }}

    def predict(self, inputs):
        return {{"out": inputs["x"]}}
'''


def _echo(root: Path, name: str, datatype: str, shape: list[int]) -> None:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(_ECHO.format(dt=datatype, shape=shape))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("models")
    _echo(root, "text", "BYTES", [-1])
    _echo(root, "num", "FP64", [-1])
    _echo(root, "count", "INT64", [-1])
    _echo(root, "flag", "BOOL", [-1])
    _echo(root, "digit", "UINT8", [4, 5])
    _echo(root, "digits", "UINT8", [-1, 4, 5])
    logs = tmp_path_factory.mktemp("logs")
    srv = start_server(root, "--trusted", log_dir=logs)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    message: str = r.json()["error"]
    return message


# ------------------------------------------------------------------------------------------------ deep JSON
def _oip_deep(where: str) -> bytes:
    head = b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1]'
    if where == "data":
        return head + b', "data": ' + DEEP + b"}]}"
    return head + b', "data": [1]}], "parameters": {"p": ' + DEEP + b"}}"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v2/models/num/infer", _oip_deep("data")),
    ("POST", "/v2/models/num/infer", _oip_deep("parameters")),
    ("POST", "/v2/models/num/versions/1/infer", _oip_deep("parameters")),
    ("POST", "/models/num/eval", b'{"x": ' + DEEP + b"}"),
    ("POST", "/v1/models/num:predict", b'{"instances": ' + DEEP + b"}"),
    ("POST", "/v1/models/num:predict", b'{"instances": [NaN], "x": ' + DEEP + b"}"),
    ("POST", "/models/num/feedback", b'{"id": "q", "reward": ' + DEEP_SMALL + b"}"),
    ("POST", "/v2/repository/index", b'{"ready": ' + DEEP + b"}"),
    ("POST", "/v2/repository/models/num/load", b'{"parameters": ' + DEEP + b"}"),
    ("POST", "/v2/repository/models/num/unload", b'{"parameters": ' + DEEP + b"}"),
], ids=["oip-data", "oip-parameters", "oip-version", "eval", "tfs", "tfs-nan", "feedback", "index", "load",
        "unload"])
def test_deep_json_is_a_400_at_every_entry_point(http: httpx.Client, method: str, path: str, body: bytes) -> None:
    r = http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert "depth limit exceeded" in _error(r, 400)
    # the model is still served (the unload body was refused before anything happened)
    assert http.get("/v2/models/num/ready").status_code == 200


def test_deep_json_in_a_multipart_part(http: httpx.Client) -> None:
    r = http.post("/models/num/eval", files={"x": ("x.json", DEEP, "application/json")})
    assert "depth limit exceeded" in _error(r, 400)
    r = http.post("/models/num/eval", files={"x": (None, DEEP, "text/plain")})
    assert "depth limit exceeded" in _error(r, 400)


def test_repository_calls_still_take_their_bodies(http: httpx.Client) -> None:
    assert http.post("/v2/repository/models/num/load", json={"parameters": {}}).status_code == 200
    assert http.post("/v2/repository/models/num/load").status_code == 200
    assert "JSON object" in _error(http.post("/v2/repository/models/num/unload", json=[1]), 400)
    assert http.get("/v2/models/num/ready").status_code == 200


# ------------------------------------------------------------------------------------------ strings with NUL
def _oip_text(values: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [len(values)], "data": values}]}


def test_nul_strings_round_trip_over_oip_json_and_binary(http: httpx.Client) -> None:
    r = http.post("/v2/models/text/infer", json=_oip_text(TEXTS))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == TEXTS
    # binary in and out, with bytes that are not text
    raw = [b"a\x00b", b"\x00", b"\xff\xfe\x00", b""]
    blob = b"".join(struct.pack("<I", len(v)) + v for v in raw)
    header = (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [4], "parameters": {"binary_data_size": '
              + str(len(blob)).encode() + b'}}], "outputs": [{"name": "out", "parameters": {"binary_data": true}}]}')
    r = http.post("/v2/models/text/infer", content=header + blob,
                  headers={"inference-header-content-length": str(len(header))})
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    assert r.content[length:] == blob
    # the same bytes asked for as JSON text: refused, not replaced
    r = http.post("/v2/models/text/infer", content=header.replace(b"true", b"false") + blob,
                  headers={"inference-header-content-length": str(len(header) + 1)})
    assert "output 'out' holds bytes that are not UTF-8" in _error(r, 400)


def test_nul_strings_round_trip_over_eval_and_tf_serving(http: httpx.Client) -> None:
    r = http.post("/models/text/eval", json={"x": TEXTS})
    assert r.status_code == 200, r.text
    assert r.json() == {"out": TEXTS}
    r = http.post("/v1/models/text:predict", json={"instances": TEXTS})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": TEXTS}
    raw = [b"\x00", b"\xff\x00"]
    r = http.post("/v1/models/text:predict", json={"inputs": [{"b64": base64.b64encode(v).decode()} for v in raw]})
    assert r.status_code == 200, r.text
    assert r.json() == {"outputs": ["\u0000", {"b64": base64.b64encode(b"\xff\x00").decode()}]}


@pytest.mark.parametrize("binary", [False, True])
def test_nul_strings_round_trip_with_tritonclient_http(server: Server, binary: bool) -> None:
    values = np.array([t.encode() for t in TEXTS], dtype=object)
    client = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        x = thttp.InferInput("x", [len(values)], "BYTES")
        x.set_data_from_numpy(values, binary_data=binary)
        result = client.infer("text", [x], outputs=[thttp.InferRequestedOutput("out", binary_data=binary)])
        got = result.as_numpy("out")
        assert got is not None
        assert [v if isinstance(v, bytes) else v.encode() for v in got.tolist()] == values.tolist()
    finally:
        client.close()


def test_nul_bytes_round_trip_with_tritonclient_grpc(server: Server) -> None:
    values = np.array([b"a\x00b", b"\x00", b"\xff\x00", b"", b"\x00\x00"], dtype=object)
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        x = tgrpc.InferInput("x", [len(values)], "BYTES")
        x.set_data_from_numpy(values)
        got = client.infer("text", [x]).as_numpy("out")
        assert got is not None and got.tolist() == values.tolist()
    finally:
        client.close()


# ------------------------------------------------------------------------------------------ null as missing
def test_null_is_missing_for_floats_and_strings(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1.5, None, 2]}],
            "outputs": [{"name": "out", "parameters": {"binary_data": True}}]}
    r = http.post("/v2/models/num/infer", json=body)
    assert r.status_code == 200, r.text
    got = np.frombuffer(r.content[int(r.headers["inference-header-content-length"]):], dtype="<f8")
    assert got[0] == 1.5 and np.isnan(got[1]) and got[2] == 2
    # NaN goes back out as null: the missing value round-trips
    assert http.post("/models/num/eval", json={"x": [None, 3]}).json() == {"out": [None, 3.0]}
    r = http.post("/v1/models/num:predict", json={"instances": [4, None]})
    assert r.status_code == 200, r.text
    r = http.post("/v2/models/text/infer", json=_oip_text(["a", None]))  # type: ignore[list-item]
    assert r.json()["outputs"][0]["data"] == ["a", ""]
    assert http.post("/models/text/eval", json={"x": [None, "b"]}).json() == {"out": ["", "b"]}
    assert http.post("/v1/models/text:predict", json={"instances": [None]}).json() == {"predictions": [""]}


@pytest.mark.parametrize(("model", "datatype"), [("count", "INT64"), ("flag", "BOOL")])
def test_null_for_integers_and_booleans_is_a_400_naming_the_input(http: httpx.Client, model: str,
                                                                  datatype: str) -> None:
    want = f"input 'x' is {datatype}, which cannot hold a missing value"
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2], "data": [None, None]}]}
    assert want in _error(http.post(f"/v2/models/{model}/infer", json=body), 400)
    assert want in _error(http.post(f"/models/{model}/eval", json={"x": [None]}), 400)
    assert want in _error(http.post(f"/v1/models/{model}:predict", json={"instances": [None]}), 400)
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2], "data": [1, None]}]}
    assert "input 'x'" in _error(http.post(f"/v2/models/{model}/infer", json=body), 400)


# -------------------------------------------------------------------------------------------------- images
def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


GRAY = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12


@pytest.mark.parametrize("model", ["digit", "digits"])
def test_gray_images_for_inputs_without_a_channel_axis(http: httpx.Client, model: str) -> None:
    r = http.post(f"/models/{model}/eval", content=_png(GRAY), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    out = np.array(r.json()["out"], dtype=np.uint8)
    # one image is one instance: a batched input answers without the batch axis
    assert out.tolist() == GRAY.tolist()
    r = http.post(f"/models/{model}/eval", files={"x": ("d.png", _png(GRAY), "image/png")})
    assert r.status_code == 200 and r.json()["out"] == GRAY.tolist()
    color = np.dstack([GRAY, GRAY, np.zeros_like(GRAY)])
    r = http.post(f"/models/{model}/eval", content=_png(color), headers={"content-type": "image/png"})
    assert "takes gray images, got a color image (RGB)" in _error(r, 400)


# ------------------------------------------------------------------------------------------------ model limit
def test_the_model_limit_is_an_option_logged_and_shown_in_the_index(serve, tmp_path: Path) -> None:
    root = tmp_path / "many"
    for name in ("a", "b", "c", "d"):
        _echo(root, name, "FP64", [-1])
    server = serve(root, "--trusted", "--max-models", "2", "--poll-interval", "0.1")
    with server.client() as c:
        assert c.get("/v2/models/b/ready").status_code == 200
        r = c.get("/v2/models/c/ready")
        assert "more than max_models (2)" in _error(r, 404)
        rows = {row["name"]: row for row in c.post("/v2/repository/index").json()}
        assert rows["a"]["state"] == "READY" and rows["b"]["state"] == "READY"
        for name in ("c", "d"):
            assert rows[name]["state"] == "UNAVAILABLE"
            assert "more than max_models (2)" in rows[name]["reason"] and "--max-models" in rows[name]["reason"]
        assert {row["name"] for row in c.post("/v2/repository/index", json={"ready": True}).json()} == {"a", "b"}
    # the repository is scanned every 0.1 s, many times by now: the limit is logged once, not at every scan
    log = server.log()
    assert "more than 2 models (max_models): 2 are not served: c, d" in log
    assert log.count("are not served") == 1


# ------------------------------------------------------------------------------------------------------ hub
@pytest.mark.slow
def test_deep_json_at_the_hub_api_and_through_its_gateway(tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub")
    try:
        deep_object = b'{"name": ' + DEEP + b"}"
        json_type = {"content-type": "application/json"}
        r = httpx.post(hub.url + "/auth/token", content=deep_object, headers=json_type, timeout=30)
        assert "depth limit exceeded" in _error(r, 400)
        with hub.client(hub.login()) as admin:
            assert "depth limit exceeded" in _error(admin.post("/api/v1/models", content=deep_object,
                                                               headers=json_type), 400)
            assert admin.post("/api/v1/models", json={"name": "iris"}).status_code == 201
            r = admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"},
                           content=iris_onnx(tmp_path / "iris.onnx").read_bytes())
            assert r.status_code == 201, r.text
            r = admin.post("/api/v1/deployments", json={"name": "iris-dep", "model": "iris", "version": 1})
            assert r.status_code == 201, r.text
            wait_for(lambda: ready_versions(admin, "iris-dep").get(1), what="v1 ready")
            base = "/deployments/iris-dep"
            for path, body in ((f"{base}/v2/models/iris-dep/infer", _oip_deep("data")),
                               (f"{base}/v2/models/iris-dep/infer", _oip_deep("parameters")),
                               (f"{base}/models/iris-dep/eval", b'{"input": ' + DEEP + b"}"),
                               (f"{base}/v1/models/iris-dep:predict", b'{"instances": ' + DEEP + b"}")):
                r = admin.post(path, content=body, headers=json_type)
                assert "depth limit exceeded" in _error(r, 400), path
            # the replica still serves
            r = admin.post(f"{base}/models/iris-dep/eval", json={"input": [[5.1, 3.5, 1.4, 0.2]]})
            assert r.status_code == 200, r.text
    finally:
        hub.stop()
