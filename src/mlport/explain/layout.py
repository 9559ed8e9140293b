"""Features and explained outputs of a model: its inputs as one matrix of features, its outputs as scores.

A tabular model's inputs are numbers: an input of one value per row (shape ``[-1]`` or ``[-1, 1]``) is one feature,
named as the input; an input of ``k`` values per row (``[-1, k]``) is ``k`` features, named by the model config's
``fields`` where it names them, else ``input[i]`` (as drift profiles name them). The features, in input order,
make one ``[rows, features]`` matrix; :meth:`TabularLayout.inputs` turns such a matrix back into the model's inputs.

The explained outputs are the model's numeric scores (floating-point outputs): one per output of one value per
row, one per element of an output of ``k`` values per row (each a class, named by the config's labels where
there are as many).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import Unprocessable
from mlport.formats.base import Arrays
from mlport.observability.drift.features import column_names

__all__ = ["MAX_ELEMENTS", "MAX_FEATURES", "Feature", "TabularLayout", "Target", "scores", "tabular_layout",
           "targets_of"]

Array = np.ndarray[Any, Any]

#: Most features a tabular explanation takes.
MAX_FEATURES = 1024
#: Most elements of one output explained (classes...).
MAX_ELEMENTS = 64


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    tensor: str
    #: The column of a ``[-1, k]`` input; ``None`` for an input of one value per row.
    column: int | None


@dataclass(frozen=True, slots=True)
class TabularLayout:
    features: list[Feature]
    specs: list[TensorSpec]
    #: Values per row of each input (``None``: the input holds one value per row, of shape ``[-1]``).
    widths: dict[str, int | None]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def matrix(self, inputs: Mapping[str, Array]) -> Array:
        """``[rows, features]`` float64 of the inputs."""
        parts = [np.asarray(inputs[s.name], dtype=np.float64).reshape(len(inputs[s.name]), -1) for s in self.specs]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def inputs(self, matrix: Array) -> Arrays:
        """The model's inputs holding the rows of ``matrix`` (each cast to its input's datatype)."""
        out: Arrays = {}
        start = 0
        for spec in self.specs:
            width = self.widths[spec.name]
            cols = matrix[:, start:start + (width or 1)]
            start += width or 1
            dtype = spec.datatype.numpy
            if dtype.kind in "iub":
                cols = np.rint(cols) if dtype.kind != "b" else cols != 0
            arr = cols.astype(dtype, copy=False)
            out[spec.name] = arr.reshape(-1) if width is None else arr
        return out


def tabular_layout(signature: Signature, inputs: Mapping[str, Array],
                   fields: Mapping[str, Mapping[str, int]]) -> TabularLayout | None:
    """The features of a model whose inputs are numbers of rank 1 or 2 (with the batch axis); ``None`` otherwise."""
    features: list[Feature] = []
    widths: dict[str, int | None] = {}
    for spec in signature.inputs:
        arr = inputs.get(spec.name)
        if arr is None or spec.datatype in (DataType.BYTES,) or arr.dtype.kind not in "biuf" or arr.ndim not in (1, 2):
            return None
        if arr.ndim == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1):
            widths[spec.name] = None if arr.ndim == 1 else 1
            features.append(Feature(spec.name, spec.name, None))
            continue
        width = int(arr.shape[1])
        widths[spec.name] = width
        names = column_names(spec.name, width, fields.get(spec.name))
        features.extend(Feature(name, spec.name, i) for i, name in enumerate(names))
    if not features:
        return None
    if len(features) > MAX_FEATURES:
        raise Unprocessable(f"the model takes {len(features)} features; explanations take at most {MAX_FEATURES}")
    return TabularLayout(features, list(signature.inputs), widths)


@dataclass(frozen=True, slots=True)
class Target:
    """One explained score: output ``name`` (element ``index`` of it, ``None`` for one value per row)."""

    name: str
    index: int | None
    element: str | int | None


def targets_of(signature: Signature, outputs: Mapping[str, Array], wanted: Sequence[str] | None,
               labels: Mapping[str, Sequence[str]], element: int | None = None) -> list[Target]:
    """The scores to explain, from a prediction's ``outputs``: floating-point outputs of one value per row, or the
    elements of ``[-1, k]`` ones (only ``element`` when given); ``wanted`` names the outputs (default: all)."""
    found: list[Target] = []
    for spec in signature.outputs:
        arr = outputs.get(spec.name)
        if arr is None or (wanted is not None and spec.name not in wanted) or arr.dtype.kind != "f" or arr.ndim == 0:
            continue
        width = int(np.prod(arr.shape[1:], dtype=np.int64))
        if arr.ndim == 1 or width == 1:
            found.append(Target(spec.name, None, None))
            continue
        names = _labels(labels, width)
        if element is not None:
            if element >= width:
                raise Unprocessable(f"parameter 'element' is {element}; output '{spec.name}' has {width} elements")
            found.append(Target(spec.name, element, names[element] if names else element))
        elif width <= MAX_ELEMENTS:
            found.extend(Target(spec.name, i, names[i] if names else i) for i in range(width))
    if not found:
        given = ", ".join(f"'{s.name}' {s.datatype.value}" for s in signature.outputs)
        raise Unprocessable(f"the model gives no floating-point score to explain (its outputs: {given}); "
                            "explanations attribute scores, probabilities or regression values")
    return found


def _labels(labels: Mapping[str, Sequence[str]], width: int) -> list[str] | None:
    """Class names for an output of ``width`` elements: the config's labels of a class output of that many."""
    for names in labels.values():
        if len(names) == width:
            return list(names)
    return None


def scores(outputs: Mapping[str, Array], targets: Sequence[Target]) -> Array:
    """``[rows, len(targets)]`` float64 of the targets in a prediction's outputs."""
    cols = []
    for t in targets:
        arr = np.asarray(outputs[t.name])
        flat = arr.reshape(arr.shape[0], -1)
        cols.append(flat[:, t.index or 0])
    return np.column_stack(cols).astype(np.float64, copy=False)
