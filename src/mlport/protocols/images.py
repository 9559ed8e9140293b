"""Images as tensors: PNG/JPEG bytes to an input tensor, and an output tensor to PNG/JPEG bytes.

An input can hold an image when its shape is one of ``(N, H, W, C)``, ``(N, C, H, W)``,
``(H, W, C)`` or ``(C, H, W)`` with ``C`` = 1 (gray) or 3 (RGB); ``H`` and ``W`` may be free
(``-1``). When both the last and the channels-first axis could be the channels, the last one wins.
Shapes without a channel axis, ``(H, W)`` (``H`` fixed: ``(-1, F)`` is a batch of vectors) and
``(-1, H, W)``, take gray images only: a color image for them is refused (400) rather than silently
made gray.

Pixels are 0..255. Integer inputs receive them unchanged; float inputs receive
``pixel * scale`` (``image.scale`` of the model config).

Output tensors are turned back into pixels by the inverse rule: float values are divided by
``scale``, then every value is rounded and clipped to 0..255 (NaN becomes 0); booleans become
0 or 255. No value-dependent guessing: a float output in 0..1 needs ``scale: 0.00392156862745098``
(1/255) in the model config to come out bright.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mlport.core.types import DataType, TensorSpec
from mlport.errors import InvalidInput, PayloadTooLarge
from mlport.formats.config import ImageOptions
from mlport.limits import Limits

__all__ = [
    "IMAGE_FORMATS",
    "ImageLayout",
    "NotAnImage",
    "decode_image",
    "encode_image",
    "image_layout",
    "image_spec_problem",
    "output_image_problem",
    "to_pixels",
]

#: Media type -> Pillow format name, for the image types read and written here.
IMAGE_FORMATS: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG"}

_CHANNELS = (1, 3)
#: Pillow modes of gray images (with or without alpha, 1 to 32 bits).
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_OUT_CHANNELS = (1, 3, 4)
_NUMERIC_INPUTS = frozenset({
    DataType.UINT8, DataType.UINT16, DataType.UINT32, DataType.UINT64,
    DataType.INT16, DataType.INT32, DataType.INT64,
    DataType.FP16, DataType.FP32, DataType.FP64,
})


class NotAnImage(ValueError):
    """A tensor that cannot be shown as one image (the message says why)."""


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """Where the image axes sit in an input shape; ``-1`` height/width means any size."""

    batch: bool
    channels: int
    channels_first: bool
    height: int
    width: int
    #: False for (H, W) and (N, H, W): one gray channel without an axis of its own.
    channel_axis: bool = True

    @property
    def size_text(self) -> str:
        w = "any" if self.width < 0 else str(self.width)
        h = "any" if self.height < 0 else str(self.height)
        return f"{w}x{h}"


def image_layout(shape: Sequence[int]) -> ImageLayout | None:
    """The image layout of an input shape, or ``None`` when the shape cannot hold an image."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 2:
        if dims[0] == -1:
            return None  # (-1, F): a batch of feature vectors, not one image
        return ImageLayout(False, 1, False, dims[0], dims[1], channel_axis=False)
    if len(dims) == 4:
        if dims[0] not in (-1, 1):
            return None  # a fixed batch of several images cannot come from one image
        batch, inner = True, dims[1:]
    elif len(dims) == 3:
        batch, inner = False, dims
    else:
        return None
    if inner[2] in _CHANNELS:
        return ImageLayout(batch, inner[2], False, inner[0], inner[1])
    if inner[0] in _CHANNELS:
        return ImageLayout(batch, inner[0], True, inner[1], inner[2])
    if len(dims) == 3 and dims[0] == -1:
        return ImageLayout(True, 1, False, dims[1], dims[2], channel_axis=False)  # (N, H, W): gray
    return None


def image_spec_problem(spec: TensorSpec) -> str | None:
    """Why ``spec`` cannot take an image (``None`` when it can)."""
    if spec.datatype not in _NUMERIC_INPUTS:
        return f"input '{spec.name}' is {spec.datatype.value}; images need a numeric input"
    if image_layout(spec.shape) is None:
        return (
            f"input '{spec.name}' has shape {list(spec.shape)}; images need (N,H,W,C), (N,C,H,W), "
            "(H,W,C) or (C,H,W) with C = 1 or 3, or (H,W) or (N,H,W) for gray images"
        )
    return None


def _open(data: bytes, limits: Limits) -> Image.Image:
    if not data:
        raise InvalidInput("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS.values()))
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"the image is too large: {exc}") from None
    except Exception as exc:  # Pillow raises many kinds for hostile bytes
        raise InvalidInput(f"not a readable PNG or JPEG image ({type(exc).__name__})") from None
    width, height = img.size
    if width * height > limits.max_image_pixels:
        raise PayloadTooLarge(
            f"the image has {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_image_pixels}"
        )
    try:
        img.load()
        transposed = ImageOps.exif_transpose(img)
    except Exception as exc:
        kind = img.format or "image"
        raise InvalidInput(f"the {kind} data is corrupt or truncated ({type(exc).__name__})") from None
    return transposed if transposed is not None else img


def _gray_or_rgb(img: Image.Image, channels: int) -> Image.Image:
    mode = "L" if channels == 1 else "RGB"
    if img.mode == mode:
        return img
    if img.mode.startswith("I;16"):
        # 16-bit gray: keep the high byte instead of clipping at 255
        wide = np.asarray(img, dtype=np.uint32) >> 8
        img = Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8))
        if img.mode == mode:
            return img
    return img.convert(mode)


