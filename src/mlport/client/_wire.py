"""Tensors on the wire of the Open Inference Protocol, from the client's side.

numpy arrays <-> datatypes, raw little-endian bytes (REST binary extension, gRPC ``raw_*_contents``),
length-prefixed BYTES elements and JSON ``data``. Numeric tensors never go through a Python loop;
BYTES tensors are variable-length elements and take one step per element.

Functions that read a server's answer raise :class:`ValueError` on data that does not add up; the
clients turn that into a :class:`~mlport.client.ClientError`.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlport.core.types import DataType

__all__ = [
    "Array",
    "as_input",
    "decode_bytes",
    "encode_bytes",
    "from_json_data",
    "from_raw",
    "json_default",
    "json_value",
    "parse_datatype",
    "parse_shape",
    "plain",
    "to_json_data",
    "to_raw",
]

Array = np.ndarray[Any, Any]

_LEN = struct.Struct("<I")
_MAX_ELEMENT = 2**32 - 1


def as_input(name: str, value: Any) -> tuple[DataType, Array]:
    """``value`` as an array and its datatype (str/bytes/object arrays travel as BYTES)."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    try:
        dt = DataType.from_numpy(arr.dtype)
    except ValueError:
        raise ValueError(
            f"input '{name}': numpy dtype {arr.dtype} has no tensor datatype; use bool, (u)int8..64, "
            "float16/32/64, or str/bytes"
        ) from None
    return dt, arr


def _element(name: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"input '{name}' is BYTES: its elements must be bytes or str, got {type(value).__name__}")


def encode_bytes(name: str, arr: Array) -> bytes:
    """BYTES elements, each as a 4-byte little-endian length and the bytes, in C order."""
    items = [_element(name, v) for v in arr.reshape(-1).tolist()]
    if any(len(b) > _MAX_ELEMENT for b in items):
        raise ValueError(f"input '{name}': a BYTES element is larger than 4 GiB")
    return b"".join(itertools.chain.from_iterable((_LEN.pack(len(b)), b) for b in items))


def decode_bytes(name: str, buf: memoryview | bytes | bytearray, count: int) -> Array:
    """``count`` length-prefixed BYTES elements as an object array of ``bytes``."""
    view = memoryview(buf)
    out = np.empty(count, dtype=object)
    pos, end = 0, len(view)
    for i in range(count):
        if pos + 4 > end:
            raise ValueError(f"output '{name}': BYTES data ends after {i} of {count} elements")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > end:
            raise ValueError(f"output '{name}': BYTES element {i} runs past the data")
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != end:
        raise ValueError(f"output '{name}': {end - pos} bytes follow the {count} BYTES elements")
    return out


def to_raw(name: str, dt: DataType, arr: Array) -> bytes | memoryview:
    """The tensor's bytes on the wire: little-endian C order (a view when the array already is)."""
    if dt is DataType.BYTES:
        return encode_bytes(name, arr)
    le = np.ascontiguousarray(arr, dtype=dt.numpy.newbyteorder("<"))
    return le.reshape(-1).view(np.uint8).data


def _count(shape: tuple[int, ...]) -> int:
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {list(shape)} has a negative dimension")
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def from_raw(name: str, dt: DataType, shape: tuple[int, ...], buf: memoryview | bytes | bytearray) -> Array:
    """An array over the tensor's wire bytes (no copy: writable when ``buf`` is)."""
    count = _count(shape)
    if dt is DataType.BYTES:
        return decode_bytes(name, buf, count).reshape(shape)
    expected = count * dt.itemsize
    if len(buf) != expected:
        raise ValueError(f"output '{name}': {dt.value} with shape {list(shape)} needs {expected} bytes, got {len(buf)}")
    arr = np.frombuffer(buf, dtype=dt.numpy.newbyteorder("<")).reshape(shape)
    return arr if arr.dtype.isnative else arr.astype(dt.numpy)


def to_json_data(name: str, dt: DataType, arr: Array) -> Any:
    """The flat ``data`` of a JSON tensor: numeric arrays stay numpy (orjson writes them), BYTES become text."""
    flat = arr.reshape(-1)
    if dt is DataType.BYTES:
        items = [_element(name, v) for v in flat.tolist()]
        try:
            return [b.decode("utf-8") for b in items]
        except UnicodeDecodeError:
            raise ValueError(
                f"input '{name}' holds bytes that are not UTF-8 text, which JSON cannot carry: send it in binary"
            ) from None
    if dt.numpy.kind == "f" and not np.isfinite(flat).all():
        raise ValueError(f"input '{name}' holds NaN or infinity, which JSON cannot carry: send it in binary")
    if dt is DataType.FP16:
        return flat.astype(np.float32)
    return np.ascontiguousarray(flat, dtype=dt.numpy)


def from_json_data(name: str, dt: DataType, shape: tuple[int, ...], data: Any) -> Array:
    """An array from a JSON tensor's ``data`` (flat or nested); BYTES elements come back as ``bytes``."""
    count = _count(shape)
    if dt is DataType.BYTES:
        values = np.asarray(data, dtype=object).reshape(-1)
        if values.size != count:
            raise ValueError(f"output '{name}': shape {list(shape)} needs {count} values, got {values.size}")
        out = np.empty(count, dtype=object)
        out[:] = [v.encode("utf-8") if isinstance(v, str) else _element(name, v) for v in values.tolist()]
        return out.reshape(shape)
    arr = np.asarray(data, dtype=dt.numpy)
    if arr.size != count:
        raise ValueError(f"output '{name}': shape {list(shape)} needs {count} values, got {arr.size}")
    return arr.reshape(shape)


def json_value(value: Any) -> Any:
    """A describe/eval input value orjson can write: numeric arrays stay numpy, text arrays become lists."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind == "U" or value.size == 0:
        return value.tolist()
    if value.dtype.kind in "OS":
        return np.vectorize(_text, otypes=[object])(value).tolist()
    if value.dtype == np.float16:
        return value.astype(np.float32)
    if not value.dtype.isnative or not value.flags.c_contiguous:
        return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))
    return value


def _text(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, bytes) else v


def json_default(value: Any) -> Any:
    """orjson's fallback for values inside eval inputs: bytes as text, numpy scalars and arrays."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return json_value(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def parse_datatype(raw: Any) -> DataType:
    """A datatype named in an answer (``FP32``, ``TYPE_FP32``, ``float32``...)."""
    return DataType.parse(str(raw))


def parse_shape(raw: Any) -> tuple[int, ...]:
    """A shape from an answer: a list of integers."""
    if not isinstance(raw, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in raw):
        raise ValueError(f"a shape must be a list of integers, got {raw!r}")
    return tuple(raw)


def plain(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Request parameters as plain JSON values (numpy scalars become Python ones)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in (params or {}).items()}
