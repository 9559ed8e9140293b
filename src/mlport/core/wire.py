"""Tensors on the wire of the Open Inference Protocol, shared by the server's codecs and the client.

Binary tensors are raw little-endian bytes in C order (the REST binary extension, gRPC ``raw_*_contents``);
BYTES tensors are length-prefixed elements (a 4-byte little-endian length, then the bytes). Numeric tensors
never go through a Python loop; BYTES tensors are variable-length elements and take one step per element.

Functions that read a tensor name it as ``side`` ("input" or "output") and ``name`` in their errors and raise
``error`` (:class:`ValueError` unless the caller gives its own, as the server does with ``InvalidInput``).
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from mlport.core.types import DataType

__all__ = [
    "CONTENTS_FIELD",
    "Array",
    "ErrorType",
    "decode_bytes_tensor",
    "encode_bytes_tensor",
    "from_contents",
    "from_raw",
    "lenient_element",
    "set_parameter",
    "to_raw",
]

Array = np.ndarray[Any, Any]
ErrorType = Callable[[str], Exception]

_LEN = struct.Struct("<I")
_MAX_ELEMENT = 2**32 - 1
_LITTLE = {d: d.numpy.newbyteorder("<") for d in DataType if d is not DataType.BYTES}

#: The typed ``InferTensorContents`` field that carries each datatype (FP16 has none: raw only).
CONTENTS_FIELD: dict[DataType, str] = {
    DataType.BOOL: "bool_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}


def lenient_element(value: Any) -> bytes:
    """A BYTES element: bytes as they are, anything else as the UTF-8 of its text."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def encode_bytes_tensor(arr: Array, element: Callable[[Any], bytes] = lenient_element) -> bytes:
    """BYTES elements in C order, each as a 4-byte little-endian length and the bytes of ``element(value)``."""
    items = [element(v) for v in arr.reshape(-1).tolist()]
    if any(len(b) > _MAX_ELEMENT for b in items):
        raise ValueError("a BYTES element is larger than 4 GiB")
    return b"".join(itertools.chain.from_iterable((_LEN.pack(len(b)), b) for b in items))


def decode_bytes_tensor(
    side: str, name: str, buf: memoryview | bytes | bytearray, count: int, error: ErrorType = ValueError
) -> Array:
    """``count`` length-prefixed BYTES elements as an object array of ``bytes``."""
    view = memoryview(buf)
    out = np.empty(count, dtype=object)
    pos, end = 0, len(view)
    for i in range(count):
        if pos + 4 > end:
            raise error(f"{side} '{name}': binary BYTES data ends after {i} of {count} elements")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > end:
            raise error(f"{side} '{name}': binary BYTES element {i} is longer than the data")
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != end:
        raise error(f"{side} '{name}': binary BYTES data has {end - pos} bytes after {count} elements")
    return out


def to_raw(dt: DataType, arr: Array, element: Callable[[Any], bytes] = lenient_element) -> bytes | memoryview:
    """The tensor's bytes on the wire: little-endian C order (a view when the array already is)."""
    if dt is DataType.BYTES:
        return encode_bytes_tensor(arr, element)
    le = np.ascontiguousarray(arr, dtype=_LITTLE[dt])
    return le.reshape(-1).view(np.uint8).data


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def from_raw(
    side: str, name: str, dt: DataType, shape: tuple[int, ...], buf: memoryview | bytes | bytearray,
    error: ErrorType = ValueError,
) -> Array:
    """An array over the tensor's wire bytes (no copy: writable when ``buf`` is); ``shape`` is not negative."""
    count = math.prod(shape)
    if dt is DataType.BYTES:
        return decode_bytes_tensor(side, name, buf, count, error).reshape(shape)
    expected = count * dt.itemsize
    if len(buf) != expected:
        raise error(f"{side} '{name}': {dt.value} with shape {_shape_text(shape)} needs {expected} bytes, "
                    f"got {len(buf)}")
    arr = np.frombuffer(buf, dtype=_LITTLE[dt]).reshape(shape)
    return arr if arr.dtype.isnative else arr.astype(dt.numpy)


def from_contents(
    side: str, name: str, dt: DataType, shape: tuple[int, ...], contents: Any, error: ErrorType = ValueError
) -> Array:
    """An array from a gRPC ``InferTensorContents``: the values in the one field of the datatype."""
    field = CONTENTS_FIELD.get(dt)
    if field is None:
        raise error(f"{side} '{name}' is {dt.value}, which travels only in raw_{side}_contents")
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise error(f"{side} '{name}' is {dt.value}: its values belong in '{field}', not '{others[0]}'")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise error(f"{side} '{name}': shape {_shape_text(shape)} needs {count} values, got {len(values)}")
    if dt is DataType.BYTES:
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    try:
        return np.array(values, dtype=dt.numpy).reshape(shape)
    except OverflowError:
        raise error(f"{side} '{name}': a value in '{field}' does not fit {dt.value}") from None


def set_parameter(param: Any, value: Any) -> bool:
    """Set a gRPC ``InferParameter`` from a bool, integer, float or string (numpy scalars too).

    Returns False, leaving ``param`` alone, for any other value: the caller decides what that means.
    """
    if isinstance(value, bool | np.bool_):
        param.bool_param = bool(value)
    elif isinstance(value, int | np.integer):
        if value < 2**63:
            param.int64_param = int(value)
        else:
            param.uint64_param = int(value)
    elif isinstance(value, float | np.floating):
        param.double_param = float(value)
    elif isinstance(value, str):
        param.string_param = value
    else:
        return False
    return True
