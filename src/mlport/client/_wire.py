"""Tensors on the wire of the Open Inference Protocol, from the client's side.

numpy arrays <-> datatypes, raw little-endian bytes (REST binary extension, gRPC ``raw_*_contents``),
length-prefixed BYTES elements (those in :mod:`mlport.core.wire`, shared with the server) and JSON ``data``.

Functions that read a server's answer raise :class:`ValueError` on data that does not add up; the
clients turn that into a :class:`~mlport.client.ClientError`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlport.core.types import DataType
from mlport.core.wire import Array, to_raw

__all__ = [
    "Array",
    "as_input",
    "from_json_data",
    "json_default",
    "json_value",
    "parse_datatype",
    "parse_shape",
    "plain",
    "raw_input",
    "to_json_data",
]


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


def raw_input(name: str, dt: DataType, arr: Array) -> bytes | memoryview:
    """An input's bytes on the wire (BYTES elements must be bytes or str)."""
    return to_raw(dt, arr, functools.partial(_element, name))


def _count(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


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
    if not isinstance(raw, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise ValueError(f"a shape must be a list of non-negative integers, got {raw!r}")
    return tuple(raw)


def plain(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Request parameters as plain JSON values (numpy scalars become Python ones)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in (params or {}).items()}
