"""Open Inference Protocol gRPC codec: ``ModelInferRequest`` -> :class:`InferenceRequest` -> ``ModelInferResponse``.

Inputs come either as ``raw_input_contents`` (one entry per input, the layout of the REST binary
extension; numeric tensors become read-only numpy views of those bytes) or as typed ``contents``.
Outputs always go back as ``raw_output_contents``, the form tritonclient and KServe's client read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from mlport.core.inference import InferenceRequest, InferenceResponse, Parameters
from mlport.core.types import DataType
from mlport.core.validate import check_shape_limits, fmt_shape
from mlport.errors import InvalidInput
from mlport.limits import Limits
from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.oip import decode_bytes_tensor, encode_bytes_tensor

__all__ = ["decode_infer_request", "encode_infer_response", "from_parameters", "to_parameters"]

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


def from_parameters(params: Mapping[str, Any]) -> Parameters:
    """``map<string, InferParameter>`` -> plain Python values (a parameter with no value is dropped)."""
    out: Parameters = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


def to_parameters(target: Any, params: Parameters) -> None:
    """Fill a ``map<string, InferParameter>`` from plain values; other types travel as their text."""
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool | np.bool_):
            param.bool_param = bool(value)
        elif isinstance(value, int | np.integer):
            if value < 2**63:
                param.int64_param = int(value)
            else:
                param.uint64_param = int(value)
        elif isinstance(value, float | np.floating):
            param.double_param = float(value)
        elif isinstance(value, list | dict):
            param.string_param = orjson.dumps(value).decode()
        else:
            param.string_param = value if isinstance(value, str) else str(value)


def _shape(name: str, dims: Any, limits: Limits) -> tuple[int, ...]:
    return check_shape_limits(name, tuple(int(d) for d in dims), limits)


def _from_raw(name: str, dt: DataType, shape: tuple[int, ...], raw: bytes) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if dt is DataType.BYTES:
        return decode_bytes_tensor(name, memoryview(raw), count).reshape(shape)
    expected = count * dt.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input '{name}': {dt.value} with shape {fmt_shape(shape)} needs {expected} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dt.numpy.newbyteorder("<")).reshape(shape)


def _from_contents(name: str, dt: DataType, shape: tuple[int, ...], contents: Any) -> np.ndarray[Any, Any]:
    field = CONTENTS_FIELD.get(dt)
    if field is None:
        raise InvalidInput(f"input '{name}' is {dt.value}, which travels only in raw_input_contents")
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise InvalidInput(f"input '{name}' is {dt.value}: its values belong in '{field}', not '{others[0]}'")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInput(f"input '{name}': shape {fmt_shape(shape)} needs {count} values, got {len(values)}")
    if dt is DataType.BYTES:
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    try:
        return np.array(values, dtype=dt.numpy).reshape(shape)
    except OverflowError:
        raise InvalidInput(f"input '{name}': a value in '{field}' does not fit {dt.value}") from None


def decode_infer_request(request: pb.ModelInferRequest, limits: Limits) -> InferenceRequest:
    """Decode a ``ModelInferRequest`` into named numpy arrays."""
    inputs_pb = request.inputs
    if not inputs_pb:
        raise InvalidInput("the request has no inputs")
    if len(inputs_pb) > limits.max_tensors_per_request:
        raise InvalidInput(f"too many inputs ({len(inputs_pb)}); the limit is {limits.max_tensors_per_request}")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs_pb):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(inputs_pb)} inputs; "
                           "it needs one per input")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for i, item in enumerate(inputs_pb):
        name = item.name
        if not name:
            raise InvalidInput(f"input {i} has no name")
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        try:
            dt = DataType.parse(item.datatype)
        except ValueError:
            raise InvalidInput(f"input '{name}': unknown datatype {item.datatype!r}") from None
        shape = _shape(name, item.shape, limits)
        if raw:
            if item.HasField("contents") and item.contents.ListFields():
                raise InvalidInput(f"input '{name}' has both contents and raw_input_contents")
            inputs[name] = _from_raw(name, dt, shape, raw[i])
        else:
            inputs[name] = _from_contents(name, dt, shape, item.contents)
    outputs = [o.name for o in request.outputs] or None
    return InferenceRequest(
        inputs=inputs,
        outputs=outputs,
        id=request.id or None,
        parameters=from_parameters(request.parameters),
    )


def _raw_bytes(name: str, arr: np.ndarray[Any, Any]) -> tuple[DataType, bytes]:
    try:
        dt = DataType.from_numpy(arr.dtype.newbyteorder("="))
    except ValueError:
        raise InvalidInput(f"output '{name}' has dtype {arr.dtype}, which the protocol cannot carry") from None
    if dt is DataType.BYTES:
        return dt, encode_bytes_tensor(arr)
    le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return dt, np.ascontiguousarray(le).tobytes()


def encode_infer_response(response: InferenceResponse) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with every output in ``raw_output_contents``, in the order of ``outputs``."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    to_parameters(message.parameters, response.parameters)
    for name, arr in response.outputs.items():
        dt, raw = _raw_bytes(name, arr)
        message.outputs.add(name=name, datatype=dt.value, shape=list(arr.shape))
        message.raw_output_contents.append(raw)
    return message
