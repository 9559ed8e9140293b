"""Which columns of a model's tensors are features, and how a feature's values come out of a batch.

A tensor of one value per row (shape ``[-1]`` or ``[-1, 1]``) is one feature, named as the tensor. A tensor of
``k`` values per row (shape ``[-1, k]``, ``k`` up to :data:`MAX_COLUMNS`) is ``k`` features, named by the model
config's ``fields`` where it names them, else ``tensor[i]``. Tensors of more dimensions (images) and free widths
are not profiled. Text, booleans and integers with few distinct values are categorical; the rest numeric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_COLUMNS", "MAX_DISTINCT_CODES", "Column", "categories", "column_names", "columns_of", "is_categorical",
           "values"]

Array = np.ndarray[Any, Any]

#: Widest tensor profiled column by column.
MAX_COLUMNS = 256
#: Integer features with at most this many distinct values in the reference are categorical.
MAX_DISTINCT_CODES = 20


@dataclass(frozen=True, slots=True)
class Column:
    """One feature: ``column`` of tensor ``tensor`` (``None``: the tensor holds one value per row)."""

    name: str
    tensor: str
    column: int | None
    role: str  # "input" or "output"


def columns_of(role: str, tensor: str, shape: Sequence[int], fields: Mapping[str, int] | None = None) -> list[Column]:
    """The features of one tensor of shape ``shape`` (with the batch axis), ``[]`` when it is not profiled."""
    inner = tuple(shape[1:]) if shape and shape[0] == -1 else tuple(shape)
    if inner in ((), (1,)):
        return [Column(tensor, tensor, None, role)]
    if len(inner) != 1 or not 1 < inner[0] <= MAX_COLUMNS:
        return []
    return [Column(name, tensor, i, role) for i, name in enumerate(column_names(tensor, inner[0], fields))]


def column_names(tensor: str, width: int, fields: Mapping[str, int] | None = None) -> list[str]:
    """The names of the ``width`` columns of a ``[-1, width]`` tensor: the config's ``fields`` names where it gives
    them, else ``tensor[i]`` (drift profiles and explanations name features the same way)."""
    names = {i: name for name, i in (fields or {}).items()}
    return [names.get(i, f"{tensor}[{i}]") for i in range(width)]


def values(arrays: Mapping[str, Array], col: Column) -> Array | None:
    """The feature's values, one per row (a view where the layout allows); ``None`` when the batch lacks them."""
    found = arrays.get(col.tensor)
    if found is None:
        return None
    arr = np.asarray(found)
    if arr.ndim == 0:
        return None
    flat = arr.reshape(arr.shape[0], -1)
    index = col.column or 0
    if flat.shape[1] <= index:
        return None
    return flat[:, index]


def categories(vals: Array) -> Array:
    """Values as category keys (text): decoded bytes, ``str()`` of numbers and booleans."""
    if vals.dtype.kind in "biu":
        return vals.astype(str)
    if vals.dtype.kind == "f":
        return np.where(np.isnan(vals), "", vals.astype(str))
    return np.asarray([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in vals], dtype=object)


def is_categorical(vals: Array) -> bool:
    """Whether reference values are categorical: text, booleans, or integers with few distinct values."""
    if vals.dtype.kind in "OSUb":
        return True
    if vals.dtype.kind in "iu":
        return len(np.unique(vals)) <= MAX_DISTINCT_CODES
    return False
