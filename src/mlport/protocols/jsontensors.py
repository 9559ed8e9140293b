"""Arrays to JSON-ready values without Python loops over numeric data (orjson serialises numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["jsonable", "text_of"]


def text_of(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


_text_of_array = np.frompyfunc(text_of, 1, 1)


def jsonable(arr: np.ndarray[Any, Any]) -> Any:
    """A value orjson can write: numeric arrays stay numpy (serialised natively), strings become lists."""
    if arr.ndim == 0:
        return text_of(arr.item())
    if arr.dtype.kind in "OSU":
        if arr.dtype.kind == "O":
            arr = _text_of_array(arr)
        out = arr.tolist()
        return out
    if arr.dtype == np.float16 or not arr.dtype.isnative:
        arr = arr.astype(np.float32 if arr.dtype.kind == "f" else arr.dtype.newbyteorder("="))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr
