"""Arrow arrays to numpy and back for the common cases, without pyarrow's pandas-backed conversions.

pyarrow's ``Array.to_numpy`` and ``pa.array(ndarray)`` import pandas on their first call (about half a second
of a run's start-up) even for plain numbers. A chunk's numeric columns without nulls are read here as
zero-copy views of their Arrow buffers, text columns through their Python values, and numeric or ASCII text
model outputs are wrapped as Arrow buffers; every other case goes through pyarrow's own conversions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["from_numpy", "to_numpy"]

Array = np.ndarray[Any, Any]

#: Most bytes of text in one chunk's output column wrapped directly (32-bit offsets).
MAX_TEXT_BYTES = 2**31 - 1


def to_numpy(column: pa.Array | pa.ChunkedArray) -> Array:
    """``column`` as a numpy array: a read-only view for numbers without nulls, an object array of ``str`` for
    text without nulls, else pyarrow's conversion (nulls as NaN or None)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if column.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        dtype = np.dtype(kind.to_pandas_dtype())
        data = column.buffers()[1]
        if data is not None:
            return np.frombuffer(data, dtype, count=len(column), offset=column.offset * dtype.itemsize)
    if column.null_count == 0 and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        out = np.empty(len(column), dtype=object)
        out[:] = column.to_pylist()
        return out
    result: Array = column.to_numpy(zero_copy_only=False)
    return result


def from_numpy(values: Array) -> pa.Array:
    """A 1-D array as an Arrow array: numbers wrap the array's buffer, ASCII text in an object array is
    packed at once; other values go through ``pa.array`` (text that is bytes becomes binary)."""
    if values.ndim == 1 and values.dtype.kind in "iuf" and values.dtype.isnative:
        values = np.ascontiguousarray(values)
        return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
    if values.ndim == 1 and values.dtype == object:
        packed = _ascii_strings(values)
        if packed is not None:
            return packed
    return pa.array(values)


def _ascii_strings(values: Array) -> pa.Array | None:
    """An object array of ASCII ``str`` as a string array (None when it holds anything else)."""
    items = values.tolist()
    if not items:
        return None
    try:
        text = "".join(items)
    except TypeError:  # not all str
        return None
    if not text.isascii() or len(text) > MAX_TEXT_BYTES:
        return None
    offsets = np.zeros(len(items) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), out=offsets[1:])
    return pa.StringArray.from_buffers(len(items), pa.py_buffer(offsets), pa.py_buffer(text.encode("ascii")))
