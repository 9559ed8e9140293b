"""Occlusion attribution of image inputs: how much a score drops when a patch of the image is hidden.

A square patch (``patch`` pixels, default an eighth of the shorter side) slides over the image by ``stride`` (default:
the patch); under it the pixels take the baseline (``mean``: the image's mean per channel, or ``zeros``). A pixel's
attribution is the mean drop of the score (the score of the image minus that of the occluded image) over the
patches that cover it. The occluded images of a row are built with numpy masks, a chunk at a time, and each chunk
is one model call. ``base_value`` is the score of the image with every pixel at the baseline; ``prediction`` the
score of the image.

An image input is a batched input of rank 3 or more: ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` (channels
first when the last axis cannot be channels, 1 to 4, and the second can). Other inputs of the model keep the row's
values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlport.core.types import TensorSpec
from mlport.errors import PayloadTooLarge, Unprocessable
from mlport.explain.layout import Target, scores, targets_of
from mlport.explain.params import ExplainParams
from mlport.explain.result import Attribution, Explanation, ModelFunction
from mlport.formats.base import Arrays

__all__ = ["explain_occlusion", "image_input"]

Array = np.ndarray[Any, Any]


def image_input(specs: Sequence[TensorSpec], inputs: Mapping[str, Array]) -> TensorSpec | None:
    """The model's image input: the one input of rank 3 or more (with the batch axis); ``None`` when none is."""
    found = [s for s in specs if s.name in inputs and inputs[s.name].ndim >= 3]
    if len(found) > 1:
        raise Unprocessable(f"occlusion explains one image input; the model takes {len(found)} "
                            f"({', '.join(s.name for s in found)})")
    if found and not found[0].batched:
        raise Unprocessable(f"occlusion needs a batched image input (a first axis of -1); input '{found[0].name}' "
                            f"has shape {list(found[0].shape)}")
    return found[0] if found else None


def _channels_first(arr: Array) -> bool:
    return arr.ndim == 4 and not 1 <= arr.shape[-1] <= 4 and 1 <= arr.shape[1] <= 4


def _standard(arr: Array) -> Array:
    """``[N, H, W, C]`` float64 of an image batch."""
    if arr.ndim == 3:
        return arr[..., None].astype(np.float64)
    if arr.ndim != 4:
        raise Unprocessable(f"occlusion takes images of shape [N, H, W], [N, H, W, C] or [N, C, H, W], not "
                            f"{list(arr.shape)}")
    return (np.moveaxis(arr, 1, -1) if _channels_first(arr) else arr).astype(np.float64)