def decode_image(
    data: bytes, spec: TensorSpec, options: ImageOptions, limits: Limits, *, add_batch: bool = True
) -> np.ndarray[Any, Any]:
    """PNG/JPEG bytes as a tensor for ``spec``.

    The result has the spec's channel count and order and its dtype; it carries the batch
    axis (of size 1) when the spec has one and ``add_batch`` is true. A fixed height/width that
    differs from the image is refused unless ``options.resize`` is set.
    """
    problem = image_spec_problem(spec)
    if problem is not None:
        raise InvalidInput(problem)
    layout = image_layout(spec.shape)
    assert layout is not None
    img = _open(data, limits)
    if not layout.channel_axis and img.mode not in _GRAY_MODES:
        raise InvalidInput(
            f"input '{spec.name}' has shape {list(spec.shape)}, without a channel axis: it takes gray images, "
            f"got a color image ({img.mode}); convert it to grayscale first"
        )
    img = _gray_or_rgb(img, layout.channels)
    width, height = img.size
    want_w = layout.width if layout.width > 0 else width
    want_h = layout.height if layout.height > 0 else height
    if (want_w, want_h) != (width, height):
        if not options.resize:
            raise InvalidInput(
                f"input '{spec.name}' expects images of {layout.size_text} pixels (width x height), "
                f"got {width}x{height}; resize it, or set image.resize: true in the model config"
            )
        img = img.resize((want_w, want_h), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)
    if pixels.ndim == 2 and layout.channel_axis:
        pixels = pixels[:, :, np.newaxis]
    if layout.channels_first:
        pixels = pixels.transpose(2, 0, 1)
    if layout.batch and add_batch:
        pixels = pixels[np.newaxis, ...]
    target = spec.datatype.numpy
    if target.kind == "f":
        out = pixels.astype(target)
        if options.scale != 1.0:
            out *= target.type(options.scale)
        return np.ascontiguousarray(out)
    return np.ascontiguousarray(pixels.astype(target, copy=False))


def _channel_axis(dims: Sequence[int], hint: Sequence[int] | None) -> int | None:
    """2 (channels last) or 0 (channels first) for a 3-d shape; ``None`` when neither fits.

    ``hint`` is the declared shape of the same axes (``-1`` free): a fixed channel count there
    decides. Otherwise 1 or 3 channels beat 4 (RGBA), and channels last beats channels first.
    """
    if hint is not None and len(hint) == 3:
        if hint[2] in _OUT_CHANNELS and dims[2] == hint[2]:
            return 2
        if hint[0] in _OUT_CHANNELS and dims[0] == hint[0]:
            return 0
    for channels in (_CHANNELS, _OUT_CHANNELS):
        if dims[2] in channels:
            return 2
        if dims[0] in channels:
            return 0
    return None


def output_image_problem(
    shape: Sequence[int], dtype: np.dtype[Any], hint: Sequence[int] | None = None
) -> str | None:
    """Why an array of this shape and dtype is not one image (``None`` when it is).

    Accepted shapes: ``(H, W)``, ``(H, W, C)``, ``(C, H, W)`` and the same with a leading batch
    axis of size 1; ``C`` is 1, 3 or 4 (RGBA). ``hint`` is the declared shape of the tensor's
    last axes (see :func:`_channel_axis`).
    """
    dims = [int(d) for d in shape]
    if dtype.kind not in "biuf":
        return f"it holds {dtype} values, not numbers"
    if len(dims) == 4:
        if dims[0] != 1:
            return f"it is a batch of {dims[0]} images (shape {dims}); send one instance to get an image"
        dims = dims[1:]
    if len(dims) == 3:
        axis = _channel_axis(dims, _tail(hint, 3))
        if axis is None:
            return f"shape {list(shape)} has no channel axis of 1, 3 or 4"
        dims = dims[:2] if axis == 2 else dims[1:]
    elif len(dims) != 2:
        return f"shape {list(shape)} is not an image shape (H,W), (H,W,C) or (C,H,W)"
    if 0 in dims:
        return f"shape {list(shape)} is empty"
    return None


def _tail(hint: Sequence[int] | None, n: int) -> tuple[int, ...] | None:
    if hint is None or len(hint) < n:
        return None
    return tuple(int(d) for d in hint[len(hint) - n:])


def to_pixels(
    arr: np.ndarray[Any, Any], scale: float = 1.0, hint: Sequence[int] | None = None
) -> np.ndarray[Any, Any]:
    """One image tensor (see :func:`output_image_problem`) as uint8 pixels ``(H, W[, 3|4])``.

    Raises :class:`NotAnImage` for any other tensor.
    """
    problem = output_image_problem(arr.shape, arr.dtype, hint)
    if problem is not None:
        raise NotAnImage(problem)
    if arr.ndim == 4:
        arr = arr[0]
    if arr.ndim == 3:
        if _channel_axis(arr.shape, _tail(hint, 3)) == 0:
            arr = arr.transpose(1, 2, 0)
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "b":
        values = arr.astype(np.float64) * 255.0
    elif arr.dtype.kind == "f":
        values = arr.astype(np.float64)
        if scale not in (0.0, 1.0):
            values /= scale
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    else:
        values = arr.astype(np.float64)
    return np.ascontiguousarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def encode_image(
    arr: np.ndarray[Any, Any], media: str, scale: float = 1.0, hint: Sequence[int] | None = None,
    quality: int = 90,
) -> bytes:
    """An image tensor (see :func:`to_pixels`) as PNG or JPEG bytes (JPEG drops an alpha channel)."""
    fmt = IMAGE_FORMATS.get(media)
    if fmt is None:
        raise NotAnImage(f"{media} is not an image type written here")
    pixels = to_pixels(arr, scale, hint)
    if fmt == "JPEG" and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = np.ascontiguousarray(pixels[:, :, :3])
    img = Image.fromarray(pixels)  # L, RGB or RGBA from the shape
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
