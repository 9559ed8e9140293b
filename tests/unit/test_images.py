"""The image codec, the multipart splitter/builder and the HTML page, without a server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mlport.core.types import DataType, TensorSpec
from mlport.errors import InvalidInput, PayloadTooLarge
from mlport.formats.config import ImageOptions
from mlport.limits import Limits
from mlport.protocols.html import MAX_CELLS, ImageOutput, render_outputs
from mlport.protocols.images import (
    ImageLayout,
    NotAnImage,
    decode_image,
    encode_image,
    image_layout,
    image_spec_problem,
    output_image_problem,
    to_pixels,
)
from mlport.protocols.multipart import Part, build_multipart, parse_multipart

LIMITS = Limits()


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def rgb(h: int = 3, w: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("shape", "layout"), [
    ((-1, -1, -1, 3), ImageLayout(True, 3, False, -1, -1)),
    ((-1, 28, 28, 1), ImageLayout(True, 1, False, 28, 28)),
    ((1, 1, 8, 8), ImageLayout(True, 1, True, 8, 8)),
    ((-1, 3, 224, 224), ImageLayout(True, 3, True, 224, 224)),
    ((-1, -1, 3), ImageLayout(False, 3, False, -1, -1)),
    ((3, -1, -1), ImageLayout(False, 3, True, -1, -1)),
    ((-1, 3, 5, 3), ImageLayout(True, 3, False, 3, 5)),  # a tie: channels last
    ((8, 8), ImageLayout(False, 1, False, 8, 8, channel_axis=False)),  # gray, without a channel axis
    ((28, -1), ImageLayout(False, 1, False, 28, -1, channel_axis=False)),
    ((-1, 28, 28), ImageLayout(True, 1, False, 28, 28, channel_axis=False)),
])
def test_image_layouts(shape: tuple[int, ...], layout: ImageLayout) -> None:
    assert image_layout(shape) == layout


@pytest.mark.parametrize("shape", [(-1, 4), (-1,), (5, 28, 28), (-1, -1, -1, -1), (2, 8, 8, 3), (-1, 8, 8, 2),
                                   (1, 1, 8, 8, 1)])
def test_not_image_layouts(shape: tuple[int, ...]) -> None:
    assert image_layout(shape) is None


def test_spec_problems() -> None:
    assert image_spec_problem(TensorSpec("x", DataType.FP32, (-1, -1, -1, 3))) is None
    assert "BYTES" in str(image_spec_problem(TensorSpec("x", DataType.BYTES, (-1, -1, -1, 3))))
    assert "shape" in str(image_spec_problem(TensorSpec("x", DataType.FP32, (-1, 4))))


def test_decode_rgb_nhwc_uint8() -> None:
    pixels = rgb()
    spec = TensorSpec("x", DataType.UINT8, (-1, -1, -1, 3))
    out = decode_image(png(pixels), spec, ImageOptions(), LIMITS)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 4, 3)
    np.testing.assert_array_equal(out[0], pixels)
    assert decode_image(png(pixels), spec, ImageOptions(), LIMITS, add_batch=False).shape == (3, 4, 3)


def test_decode_nchw_float_scaled() -> None:
    pixels = rgb()
    spec = TensorSpec("x", DataType.FP32, (-1, 3, -1, -1))
    out = decode_image(png(pixels), spec, ImageOptions(scale=0.5), LIMITS)
    assert out.dtype == np.float32 and out.shape == (1, 3, 3, 4)
    np.testing.assert_array_equal(out[0], pixels.transpose(2, 0, 1).astype(np.float32) * 0.5)


def test_decode_gray_from_rgb() -> None:
    pixels = rgb()
    spec = TensorSpec("x", DataType.INT64, (1, 1, 3, 4))
    out = decode_image(png(pixels), spec, ImageOptions(), LIMITS)
    assert out.dtype == np.int64 and out.shape == (1, 1, 3, 4)
    want = np.asarray(Image.fromarray(pixels).convert("L"))
    np.testing.assert_array_equal(out[0, 0], want)


@pytest.mark.parametrize(("shape", "want"), [((3, 4), (3, 4)), ((-1, 3, 4), (1, 3, 4)), ((-1, -1, -1), (1, 3, 4))])
def test_decode_gray_without_channel_axis(shape: tuple[int, ...], want: tuple[int, ...]) -> None:
    gray = np.asarray(Image.fromarray(rgb()).convert("L"))
    spec = TensorSpec("digit", DataType.UINT8, shape)
    out = decode_image(png(gray), spec, ImageOptions(), LIMITS)
    assert out.shape == want and out.dtype == np.uint8
    np.testing.assert_array_equal(out.reshape(3, 4), gray)
    # a color image is refused, not made gray behind the caller's back
    with pytest.raises(InvalidInput, match=r"input 'digit' has shape .* takes gray images, got a color image \(RGB\)"):
        decode_image(png(rgb()), spec, ImageOptions(), LIMITS)


def test_decode_16_bit_gray_keeps_high_byte() -> None:
    wide = np.array([[0, 256, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, format="PNG")
    out = decode_image(buf.getvalue(), TensorSpec("x", DataType.UINT8, (-1, -1, 1)), ImageOptions(), LIMITS)
    assert out[:, :, 0].tolist() == [[0, 1, 255]]


def test_decode_rgba_drops_alpha() -> None:
    rgba = np.dstack([rgb(), np.full((3, 4), 7, np.uint8)])
    out = decode_image(png(rgba), TensorSpec("x", DataType.UINT8, (-1, -1, 3)), ImageOptions(), LIMITS)
    np.testing.assert_array_equal(out, rgba[:, :, :3])


def test_decode_size_checks_and_resize() -> None:
    spec = TensorSpec("img", DataType.FP32, (-1, 2, 2, 3))
    with pytest.raises(InvalidInput, match=r"2x2 .*got 4x3"):
        decode_image(png(rgb()), spec, ImageOptions(), LIMITS)
    out = decode_image(png(rgb()), spec, ImageOptions(resize=True), LIMITS)
    want = np.asarray(Image.fromarray(rgb()).resize((2, 2), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out[0], want.astype(np.float32))


def test_decode_refuses_bad_bytes_and_bombs() -> None:
    spec = TensorSpec("x", DataType.UINT8, (-1, -1, -1, 3))
    for bad in (b"", b"GIF89a....", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, png(rgb(20, 20))[:60]):
        with pytest.raises(InvalidInput):
            decode_image(bad, spec, ImageOptions(), LIMITS)
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_image(png(rgb(20, 20)), spec, ImageOptions(), Limits(max_image_pixels=399))
    with pytest.raises(InvalidInput, match="numeric"):
        decode_image(png(rgb()), TensorSpec("x", DataType.BOOL, (-1, -1, 3)), ImageOptions(), LIMITS)


def test_to_pixels_rules() -> None:
    f = np.array([[-5.0, 0.4, 0.6, 254.6, 300.0, np.nan]], dtype=np.float32)
    assert to_pixels(f).tolist() == [[0, 0, 1, 255, 255, 0]]
    # float values are divided by the input scale: 0..1 outputs of a model fed pixel/255
    assert to_pixels(np.array([[0.0, 0.5, 1.0]]), scale=1 / 255).tolist() == [[0, 128, 255]]
    assert to_pixels(np.array([[True, False]])).tolist() == [[255, 0]]
    assert to_pixels(np.array([[-1, 70000]], dtype=np.int32)).tolist() == [[0, 255]]
    chw = np.arange(24, dtype=np.uint8).reshape(1, 3, 2, 4)
    np.testing.assert_array_equal(to_pixels(chw), chw[0].transpose(1, 2, 0))
    # a channels-first (3, 3, 4) declared as such is not taken for RGBA
    ambiguous = np.arange(36, dtype=np.uint8).reshape(3, 3, 4)
    np.testing.assert_array_equal(to_pixels(ambiguous, hint=(3, -1, -1)), ambiguous.transpose(1, 2, 0))
    assert to_pixels(ambiguous, hint=(-1, -1, 4)).shape == (3, 3, 4)
    assert to_pixels(np.zeros((5, 6, 1), np.uint8)).shape == (5, 6)


@pytest.mark.parametrize(("shape", "dtype", "why"), [
    ((2, 4, 4, 3), np.uint8, "batch of 2"),
    ((4,), np.float32, "not an image shape"),
    ((5, 4, 5), np.float32, "channel"),
    ((0, 4), np.float32, "empty"),
    ((4, 4), object, "not numbers"),
])
def test_not_images(shape: tuple[int, ...], dtype: type, why: str) -> None:
    assert why in str(output_image_problem(shape, np.dtype(dtype)))
    with pytest.raises(NotAnImage, match=why):
        to_pixels(np.zeros(shape, dtype=dtype))


def test_encode_round_trip() -> None:
    pixels = rgb(5, 6)
    back = np.asarray(Image.open(io.BytesIO(encode_image(pixels, "image/png"))))
    np.testing.assert_array_equal(back, pixels)
    jpeg = Image.open(io.BytesIO(encode_image(np.dstack([pixels, pixels[:, :, :1]]), "image/jpeg")))
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB" and jpeg.size == (6, 5)
    with pytest.raises(NotAnImage):
        encode_image(pixels, "image/gif")


def test_multipart_round_trip() -> None:
    parts = [Part("a", "application/json", b"[1, 2]"),
             Part('we"ird', "image/png", b"\r\n--\r\nbinary\x00", filename="x.png")]
    body, ctype = build_multipart(parts)
    assert ctype.startswith("multipart/form-data; boundary=")
    back = parse_multipart(body, ctype, 10)
    assert [(p.name, p.content_type, p.data, p.filename) for p in back] == [
        ("a", "application/json", b"[1, 2]", None), ('we"ird', "image/png", b"\r\n--\r\nbinary\x00", "x.png")]
    with pytest.raises(PayloadTooLarge):
        parse_multipart(body, ctype, 1)
    with pytest.raises(InvalidInput, match="boundary"):
        parse_multipart(body, "multipart/form-data", 10)
    with pytest.raises(InvalidInput):
        parse_multipart(body[:-10], ctype, 10)


def test_multipart_needs_names() -> None:
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"
    with pytest.raises(InvalidInput, match="name"):
        parse_multipart(body, "multipart/form-data; boundary=b", 10)


def test_html_page() -> None:
    page = render_outputs("m <1>", {
        "scores": np.array([[0.25, 1.0], [2.0, 3.5]], dtype=np.float32),
        "label": np.array(["<script>x</script>", "a&b"], dtype=object),
        "n": np.array(7),
        "cube": np.arange(8).reshape(2, 2, 2),
    }, {"n": ImageOutput("image/png", b"\x89PNG")})
    assert "<title>m &lt;1&gt;</title>" in page
    assert "<td>0.25</td>" in page and "<td>3.5</td>" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert "<td>a&amp;b</td>" in page
    assert 'src="data:image/png;base64,iVBORw=="' in page
    assert "[1, :, :]" in page and "<td>7</td>" in page


def test_html_cuts_long_outputs() -> None:
    page = render_outputs("m", {"big": np.zeros((100, 100))})
    assert page.count("<td>") == MAX_CELLS
    assert f"showing {MAX_CELLS} of 10000 values" in page
