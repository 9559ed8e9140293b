"""Open Inference Protocol gRPC codec: ``ModelInferRequest`` -> :class:`InferenceRequest` -> ``ModelInferResponse``.

Inputs come either as ``raw_input_contents`` (one entry per input, the layout of the REST binary
extension; numeric tensors become read-only numpy views of those bytes) or as typed ``contents``.
Outputs always go back as ``raw_output_contents``, the form tritonclient and KServe's client read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from mlport.core.inference import InferenceRequest, InferenceResponse, Parameters
from mlport.core.types import DataType
from mlport.core.validate import check_shape_limits
from mlport.core.wire import from_contents, from_raw, set_parameter, to_raw
from mlport.errors import InvalidInput
from mlport.limits import Limits
from mlport.protocols.grpc.proto import inference_pb2 as pb

__all__ = ["decode_infer_request", "encode_infer_response", "from_parameters", "to_parameters"]


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
        if not set_parameter(param, value):
            param.string_param = orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)


def _shape(name: str, dims: Any, limits: Limits) -> tuple[int, ...]:
    return check_shape_limits(name, tuple(int(d) for d in dims), limits)


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
            inputs[name] = from_raw("input", name, dt, shape, raw[i], InvalidInput)
        else:
            inputs[name] = from_contents("input", name, dt, shape, item.contents, InvalidInput)
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
    raw = to_raw(dt, arr)
    return dt, raw if isinstance(raw, bytes) else raw.tobytes()


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
