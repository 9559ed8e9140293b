"""The eval API's image, multipart and HTML media types against a real server and onnxruntime."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.builders import ort_run, save_graph
from tests.conftest import Server, start_server

# ------------------------------------------------------------------ tiny image models

_ELEM = {"uint8": 2, "float32": 1, "string": 8}


Dims = list[int | str]


def _build(path: Path, inputs: list[tuple[str, str, Dims]], outputs: list[tuple[str, str, Dims]],
           nodes: list[Any], inits: list[Any] | None = None) -> Path:
    from onnx import helper

    graph = helper.make_graph(
        nodes, path.parent.parent.name if path.name == "model.onnx" else path.stem,
        [helper.make_tensor_value_info(n, _ELEM[t], d) for n, t, d in inputs],
        [helper.make_tensor_value_info(n, _ELEM[t], d) for n, t, d in outputs],
        inits or [],
    )
    return save_graph(graph, path)


def invert_model(path: Path, dims: Dims, dtype: str = "uint8") -> Path:
    """y = 255 - x (computed in float, cast back to the input type)."""
    from onnx import TensorProto, helper

    k = helper.make_tensor("k", TensorProto.FLOAT, [], [255.0])
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["k", "xf"], ["yf"]),
             helper.make_node("Cast", ["yf"], ["inverted"], to=_ELEM[dtype])]
    return _build(path, [("x", dtype, dims)], [("inverted", dtype, dims)], nodes, [k])


def double_model(path: Path, dims: Dims) -> Path:
    """y = 2 x, float32."""
    from onnx import TensorProto, helper

    k = helper.make_tensor("k", TensorProto.FLOAT, [], [2.0])
    return _build(path, [("x", "float32", dims)], [("y", "float32", dims)],
                  [helper.make_node("Mul", ["x", "k"], ["y"])], [k])


def sum_model(path: Path, dims: Dims) -> Path:
    """total = sum of every non-batch axis, float32."""
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [len(dims) - 1], list(range(1, len(dims))))
    return _build(path, [("pixels", "float32", dims)], [("total", "float32", [dims[0]])],
                  [helper.make_node("ReduceSum", ["pixels", "axes"], ["total"], keepdims=0)], [axes])


def add_model(path: Path) -> Path:
    """Two inputs: out = a + b on (N,H,W,3) float32."""
    from onnx import helper

    dims: Dims = ["N", "H", "W", 3]
    return _build(path, [("a", "float32", dims), ("b", "float32", dims)], [("out", "float32", dims)],
                  [helper.make_node("Add", ["a", "b"], ["out"])])


def text_model(path: Path) -> Path:
    """A string input echoed back plus a numeric one doubled: (label [N], x [N,2]) -> (echo, y)."""
    from onnx import TensorProto, helper

    k = helper.make_tensor("k", TensorProto.FLOAT, [], [2.0])
    return _build(path, [("label", "string", ["N"]), ("x", "float32", ["N", 2])],
                  [("echo", "string", ["N"]), ("y", "float32", ["N", 2])],
                  [helper.make_node("Identity", ["label"], ["echo"]), helper.make_node("Mul", ["x", "k"], ["y"])],
                  [k])


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media") / "models"
    invert_model(root / "rgb_nhwc" / "1" / "model.onnx", ["N", "H", "W", 3])
    invert_model(root / "gray_nhwc" / "1" / "model.onnx", ["N", "H", "W", 1])
    invert_model(root / "rgb_chw" / "1" / "model.onnx", [3, "H", "W"])
    double_model(root / "rgb_nchw" / "1" / "model.onnx", ["N", 3, "H", "W"])
    double_model(root / "gray_hwc" / "1" / "model.onnx", ["H", "W", 1])
    sum_model(root / "gray_sum" / "1" / "model.onnx", [1, 1, 8, 8])
    double_model(root / "fixed" / "1" / "model.onnx", ["N", 4, 4, 3])
    double_model(root / "fixed_resize" / "1" / "model.onnx", ["N", 4, 4, 3])
    (root / "fixed_resize" / "model.yaml").write_text("image:\n  resize: true\n  scale: 0.5\n")
    double_model(root / "scaled" / "1" / "model.onnx", ["N", "H", "W", 3])
    (root / "scaled" / "model.yaml").write_text("image:\n  scale: 0.00392156862745098\n")
    add_model(root / "two" / "1" / "model.onnx")
    text_model(root / "text" / "1" / "model.onnx")
    (root / "text" / "model.yaml").write_text("fields:\n  x: {first: 0, second: 1}\n")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(repo, "--poll-interval", "0", log_dir=tmp_path_factory.mktemp("logs"))
    yield s
    s.stop()


def onnx_of(repo: Path, name: str) -> Path:
    return repo / name / "1" / "model.onnx"


# ------------------------------------------------------------------ images made and read with Pillow

def make_image(w: int = 7, h: int = 5, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def decoded(data: bytes, mode: str) -> np.ndarray:
    """What the client's bytes decode to (for JPEG: the decoded pixels, not the originals)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def post_image(
    server: Server, model: str, data: bytes, ctype: str = "image/png", accept: str | None = None
) -> httpx.Response:
    headers = {"content-type": ctype}
    if accept:
        headers["accept"] = accept
    with server.client() as c:
        return c.post(f"/models/{model}/eval", content=data, headers=headers)


