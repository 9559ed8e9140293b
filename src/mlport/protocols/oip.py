"""Open Inference Protocol (KServe V2 / Triton) REST codec, with the binary tensor data extension.

Binary input tensors become read-only numpy views of the request body (no copy); binary
outputs are written as the raw little-endian bytes of each array.

Requests are read by msgspec into typed structures (names, datatypes, shapes and parameters checked in C;
``data`` arrays become numpy arrays in one call each).  Anything the typed reading refuses goes through
the general reader, which names what is wrong.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import orjson

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.types import DataType, Signature
from mlport.core.validate import as_array, check_shape_limits, fmt_shape, missing_refused
from mlport.errors import InvalidInput
from mlport.limits import Limits
from mlport.protocols.jsonbody import check_parameters, loads
from mlport.protocols.jsontensors import jsonable

__all__ = [
    "HEADER_LENGTH",
    "EncodedResponse",
    "decode_bytes_tensor",
    "decode_infer_request",
    "encode_bytes_tensor",
    "encode_infer_response",
    "model_metadata",
]

HEADER_LENGTH = "inference-header-content-length"
_LEN = struct.Struct("<I")


@dataclass(slots=True)
class EncodedResponse:
    body: bytes
    #: Length of the JSON header when binary outputs follow it, else ``None``.
    header_length: int | None


def model_metadata(name: str, versions: list[str], platform: str, signature: Signature) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [s.oip() for s in signature.inputs],
        "outputs": [s.oip() for s in signature.outputs],
    }


def _shape(name: str, raw: Any, limits: Limits) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    return check_shape_limits(name, tuple(raw), limits)


def decode_bytes_tensor(name: str, buf: memoryview, count: int) -> np.ndarray[Any, Any]:
    """Length-prefixed BYTES elements (4-byte little-endian length, then the bytes)."""
    out = np.empty(count, dtype=object)
    pos = 0
    end = len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidInput(f"input '{name}': binary BYTES data ends after {i} of {count} elements")
        (n,) = _LEN.unpack_from(buf, pos)
        pos += 4
        if pos + n > end:
            raise InvalidInput(f"input '{name}': binary BYTES element {i} is longer than the data")
        out[i] = bytes(buf[pos : pos + n])
        pos += n
    if pos != end:
        raise InvalidInput(f"input '{name}': binary BYTES data has {end - pos} bytes after {count} elements")
    return out


def encode_bytes_tensor(arr: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for v in arr.ravel(order="C"):
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def _from_binary(name: str, dt: DataType, shape: tuple[int, ...], buf: memoryview) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if dt is DataType.BYTES:
        return decode_bytes_tensor(name, buf, count).reshape(shape)
    expected = count * dt.itemsize
    if len(buf) != expected:
        raise InvalidInput(
            f"input '{name}': {dt.value} with shape {fmt_shape(shape)} needs {expected} bytes, got {len(buf)}"
        )
    return np.frombuffer(buf, dtype=_LITTLE[dt]).reshape(shape)


def _from_json(
    name: str, dt: DataType, shape: tuple[int, ...], data: Any, limits: Limits, count: int = -1
) -> np.ndarray[Any, Any]:
    if count < 0:
        count = math.prod(shape)
    target = _NUMBERS.get(dt)
    if target is not None and type(data) is list:
        # the common case, numbers for a numeric tensor: one numpy call, then one cast
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError):
            pass  # ragged: the general checks name it
        else:
            kind = arr.dtype.kind
            if arr.size == count and arr.ndim <= limits.max_tensor_rank and arr.size:
                if kind in "iu" and target.kind in "iu":
                    _check_range(name, dt, arr)
                    return arr.astype(target, copy=False).reshape(shape)
                if kind in "iuf" and target.kind == "f":
                    return arr.astype(target, copy=False).reshape(shape)
    arr = as_array(name, data, limits)
    if arr.size != count:
        raise InvalidInput(f"input '{name}': shape {fmt_shape(shape)} needs {count} values, got {arr.size}")
    if count == 0:
        # an empty list reads as float64 whatever the datatype
        return np.empty(shape, dtype=dt.numpy)
    if arr.dtype.kind == "f" and dt.numpy.kind != "f" and np.isnan(arr).any():
        # null (missing) values, read as NaN: strings take them as "", integers and booleans cannot
        if dt is not DataType.BYTES:
            raise InvalidInput(missing_refused(name, dt))
        if np.isnan(arr).all():
            return np.full(shape, "", dtype=object)
    if dt is DataType.BYTES:
        if arr.dtype.kind not in "OU":
            raise InvalidInput(f"input '{name}' is BYTES; its data must be strings")
        arr = arr.astype(object)
    elif arr.dtype.kind == "O" and dt.numpy.kind in "iu":
        arr = _exact_integers(name, dt, data)  # Python ints beyond 64 bits, or strings
    elif arr.dtype.kind in "OUS":
        raise InvalidInput(f"input '{name}' is {dt.value}; its data must be numbers, got strings")
    elif dt is DataType.BOOL and arr.dtype.kind != "b":
        raise InvalidInput(f"input '{name}' is BOOL; its data must be true/false")
    else:
        if arr.dtype.kind == "f" and dt.numpy.kind in "iu" and not np.all(arr == np.round(arr)):
            raise InvalidInput(f"input '{name}' is {dt.value}; its data has fractional numbers")
        if dt.numpy.kind in "iu" and arr.dtype.kind == "f":
            # integers beyond float64's 53 bits (UINT64 above 2**63 beside small values): read them exactly
            arr = _exact_integers(name, dt, data)
        elif dt.numpy.kind in "iu":
            _check_range(name, dt, arr)
        arr = arr.astype(dt.numpy, copy=False)
    return arr.reshape(shape)


def _exact_integers(name: str, dt: DataType, data: Any) -> np.ndarray[Any, Any]:
    try:
        return np.array(data, dtype=dt.numpy)
    except OverflowError:
        raise InvalidInput(f"input '{name}' holds values out of the range of {dt.value}") from None
    except (ValueError, TypeError):
        raise InvalidInput(f"input '{name}' is {dt.value}; its data must be whole numbers") from None


def _check_range(name: str, dt: DataType, arr: np.ndarray[Any, Any]) -> None:
    """Refuse integers the datatype cannot hold instead of letting the cast wrap them."""
    info = np.iinfo(dt.numpy)
    if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
        raise InvalidInput(f"input '{name}' holds values out of the range of {dt.value} ({info.min}..{info.max})")


class _TensorDoc(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: Any = msgspec.UNSET


class _OutputDoc(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class _RequestDoc(msgspec.Struct):
    inputs: list[_TensorDoc]
    outputs: list[_OutputDoc] | None = None
    id: Any = None
    parameters: dict[str, Any] | None = None


_read_request = msgspec.json.Decoder(_RequestDoc).decode
_DATATYPES = {d.value: d for d in DataType}
#: numpy dtypes of the numeric datatypes (not BOOL, not BYTES)
_NUMBERS = {d: d.numpy for d in DataType if d.numpy.kind in "iuf"}
_LITTLE = {d: d.numpy.newbyteorder("<") for d in DataType if d is not DataType.BYTES}


class _Irregular(Exception):
    """The typed reader cannot take this request as it is: the general reader decides."""


def decode_infer_request(
    body: bytes, header_length: int | None, signature: Signature, limits: Limits
) -> tuple[InferenceRequest, set[str]]:
    """Decode an infer request; returns it and the names of outputs to send in binary form."""
    if header_length == 0:
        return _raw_single_input(body, signature), set()
    if header_length is not None and header_length > len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {header_length} exceeds the body ({len(body)} bytes)")
    json_part = body if header_length is None else memoryview(body)[:header_length]
    try:
        doc = _read_request(json_part)
        return _decode_typed(doc, body, header_length, signature, limits)
    except (msgspec.ValidationError, msgspec.DecodeError, _Irregular, RecursionError):
        # msgspec recurses on the C stack: a deeply nested body is read (and refused) by the general reader
        return _decode_general(bytes(json_part), body, header_length, signature, limits)


def _decode_typed(
    doc: _RequestDoc, body: bytes, header_length: int | None, signature: Signature, limits: Limits
) -> tuple[InferenceRequest, set[str]]:
    """The common case, read by msgspec; raises :class:`_Irregular` for anything the general reader must see."""
    items = doc.inputs
    if not items or len(items) > limits.max_tensors_per_request:
        raise _Irregular
    binary = memoryview(body)[header_length:] if header_length is not None else None
    offset = 0
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for item in items:
        name = item.name
        dt = _DATATYPES.get(item.datatype)
        if dt is None or name in inputs:
            raise _Irregular
        shape = tuple(item.shape)
        count = 1
        for d in shape:
            if d < 0:
                raise _Irregular
            count *= d
        if count > limits.max_tensor_elements or len(shape) > limits.max_tensor_rank:
            check_shape_limits(name, shape, limits)  # raises, naming the limit
        params = item.parameters
        size = params.get("binary_data_size") if params else None
        if size is not None:
            if binary is None or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise _Irregular
            inputs[name] = _from_binary(name, dt, shape, binary[offset: offset + size])
            offset += size
        elif item.data is msgspec.UNSET:
            raise _Irregular
        else:
            inputs[name] = _from_json(name, dt, shape, item.data, limits, count)
    if binary is not None and offset != len(binary):
        raise _Irregular
    req_params = doc.parameters or {}
    all_binary = bool(req_params.get("binary_data_output", False))
    outputs: list[str] | None = None
    binary_out: set[str] = set()
    if doc.outputs is not None:
        outputs = []
        for out in doc.outputs:
            outputs.append(out.name)
            if (out.parameters or {}).get("binary_data", all_binary):
                binary_out.add(out.name)
    elif all_binary:
        binary_out = set(signature.output_names)
    if "binary_data_output" in req_params:
        req_params = {k: v for k, v in req_params.items() if k != "binary_data_output"}
    check_parameters(req_params)
    rid = doc.id
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int | float)):
        raise _Irregular
    request = InferenceRequest(inputs=inputs, outputs=outputs, id=str(rid) if rid is not None else None,
                               parameters=req_params)
    return request, binary_out


def _decode_general(
    json_part: bytes, body: bytes, header_length: int | None, signature: Signature, limits: Limits
) -> tuple[InferenceRequest, set[str]]:
    """Any request, read as plain JSON values, with a message that names what is wrong."""
    doc = loads(json_part)
    if not isinstance(doc, dict):
        raise InvalidInput("the request must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    if len(raw_inputs) > limits.max_tensors_per_request:
        raise InvalidInput(f"too many inputs ({len(raw_inputs)}); the limit is {limits.max_tensors_per_request}")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for item in raw_inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("each input must be an object with a 'name'")
        name = item["name"]
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        try:
            dt = DataType.parse(str(item.get("datatype", "")))
        except ValueError:
            raise InvalidInput(f"input '{name}': unknown datatype {item.get('datatype')!r}") from None
        shape = _shape(name, item.get("shape"), limits)
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"input '{name}': 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise InvalidInput(f"input '{name}' has binary_data_size but no Inference-Header-Content-Length")
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input '{name}': binary_data_size {size!r} does not fit the body")
            inputs[name] = _from_binary(name, dt, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            inputs[name] = _from_json(name, dt, shape, item["data"], limits)
        else:
            raise InvalidInput(f"input '{name}' has neither 'data' nor binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the tensors that use them")
    req_params = doc.get("parameters") or {}
    if not isinstance(req_params, dict):
        raise InvalidInput("'parameters' must be an object")
    all_binary = bool(req_params.get("binary_data_output", False))
    outputs: list[str] | None = None
    binary_out: set[str] = set()
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for out in raw_outputs:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InvalidInput("each requested output must be an object with a 'name'")
            outputs.append(out["name"])
            oparams = out.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise InvalidInput(f"output '{out['name']}': 'parameters' must be an object")
            if oparams.get("binary_data", all_binary):
                binary_out.add(out["name"])
    elif all_binary:
        binary_out = set(signature.output_names)
    rid = doc.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int | float)):
        raise InvalidInput("'id' must be a string")
    req_params = {k: v for k, v in req_params.items() if k != "binary_data_output"}
    check_parameters(req_params)
    return (
        InferenceRequest(
            inputs=inputs,
            outputs=outputs,
            id=str(rid) if rid is not None else None,
            parameters=req_params,
        ),
        binary_out,
    )


def _raw_single_input(body: bytes, signature: Signature) -> InferenceRequest:
    if len(signature.inputs) != 1:
        raise InvalidInput("a raw binary body (Inference-Header-Content-Length: 0) needs a model with one input")
    spec = signature.inputs[0]
    if spec.datatype is DataType.BYTES:
        return InferenceRequest(inputs={spec.name: np.array([body], dtype=object)})
    inner = spec.shape[1:] if spec.batched else spec.shape
    if -1 in inner:
        raise InvalidInput(f"input '{spec.name}' has free dimensions; a raw body cannot carry its shape")
    per_item = int(np.prod(inner)) * spec.datatype.itemsize
    if per_item == 0 or len(body) % per_item:
        raise InvalidInput(f"the raw body ({len(body)} bytes) is not a whole number of '{spec.name}' items")
    arr = np.frombuffer(body, dtype=_LITTLE[spec.datatype])
    shape = (len(body) // per_item, *inner) if spec.batched else inner
    return InferenceRequest(inputs={spec.name: arr.reshape(shape)})


def _datatype(name: str, dtype: np.dtype[Any]) -> DataType:
    found = _OF_DTYPE.get(dtype)
    if found is None:
        try:
            found = DataType.from_numpy(dtype)
        except ValueError:
            raise InvalidInput(f"output '{name}' has dtype {dtype}, which the protocol cannot carry") from None
        if len(_OF_DTYPE) < 64:
            _OF_DTYPE[dtype] = found
    return found


_OF_DTYPE: dict[np.dtype[Any], DataType] = {d.numpy: d for d in DataType if d is not DataType.BYTES}
#: dtypes orjson writes from the array itself (float16 and byte-swapped arrays are converted first)
_NATIVE_JSON = frozenset(d.numpy for d in DataType if d.numpy.kind in "biuf" and d is not DataType.FP16)


def encode_infer_response(response: InferenceResponse, binary_out: set[str]) -> EncodedResponse:
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, arr in response.outputs.items():
        dt = _OF_DTYPE.get(arr.dtype) or _datatype(name, arr.dtype)
        if binary_out and name in binary_out:
            if dt is DataType.BYTES:
                raw: bytes | memoryview = encode_bytes_tensor(arr)
            else:
                le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
                raw = np.ascontiguousarray(le).reshape(-1).view(np.uint8).data
            outputs.append({"name": name, "datatype": dt.value, "shape": arr.shape,
                            "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        else:
            # numeric arrays go to orjson as they are (C order, native byte order): it writes them itself
            flat = arr.reshape(-1)
            if arr.dtype not in _NATIVE_JSON or not flat.flags.c_contiguous:
                flat = jsonable(flat, name)
            outputs.append({"name": name, "datatype": dt.value, "shape": arr.shape, "data": flat})
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *blobs]), len(header))
