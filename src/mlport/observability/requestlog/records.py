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
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlport.core.types import DataType

__all__ = ["Captured", "Tensor", "as_arrays", "decode_tensor", "encode_tensor", "to_json"]

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


def _elements(arr: np.ndarray[Any, Any]) -> list[bytes]:
    return [e.encode() if isinstance(e, str) else bytes(e) for e in arr.ravel(order="C").tolist()]


def encode_tensor(name: str, arr: np.ndarray[Any, Any], binary: bool = False) -> Tensor:
    """``binary``: bytes as they are (Parquet); else base64 text (JSON)."""
    datatype = DataType.from_numpy(arr.dtype)
    out: Tensor = {"name": name, "datatype": datatype.value, "shape": list(arr.shape)}
    if datatype is DataType.BYTES:
        elements = _elements(arr)
        out["elements"] = elements if binary else [base64.b64encode(e).decode("ascii") for e in elements]
    else:
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        raw = np.ascontiguousarray(little).tobytes()
        out["data"] = raw if binary else base64.b64encode(raw).decode("ascii")
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


def to_json(c: Captured, binary: bool = False) -> dict[str, Any]:
    """The record of one captured request (``binary``: tensor bytes unencoded, for Parquet)."""
    params = c.parameters or {}
    return {
        "id": c.request_id[:MAX_ID] if c.request_id else uuid.uuid4().hex,
        "time": dt.datetime.fromtimestamp(c.time, dt.UTC).isoformat(timespec="microseconds"),
        "model": c.model,
        "version": c.version,
        "protocol": c.protocol,
        "status": c.status,
        "latency_ms": round(c.seconds * 1000.0, 3),
        "routed_to": _names(params.get("routed_to")),
        "answered_by": _names(params.get("answered_by")),
        "inputs": None if c.inputs is None else [encode_tensor(n, a, binary) for n, a in c.inputs.items()],
        "outputs": None if c.outputs is None else [encode_tensor(n, a, binary) for n, a in c.outputs.items()],
    }