# ------------------------------------------------------------------ image requests

@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_rgb_nhwc_uint8_png_and_jpeg(server: Server, repo: Path, fmt: str) -> None:
    data = encode(make_image(9, 6), fmt)
    r = post_image(server, "rgb_nhwc", data, f"image/{fmt.lower()}")
    assert r.status_code == 200, r.text
    pixels = decoded(data, "RGB")
    want = ort_run(onnx_of(repo, "rgb_nhwc"), {"x": pixels[np.newaxis]})["inverted"][0]
    got = np.array(r.json()["inverted"])
    assert got.shape == (6, 9, 3)  # a single instance: no batch axis
    np.testing.assert_array_equal(got, want)


def test_gray_nhwc_converts_rgb_to_gray(server: Server, repo: Path) -> None:
    data = encode(make_image(5, 4, "RGB", seed=3))
    r = post_image(server, "gray_nhwc", data)
    assert r.status_code == 200, r.text
    gray = decoded(data, "L")[:, :, np.newaxis]
    want = ort_run(onnx_of(repo, "gray_nhwc"), {"x": gray[np.newaxis]})["inverted"][0]
    np.testing.assert_array_equal(np.array(r.json()["inverted"]), want)


def test_gray_nchw_fixed_batch_of_one(server: Server, repo: Path) -> None:
    data = encode(make_image(8, 8, "L", seed=4))
    r = post_image(server, "gray_sum", data)
    assert r.status_code == 200, r.text
    pixels = decoded(data, "L").astype(np.float32)[np.newaxis, np.newaxis]
    want = ort_run(onnx_of(repo, "gray_sum"), {"pixels": pixels})["total"]
    assert r.json()["total"] == pytest.approx(float(want[0]))


def test_rgb_nchw_float_from_jpeg(server: Server, repo: Path) -> None:
    data = encode(make_image(6, 5, seed=5), "JPEG")
    r = post_image(server, "rgb_nchw", data, "image/jpeg")
    assert r.status_code == 200, r.text
    chw = decoded(data, "RGB").transpose(2, 0, 1).astype(np.float32)
    want = ort_run(onnx_of(repo, "rgb_nchw"), {"x": chw[np.newaxis]})["y"][0]
    got = np.array(r.json()["y"], dtype=np.float32)
    assert got.shape == (3, 5, 6)
    np.testing.assert_allclose(got, want)


def test_shapes_without_batch_axis(server: Server, repo: Path) -> None:
    gray = encode(make_image(4, 3, "L", seed=6))
    r = post_image(server, "gray_hwc", gray)
    assert r.status_code == 200, r.text
    hwc = decoded(gray, "L").astype(np.float32)[:, :, np.newaxis]
    np.testing.assert_allclose(r.json()["y"], ort_run(onnx_of(repo, "gray_hwc"), {"x": hwc})["y"])

    rgb = encode(make_image(4, 3, seed=7))
    r = post_image(server, "rgb_chw", rgb)
    assert r.status_code == 200, r.text
    chw = np.ascontiguousarray(decoded(rgb, "RGB").transpose(2, 0, 1))
    np.testing.assert_array_equal(r.json()["inverted"], ort_run(onnx_of(repo, "rgb_chw"), {"x": chw})["inverted"])


