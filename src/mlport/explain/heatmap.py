"""A PNG heat map of an occlusion map over its image: red where hiding the pixels lowers the score, blue where it
raises it, the image in gray beneath (stronger colour, larger attribution)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["heatmap_png"]

Array = np.ndarray[Any, Any]

#: How much the colour covers the image where the attribution is largest.
OPACITY = 0.75
_POSITIVE = np.array([1.0, 0.0, 0.0])
_NEGATIVE = np.array([0.0, 0.3, 1.0])


def _gray(image: Array) -> Array:
    """``[H, W]`` in 0..1 of an image of any value range (its own minimum and maximum)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    low, high = np.nanmin(img), np.nanmax(img)
    span = high - low
    return np.zeros_like(img) if not np.isfinite(span) or span <= 0 else np.nan_to_num((img - low) / span)


def heatmap_png(image: Array, attribution: Array) -> bytes:
    """PNG bytes, the size of ``image`` (``[H, W]`` or ``[H, W, C]``), of ``attribution`` (``[H, W]``) over it."""
    gray = _gray(image)
    a = np.nan_to_num(np.asarray(attribution, dtype=np.float64))
    peak = np.abs(a).max() if a.size else 0.0
    strength = np.abs(a) / peak if peak > 0 else np.zeros_like(a)
    color = np.where((a >= 0)[..., None], _POSITIVE, _NEGATIVE)
    alpha = (OPACITY * strength)[..., None]
    rgb = gray[..., None] * (1.0 - alpha) + color * alpha
    pixels = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()