def _model_layout(batch: Array, like: Array) -> Array:
    """``batch`` (``[n, H, W, C]``) in the layout and datatype of the model's input ``like``."""
    out = batch[..., 0] if like.ndim == 3 else np.moveaxis(batch, -1, 1) if _channels_first(like) else batch
    if like.dtype.kind in "iu":
        info = np.iinfo(like.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(like.dtype, copy=False)


def _windows(size: int, patch: int, stride: int) -> Array:
    """``[positions, size]`` bool: the pixels each patch position covers (the last one flush with the edge)."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    pixels = np.arange(size)
    first = np.asarray(starts)[:, None]
    return (pixels >= first) & (pixels < first + patch)


def explain_occlusion(fn: ModelFunction, spec: TensorSpec, inputs: Arrays, outputs: Arrays,
                      wanted: Sequence[str] | None, labels: Mapping[str, Sequence[str]],
                      params: ExplainParams) -> Explanation:
    """The occlusion maps of every row of ``inputs`` (``outputs``: the model's prediction of them)."""
    images = _standard(inputs[spec.name])
    rows, height, width = images.shape[:3]
    patch = params.patch or max(1, round(min(height, width) / 8))
    stride = params.stride or patch
    if patch > min(height, width) or stride > min(height, width):
        raise Unprocessable(f"parameters 'patch' ({patch}) and 'stride' ({stride}) must fit the image "
                            f"({height} x {width})")
    ys, xs = _windows(height, patch, stride), _windows(width, patch, stride)
    positions = len(ys) * len(xs)
    need = rows * (positions + 1)
    left = fn.budget.max_evaluations - fn.budget.used
    if need > left:
        raise PayloadTooLarge(f"occlusion of {rows} image(s) with patch {patch} and stride {stride} needs {need} model "
                              f"evaluations; the bound is {params.max_evaluations}: send fewer images or give a larger "
                              "'patch' or 'stride'")
    targets = _image_targets(fn, outputs, wanted, labels, params.element)
    predicted = scores(outputs, targets)
    maps = np.empty((len(targets), rows, height, width))
    base = np.empty((len(targets), rows))
    for r in range(rows):
        fixed = {k: v[r:r + 1] for k, v in inputs.items() if k != spec.name}
        run = _Runner(fn, spec.name, inputs[spec.name], fixed, targets)
        baseline = images[r].mean(axis=(0, 1)) if params.baseline == "mean" else np.zeros(images.shape[-1])
        base[:, r] = run(np.broadcast_to(baseline, images[r].shape)[None])[0]
        drops = predicted[r][None, :] - _occluded_scores(run, images[r], baseline, ys, xs, fn.budget.max_evaluations)
        grid = drops.reshape(len(ys), len(xs), len(targets))
        coverage = ys.sum(axis=0)[:, None] * xs.sum(axis=0)[None, :]
        maps[:, r] = np.einsum("yh,yxk,xw->khw", ys.astype(np.float64), grid, xs.astype(np.float64)) / coverage
    out = [Attribution(t.name, t.element, base[i], predicted[:, i], map=maps[i]) for i, t in enumerate(targets)]
    image = images[0][..., 0] if images.shape[-1] == 1 else images[0]
    return Explanation("occlusion", [spec.name], out, rows=rows, image=image)


class _Runner:
    """Scores of a batch of ``[n, H, W, C]`` images of one row (its other inputs repeated)."""

    def __init__(self, fn: ModelFunction, name: str, like: Array, fixed: Arrays, targets: Sequence[Target]) -> None:
        self.fn, self.name, self.like, self.fixed, self.targets = fn, name, like, fixed, targets

    def __call__(self, batch: Array) -> Array:
        feed = {k: np.repeat(v, len(batch), axis=0) for k, v in self.fixed.items()}
        feed[self.name] = _model_layout(batch, self.like)
        return scores(self.fn(feed), self.targets)


def _occluded_scores(run: _Runner, image: Array, baseline: Array, ys: Array, xs: Array, bound: int) -> Array:
    """``[positions, targets]``: the scores of the image under each patch position, a chunk of images per call."""
    positions = len(ys) * len(xs)
    pixels = image.size
    chunk = max(1, min(run.fn.chunk_rows, (64 * 1024 * 1024) // max(1, pixels * 8)))
    found = []
    for start in range(0, positions, chunk):
        idx = np.arange(start, min(positions, start + chunk))
        mask = ys[idx // len(xs)][:, :, None] & xs[idx % len(xs)][:, None, :]
        found.append(run(np.where(mask[..., None], baseline, image[None])))
    return np.concatenate(found)


def _image_targets(fn: ModelFunction, outputs: Arrays, wanted: Sequence[str] | None,
                   labels: Mapping[str, Sequence[str]], element: int | None) -> list[Target]:
    """The scores explained: each float output, and of a wide one the element asked for, else the top one of
    the first image."""
    kept: list[Target] = []
    for spec in fn.signature.outputs:
        arr = outputs.get(spec.name)
        if arr is None or arr.ndim == 0 or arr.dtype.kind != "f" or (wanted is not None and spec.name not in wanted):
            continue
        flat = arr.reshape(len(arr), -1)
        index = None if flat.shape[1] == 1 else element if element is not None else int(np.argmax(flat[0]))
        kept.extend(targets_of(fn.signature, {spec.name: arr}, [spec.name], labels, index))
    return kept or targets_of(fn.signature, outputs, wanted, labels, element)