def test_float_input_is_scaled(server: Server, repo: Path) -> None:
    data = encode(make_image(3, 2, seed=8))
    r = post_image(server, "scaled", data)
    assert r.status_code == 200, r.text
    x = decoded(data, "RGB").astype(np.float32) * np.float32(1 / 255)
    want = ort_run(onnx_of(repo, "scaled"), {"x": x[np.newaxis]})["y"][0]
    np.testing.assert_allclose(r.json()["y"], want, rtol=1e-6)


def test_fixed_size_resized_when_configured(server: Server, repo: Path) -> None:
    img = make_image(10, 7, seed=9)
    r = post_image(server, "fixed_resize", encode(img))
    assert r.status_code == 200, r.text
    resized = np.asarray(img.resize((4, 4), Image.Resampling.BILINEAR)).astype(np.float32) * np.float32(0.5)
    want = ort_run(onnx_of(repo, "fixed_resize"), {"x": resized[np.newaxis]})["y"][0]
    np.testing.assert_allclose(r.json()["y"], want)


def test_fixed_size_refused_without_resize(server: Server) -> None:
    r = post_image(server, "fixed", encode(make_image(10, 7)))
    assert r.status_code == 400
    assert "4x4" in r.json()["error"] and "10x7" in r.json()["error"]
    assert post_image(server, "fixed", encode(make_image(4, 4))).status_code == 200


# ------------------------------------------------------------------ image errors

