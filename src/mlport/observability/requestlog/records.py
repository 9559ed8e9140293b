"""One logged request, and its tensors written so that reading them back gives the same numpy arrays.

A record, as one JSON object (a JSON Lines row; Parquet holds the same fields as columns)::

    {"id": "...", "time": "2026-01-02T03:04:05.678901+00:00", "model": "iris", "version": "1",
     "protocol": "v2", "status": "ok", "latency_ms": 1.234, "routed_to": null, "answered_by": null,
     "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": "<base64>"}], "outputs": [...]}

A numeric tensor's ``data`` is its elements' little-endian bytes in row-major order, base64-encoded (exact,
NaN and infinities included); a BYTES tensor has ``elements`` instead: each element's bytes, base64-encoded.
``inputs``/``outputs`` are ``null`` when the log's ``payload`` leaves them out.
"""

from __future__ import annotations

import base64
import time
from binascii import b2a_base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlport.core.ids import new_request_id
from mlport.core.types import DataType

__all__ = ["Captured", "Tensor", "as_arrays", "datatype_of", "decode_tensor", "element_bytes", "encode_tensor",
           "iso_time", "json_line", "lineage", "raw_bytes", "record_id", "to_json"]

Tensor = dict[str, Any]
#: Longest request id kept.
MAX_ID = 128


@dataclass(slots=True)
class Captured:
    """What the request path hands over (references, no copies); encoded later by the writer thread."""

    time: float
    request_id: str | None
    model: str
    version: str
    protocol: str
    status: str
    seconds: float
    inputs: Mapping[str, np.ndarray[Any, Any]] | None
    outputs: Mapping[str, np.ndarray[Any, Any]] | None
    parameters: Mapping[str, Any] | None


def element_bytes(arr: np.ndarray[Any, Any]) -> list[bytes]:
    return [e.encode() if isinstance(e, str) else bytes(e) for e in arr.ravel(order="C").tolist()]


_DATATYPES: dict[np.dtype[Any], str] = {}


def datatype_of(arr: np.ndarray[Any, Any]) -> str:
    """The tensor datatype name of an array (looked up once per numpy dtype)."""
    dtype = arr.dtype
    found = _DATATYPES.get(dtype)
    if found is None:
        found = _DATATYPES[dtype] = DataType.from_numpy(dtype).value
    return found


def raw_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    """A numeric array's elements as little-endian bytes in row-major order."""
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def encode_tensor(name: str, arr: np.ndarray[Any, Any], binary: bool = False) -> Tensor:
    """``binary``: bytes as they are (Parquet); else base64 text (JSON)."""
    datatype = datatype_of(arr)
    out: Tensor = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
    if datatype == "BYTES":
        elements = element_bytes(arr)
        out["elements"] = elements if binary else [b2a_base64(e, newline=False).decode("ascii") for e in elements]
    else:
        raw = raw_bytes(arr)
        out["data"] = raw if binary else b2a_base64(raw, newline=False).decode("ascii")
    return out


def decode_tensor(tensor: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """The array a written tensor holds (JSON's base64 text or Parquet's bytes)."""
    datatype = DataType.parse(str(tensor["datatype"]))
    shape = tuple(int(d) for d in tensor["shape"])
    if datatype is DataType.BYTES:
        elements = [e if isinstance(e, bytes) else base64.b64decode(e) for e in tensor["elements"] or ()]
        arr = np.empty(len(elements), dtype=object)
        arr[:] = elements
        return arr.reshape(shape)
    data = tensor["data"]
    raw = data if isinstance(data, bytes) else base64.b64decode(data)
    return np.frombuffer(raw, dtype=datatype.numpy.newbyteorder("<")).astype(datatype.numpy, copy=False).reshape(shape)


def as_arrays(tensors: Sequence[Mapping[str, Any]] | None) -> dict[str, np.ndarray[Any, Any]]:
    """A record's ``inputs`` or ``outputs`` as named numpy arrays."""
    return {str(t["name"]): decode_tensor(t) for t in tensors or ()}


def _names(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


_SECOND: tuple[int, str] = (-1, "")


def iso_time(t: float) -> str:
    """``2026-01-02T03:04:05.678901+00:00`` for an epoch time (the date and time of day formatted once a second)."""
    global _SECOND
    micros = round(t * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{fraction:06d}+00:00"


def record_id(c: Captured) -> str:
    """The request's id (a new one for a request without)."""
    return c.request_id[:MAX_ID] if c.request_id else new_request_id()


def lineage(c: Captured, key: str) -> list[str] | None:
    """``routed_to`` or ``answered_by``, as a manifest's answer gave them."""
    return _names((c.parameters or {}).get(key)) if c.parameters else None


def to_json(c: Captured, binary: bool = False) -> dict[str, Any]:
    """The record of one captured request (``binary``: tensor bytes unencoded)."""
    return {
        "id": record_id(c),
        "time": iso_time(c.time),
        "model": c.model,
        "version": c.version,
        "protocol": c.protocol,
        "status": c.status,
        "latency_ms": round(c.seconds * 1000.0, 3),
        "routed_to": lineage(c, "routed_to"),
        "answered_by": lineage(c, "answered_by"),
        "inputs": None if c.inputs is None else [encode_tensor(n, a, binary) for n, a in c.inputs.items()],
        "outputs": None if c.outputs is None else [encode_tensor(n, a, binary) for n, a in c.outputs.items()],
    }


def json_line(c: Captured) -> bytes:
    """The record as one JSON line, ``orjson.dumps(to_json(c)) + b"\\n"`` (see :func:`.jsonlines.json_lines`)."""
    from mlport.observability.requestlog.jsonlines import json_lines

    return json_lines([c])
