"""Categorical features of tree boosters: category values sent by clients, codes fed to the library.

A booster trained on a pandas ``category`` column records that column's categories; the code of a value is
its position among them. :class:`Categories` maps a request's values to codes with one sort-and-search
(no per-row Python), sends a missing value (an empty string, or NaN for numeric categories) as NaN, which
boosters treat as missing, and refuses values the model never saw with a 400 naming them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlport.core.types import DataType
from mlport.errors import InvalidInput
from mlport.formats.base import as_text

__all__ = ["Categories", "feature_matrix"]

_SHOWN = 8


class Categories:
    """The categories of one column, in code order."""

    def __init__(self, column: str, values: Sequence[Any]) -> None:
        self.column = column
        arr = np.asarray(list(values))
        self.text = arr.dtype.kind in "USO"
        if self.text:
            arr = arr.astype(str)
        elif arr.dtype.kind not in "iuf":
            raise ValueError(f"column {column!r}: categories of type {arr.dtype} are not supported")
        self.values = arr
        self._order = np.argsort(arr, kind="stable")
        self._sorted = arr[self._order]

    @property
    def datatype(self) -> DataType:
        if self.text:
            return DataType.BYTES
        return DataType.INT64 if self.values.dtype.kind in "iu" else DataType.FP64

    def codes(self, data: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Codes as float64 (NaN for a missing value) for the values in ``data``."""
        if self.text:
            try:
                keys = as_text(data).astype(str)
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{self.column}' holds bytes that are not UTF-8 text") from None
            missing = keys == ""
        else:
            keys = np.asarray(data)
            missing = np.isnan(keys) if keys.dtype.kind == "f" else np.zeros(keys.shape, dtype=bool)
        out = np.full(keys.shape, np.nan, dtype=np.float64)
        if not len(self._sorted):
            return out
        pos = np.searchsorted(self._sorted, keys)
        pos = np.minimum(pos, len(self._sorted) - 1)
        found = self._sorted[pos] == keys
        unknown = ~found & ~missing
        if unknown.any():
            seen = list(dict.fromkeys(keys[unknown].tolist()))
            known = self.values.tolist()
            more = ", ..." if len(known) > _SHOWN else ""
            raise InvalidInput(
                f"input '{self.column}': unknown categor{'y' if len(seen) == 1 else 'ies'} "
                f"{', '.join(repr(v) for v in seen[:_SHOWN])}; the model knows "
                f"{', '.join(repr(v) for v in known[:_SHOWN])}{more}"
                + ("; send an empty string for a missing value" if self.text else "")
            )
        hit = found & ~missing
        out[hit] = self._order[pos[hit]]
        return out


def feature_matrix(
    columns: Sequence[str], inputs: Mapping[str, np.ndarray[Any, Any]], categories: Mapping[str, Categories]
) -> np.ndarray[Any, Any]:
    """One column per feature, in model order: category codes for categorical features, values for the others."""
    return np.stack([categories[c].codes(inputs[c]) if c in categories else inputs[c] for c in columns], axis=1)