def test_corrupt_and_truncated_images(server: Server) -> None:
    r = post_image(server, "rgb_nhwc", b"\x89PNG\r\n\x1a\nthis is not a png at all")
    assert r.status_code == 400 and "error" in r.json()
    good = encode(make_image(40, 40))
    r = post_image(server, "rgb_nhwc", good[: len(good) // 2])
    assert r.status_code == 400, r.text
    r = post_image(server, "rgb_nhwc", b"", "image/jpeg")
    assert r.status_code == 400


def test_image_for_a_model_with_two_inputs(server: Server) -> None:
    r = post_image(server, "two", encode(make_image()))
    assert r.status_code == 415
    assert "exactly one input" in r.json()["error"]
    r = post_image(server, "text", encode(make_image()))
    assert r.status_code == 415


def test_oversized_image(server: Server) -> None:
    side = 6400  # 40.96 million pixels, over the default limit of 40 million
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG", compress_level=9)
    r = post_image(server, "gray_nhwc", buf.getvalue())
    assert r.status_code == 413, r.text
    assert "pixels" in r.json()["error"]


def test_unsupported_content_type_and_accept(server: Server) -> None:
    with server.client() as c:
        r = c.post("/models/rgb_nhwc/eval", content=b"<x/>", headers={"content-type": "application/xml"})
        assert r.status_code == 415
        assert "image/png" in r.json()["error"]
        r = c.post("/models/rgb_nhwc/eval", content=encode(make_image()),
                   headers={"content-type": "image/png", "accept": "application/xml"})
        assert r.status_code == 406


# ------------------------------------------------------------------ image responses

def test_png_out_matches_model(server: Server, repo: Path) -> None:
    data = encode(make_image(8, 5, seed=11))
    r = post_image(server, "rgb_nhwc", data, accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    want = ort_run(onnx_of(repo, "rgb_nhwc"), {"x": decoded(data, "RGB")[np.newaxis]})["inverted"][0]
    np.testing.assert_array_equal(decoded(r.content, "RGB"), want)

    r = post_image(server, "rgb_nhwc", data, accept="image/jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (8, 5)


def test_png_out_channels_first_and_float_clipped(server: Server, repo: Path) -> None:
    data = encode(make_image(4, 3, seed=12))
    r = post_image(server, "rgb_chw", data, accept="image/png")
    assert r.status_code == 200, r.text
    assert np.array_equal(decoded(r.content, "RGB"), 255 - decoded(data, "RGB"))
    # y = 2x in float: values above 255 are clipped
    r = post_image(server, "rgb_nchw", data, accept="image/png")
    assert r.status_code == 200, r.text
    want = np.clip(decoded(data, "RGB").astype(np.float64) * 2, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded(r.content, "RGB"), want)


def test_png_out_divides_by_scale(server: Server) -> None:
    data = encode(make_image(3, 3, seed=13))
    r = post_image(server, "scaled", data, accept="image/png")
    assert r.status_code == 200
    want = np.clip(decoded(data, "RGB").astype(np.float64) * 2, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded(r.content, "RGB"), want)


def test_png_out_refused_for_non_images_and_batches(server: Server) -> None:
    r = post_image(server, "gray_sum", encode(make_image(8, 8, "L")), accept="image/png")
    assert r.status_code == 406
    assert "total" in r.json()["error"]
    batch = np.zeros((2, 3, 3, 3), dtype=np.uint8).tolist()
    with server.client() as c:
        r = c.post("/models/rgb_nhwc/eval", json={"x": batch}, headers={"accept": "image/png"})
        assert r.status_code == 406
        assert "batch of 2" in r.json()["error"]
        one = np.full((1, 3, 2, 3), 10, dtype=np.uint8).tolist()
        r = c.post("/models/rgb_nhwc/eval", json={"x": one}, headers={"accept": "image/png"})
        assert r.status_code == 200
        assert np.all(decoded(r.content, "RGB") == 245)


# ------------------------------------------------------------------ HTML

def test_html_shows_values_escaped(server: Server) -> None:
    with server.client() as c:
        r = c.post("/models/text/eval", json={"label": "<b>cat & dog</b>", "x": [1.5, 2.0]},
                   headers={"accept": "text/html"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;cat &amp; dog&lt;/b&gt;" in page
    assert "<b>cat" not in page
    assert "<td>3.0</td>" in page and "<td>4.0</td>" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "<script" not in page


def test_html_with_output_as_image(server: Server, repo: Path) -> None:
    data = encode(make_image(5, 4, seed=14))
    r = post_image(server, "rgb_nhwc", data, accept="text/html; inverted=image/png")
    assert r.status_code == 200, r.text
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', r.text)
    assert m, r.text[:500]
    shown = decoded(base64.b64decode(m.group(1)), "RGB")
    np.testing.assert_array_equal(shown, 255 - decoded(data, "RGB"))
    r = post_image(server, "rgb_nhwc", data, accept="text/html; nope=image/png")
    assert r.status_code == 406


# ------------------------------------------------------------------ multipart

def read_multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert msg.is_multipart()
    out: dict[str, tuple[str, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[str(name)] = (part.get_content_type(), payload)
    return out


def test_multipart_image_and_json_parts(server: Server, repo: Path) -> None:
    data = encode(make_image(4, 3, seed=15))
    b = np.arange(36, dtype=np.float32).reshape(3, 4, 3)
    files: dict[str, tuple[str | None, bytes | str, str]] = {
        "a": ("a.png", data, "image/png"), "b": (None, json.dumps(b.tolist()), "application/json")}
    with server.client() as c:
        r = c.post("/models/two/eval", files=files)
    assert r.status_code == 200, r.text
    a = decoded(data, "RGB").astype(np.float32)
    want = ort_run(onnx_of(repo, "two"), {"a": a[np.newaxis], "b": b[np.newaxis]})["out"][0]
    np.testing.assert_allclose(r.json()["out"], want)


def test_multipart_batches_and_text_parts(server: Server, repo: Path) -> None:
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    files = {"label": (None, '["a", "b"]', "text/plain"), "x": (None, json.dumps(x.tolist()), "application/json")}
    with server.client() as c:
        r = c.post("/models/text/eval", files=files)
        assert r.status_code == 200, r.text
        assert r.json()["echo"] == ["a", "b"]
        np.testing.assert_allclose(r.json()["y"], ort_run(onnx_of(repo, "text"),
                                   {"label": np.array(["a", "b"], dtype=object), "x": x})["y"])
        # plain text for a string input is the string itself; for a number input it is JSON
        # (parts without a Content-Type, as browsers send text fields)
        r = c.post("/models/text/eval", files={"label": (None, "hello world"), "x": (None, "[5, 6]")})
        assert r.status_code == 200, r.text
        assert r.json() == {"echo": "hello world", "y": [10.0, 12.0]}


def test_multipart_mapped_fields(server: Server) -> None:
    files: dict[str, tuple[None, str, str | None]] = {
        "label": (None, "z", None), "second": (None, "4", "text/plain"), "first": (None, "1.5", "application/json")}
    with server.client() as c:
        r = c.post("/models/text/eval", files=files)
    assert r.status_code == 200, r.text
    assert r.json() == {"echo": "z", "y": [3.0, 8.0]}


def test_single_file_model_at_eval(serve: Callable[..., Server], tmp_path: Path) -> None:
    model = double_model(tmp_path / "thumb.onnx", ["N", 2, 3, 3])
    (tmp_path / "thumb.model.yaml").write_text("image: {resize: true}\n")
    server = serve(model)
    img = make_image(6, 4, seed=17)
    with server.client() as c:
        r = c.post("/eval", content=encode(img), headers={"content-type": "image/png", "accept": "image/png"})
    assert r.status_code == 200, r.text
    small = np.asarray(img.resize((3, 2), Image.Resampling.BILINEAR)).astype(np.float32)
    want = ort_run(model, {"x": small[np.newaxis]})["y"][0]
    np.testing.assert_array_equal(decoded(r.content, "RGB"), np.clip(np.rint(want), 0, 255).astype(np.uint8))


def test_multipart_out(server: Server) -> None:
    with server.client() as c:
        r = c.post("/models/text/eval", json={"label": ["p", "q"], "x": [[1, 2], [3, 4]]},
                   headers={"accept": "multipart/form-data"})
    assert r.status_code == 200, r.text
    parts = read_multipart(r.headers["content-type"], r.content)
    assert set(parts) == {"echo", "y"}
    assert parts["echo"][0] == "application/json" and json.loads(parts["echo"][1]) == ["p", "q"]
    assert json.loads(parts["y"][1]) == [[2.0, 4.0], [6.0, 8.0]]


def test_multipart_out_with_image_part(server: Server) -> None:
    data = encode(make_image(3, 2, seed=16))
    r = post_image(server, "rgb_nhwc", data, accept="multipart/form-data; inverted=image/png")
    assert r.status_code == 200, r.text
    parts = read_multipart(r.headers["content-type"], r.content)
    media, payload = parts["inverted"]
    assert media == "image/png"
    np.testing.assert_array_equal(decoded(payload, "RGB"), 255 - decoded(data, "RGB"))


def test_multipart_errors(server: Server) -> None:
    with server.client() as c:
        # no boundary
        r = c.post("/models/text/eval", content=b"x", headers={"content-type": "multipart/form-data"})
        assert r.status_code == 400
        # unclosed body
        r = c.post("/models/text/eval", content=b"--zz\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n[1,2]",
                   headers={"content-type": "multipart/form-data; boundary=zz"})
        assert r.status_code == 400
        # part type not supported
        r = c.post("/models/text/eval", files={"x": ("x.xml", b"<a/>", "application/xml")})
        assert r.status_code == 415
        # corrupt image part
        r = c.post("/models/two/eval", files={"a": ("a.png", b"\x89PNG\r\n\x1a\nbroken", "image/png"),
                                             "b": (None, "[]", "application/json")})
        assert r.status_code == 400
        # image part naming no input
        r = c.post("/models/two/eval", files={"c": ("c.png", encode(make_image()), "image/png")})
        assert r.status_code == 400 and "does not name an input" in r.json()["error"]
        # too many parts
        many = {f"p{i}": (None, "1", "application/json") for i in range(65)}
        r = c.post("/models/text/eval", files=many)
        assert r.status_code == 413
        # a number input with text that is not JSON
        r = c.post("/models/text/eval", files={"label": (None, "a"), "x": (None, "five", "text/plain")})
        assert r.status_code == 400 and "'x'" in r.json()["error"]
