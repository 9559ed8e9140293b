"""Arrays to JSON-ready values without Python loops over numeric data (orjson serialises numpy).

JSON text carries any string exactly (NUL characters included), but not arbitrary bytes: a BYTES value that
is not UTF-8 text is refused (400, naming the output) instead of being changed on the way out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlport.errors import InvalidInput

__all__ = ["jsonable", "text_of"]


class _NotText(ValueError):
    pass


def text_of(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _NotText from None
    if isinstance(value, np.generic):
        return value.item()
    return value


_text_of_array = np.frompyfunc(text_of, 1, 1)


def jsonable(arr: np.ndarray[Any, Any], name: str = "") -> Any:
    """A value orjson can write: numeric arrays stay numpy (serialised natively), strings become lists.

    ``name`` (the output's) is only used in the error for bytes that are not UTF-8 text.
    """
    try:
        if arr.ndim == 0:
            return text_of(arr.item())
        if arr.dtype.kind in "OSU":
            if arr.dtype.kind != "U":
                arr = _text_of_array(arr)
            return arr.tolist()
    except _NotText:
        raise InvalidInput(
            f"output '{name}' holds bytes that are not UTF-8 text, which JSON cannot carry exactly; ask for it in "
            "binary form (OIP binary_data or gRPC) or through TF Serving (base64)"
        ) from None
    if arr.dtype == np.float16 or not arr.dtype.isnative:
        arr = arr.astype(np.float32 if arr.dtype.kind == "f" else arr.dtype.newbyteorder("="))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr
