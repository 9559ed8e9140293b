"""Open Inference Protocol (KServe V2 / Triton) REST codec, with the binary tensor data extension.

Binary input tensors become read-only numpy views of the request body (no copy); binary
outputs are written as the raw little-endian bytes of each array.

Requests are read by one reader: orjson parses the JSON header, each input's name, datatype and shape are
checked with exact type tests (the common case costs a few dictionary look-ups), ``data`` arrays become
numpy arrays in one call each, and anything wrong is refused with a message that names it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.types import DataType, Signature
from mlport.core.validate import as_array, check_shape_limits, fmt_shape, missing_refused
from mlport.core.wire import from_raw, to_raw
from mlport.errors import InvalidInput
from mlport.limits import Limits
from mlport.protocols.jsonbody import check_parameters, loads
from mlport.protocols.jsontensors import jsonable

__all__ = [
    "HEADER_LENGTH",
    "EncodedResponse",
    "decode_infer_request",
    "encode_infer_response",
    "model_metadata",
]

HEADER_LENGTH = "inference-header-content-length"


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


_DATATYPES = {d.value: d for d in DataType}
#: numpy dtypes of the numeric datatypes (not BOOL, not BYTES)
_NUMBERS = {d: d.numpy for d in DataType if d.numpy.kind in "iuf"}
_LITTLE = {d: d.numpy.newbyteorder("<") for d in DataType if d is not DataType.BYTES}


def decode_infer_request(
    body: bytes, header_length: int | None, signature: Signature, limits: Limits
) -> tuple[InferenceRequest, set[str]]:
    """Decode an infer request; returns it and the names of outputs to send in binary form."""
    if header_length == 0:
        return _raw_single_input(body, signature), set()
    if header_length is not None and header_length > len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {header_length} exceeds the body ({len(body)} bytes)")
    doc = loads(body if header_length is None else memoryview(body)[:header_length])
    if type(doc) is not dict:
        raise InvalidInput("the request must be a JSON object with an 'inputs' list")
    binary = memoryview(body)[header_length:] if header_length is not None else None
    inputs = _read_inputs(doc.get("inputs"), binary, limits)
    req_params = doc.get("parameters") or {}
    if type(req_params) is not dict:
        raise InvalidInput("'parameters' must be an object")
    outputs, binary_out = _requested_outputs(doc.get("outputs"), bool(req_params.get("binary_data_output", False)),
                                             signature)
    rid = doc.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int | float)):
        raise InvalidInput("'id' must be a string")
    if "binary_data_output" in req_params:
        req_params = {k: v for k, v in req_params.items() if k != "binary_data_output"}
    check_parameters(req_params)
    request = InferenceRequest(inputs=inputs, outputs=outputs, id=str(rid) if rid is not None else None,
                               parameters=req_params)
    return request, binary_out


def _read_inputs(raw_inputs: Any, binary: memoryview | None, limits: Limits) -> dict[str, np.ndarray[Any, Any]]:
    """The input tensors, from JSON ``data`` or from the binary part of the body."""
    if type(raw_inputs) is not list or not raw_inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    if len(raw_inputs) > limits.max_tensors_per_request:
        raise InvalidInput(f"too many inputs ({len(raw_inputs)}); the limit is {limits.max_tensors_per_request}")
    offset = 0
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for item in raw_inputs:
        name, dt, shape, count = _tensor_head(item, inputs, limits)
        params = item.get("parameters")
        size = None
        if params:
            if type(params) is not dict:
                raise InvalidInput(f"input '{name}': 'parameters' must be an object")
            size = params.get("binary_data_size")
        if size is not None:
            if binary is None:
                raise InvalidInput(f"input '{name}' has binary_data_size but no Inference-Header-Content-Length")
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input '{name}': binary_data_size {size!r} does not fit the body")
            inputs[name] = from_raw("input", name, dt, shape, binary[offset : offset + size], InvalidInput)
            offset += size
        elif "data" in item:
            inputs[name] = _from_json(name, dt, shape, item["data"], limits, count)
        else:
            raise InvalidInput(f"input '{name}' has neither 'data' nor binary_data_size")
    if binary is not None and offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the tensors that use them")
    return inputs


def _tensor_head(
    item: Any, seen: dict[str, Any], limits: Limits
) -> tuple[str, DataType, tuple[int, ...], int]:
    """An input's name, datatype, shape and element count, checked."""
    name = item.get("name") if type(item) is dict else None
    if type(name) is not str:
        raise InvalidInput("each input must be an object with a 'name'")
    if name in seen:
        raise InvalidInput(f"input '{name}' is given twice")
    raw_dt = item.get("datatype", "")
    dt = _DATATYPES.get(raw_dt) if type(raw_dt) is str else None
    if dt is None:
        try:
            dt = DataType.parse(str(raw_dt))
        except ValueError:
            raise InvalidInput(f"input '{name}': unknown datatype {item.get('datatype')!r}") from None
    raw_shape = item.get("shape")
    if type(raw_shape) is not list:
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    count = 1
    for d in raw_shape:
        if type(d) is not int or d < 0:
            raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
        count *= d
    shape = tuple(raw_shape)
    if count > limits.max_tensor_elements or len(shape) > limits.max_tensor_rank:
        check_shape_limits(name, shape, limits)  # raises, naming the limit
    return name, dt, shape, count


def _requested_outputs(raw_outputs: Any, all_binary: bool, signature: Signature) -> tuple[list[str] | None, set[str]]:
    """The outputs asked for (``None``: all of them) and those to send in binary form."""
    if raw_outputs is None:
        return None, set(signature.output_names) if all_binary else set()
    if type(raw_outputs) is not list:
        raise InvalidInput("'outputs' must be a list")
    outputs: list[str] = []
    binary_out: set[str] = set()
    for out in raw_outputs:
        name = out.get("name") if type(out) is dict else None
        if type(name) is not str:
            raise InvalidInput("each requested output must be an object with a 'name'")
        outputs.append(name)
        oparams = out.get("parameters") or {}
        if type(oparams) is not dict:
            raise InvalidInput(f"output '{name}': 'parameters' must be an object")
        if oparams.get("binary_data", all_binary):
            binary_out.add(name)
    return outputs, binary_out


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
            raw = to_raw(dt, arr)
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
