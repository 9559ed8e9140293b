"""TF Serving gRPC codec: ``TensorProto`` <-> numpy, ``tf.Example`` lists -> named inputs, model specs.

Numeric tensors are read from ``tensor_content`` (little-endian, row-major: the form TensorFlow's
``make_tensor_proto`` writes) or from the typed ``*_val`` field of their dtype, where one value fills
the whole tensor. Answers always carry numeric tensors in ``tensor_content`` and strings in ``string_val``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.validate import check_shape_limits, fmt_shape
from mlport.errors import InvalidInput
from mlport.limits import Limits
from mlport.protocols.grpc.proto import tf_framework_pb2 as tfpb
from mlport.protocols.grpc.proto import tf_serving_pb2 as spb

__all__ = [
    "classification_result",
    "classify_outputs",
    "decode_predict_request",
    "decode_tensor",
    "encode_predict_response",
    "encode_tensor",
    "examples_to_inputs",
    "model_spec",
    "regress_output",
    "regression_result",
]

#: TensorFlow's ``DataType`` number of each datatype mlport serves.
TF_DTYPE: dict[DataType, int] = {
    DataType.BOOL: tfpb.DT_BOOL,
    DataType.UINT8: tfpb.DT_UINT8,
    DataType.UINT16: tfpb.DT_UINT16,
    DataType.UINT32: tfpb.DT_UINT32,
    DataType.UINT64: tfpb.DT_UINT64,
    DataType.INT8: tfpb.DT_INT8,
    DataType.INT16: tfpb.DT_INT16,
    DataType.INT32: tfpb.DT_INT32,
    DataType.INT64: tfpb.DT_INT64,
    DataType.FP16: tfpb.DT_HALF,
    DataType.FP32: tfpb.DT_FLOAT,
    DataType.FP64: tfpb.DT_DOUBLE,
    DataType.BYTES: tfpb.DT_STRING,
}
_FROM_TF = {v: k for k, v in TF_DTYPE.items()}

#: The typed field that carries each datatype's values, and the numpy type to read that field as.
_VALUES: dict[DataType, tuple[str, Any]] = {
    DataType.BOOL: ("bool_val", np.bool_),
    DataType.UINT8: ("int_val", np.int32),
    DataType.UINT16: ("int_val", np.int32),
    DataType.UINT32: ("uint32_val", np.uint32),
    DataType.UINT64: ("uint64_val", np.uint64),
    DataType.INT8: ("int_val", np.int32),
    DataType.INT16: ("int_val", np.int32),
    DataType.INT32: ("int_val", np.int32),
    DataType.INT64: ("int64_val", np.int64),
    DataType.FP16: ("half_val", np.int32),
    DataType.FP32: ("float_val", np.float32),
    DataType.FP64: ("double_val", np.float64),
    DataType.BYTES: ("string_val", object),
}


def _dtype(name: str, number: int) -> DataType:
    found = _FROM_TF.get(number)
    if found is None:
        label = tfpb.DataType.Name(number) if number in tfpb.DataType.values() else str(number)
        known = ", ".join(tfpb.DataType.Name(v) for v in TF_DTYPE.values())
        raise InvalidInput(f"input '{name}' has dtype {label}, which mlport does not serve; dtypes: {known}")
    return found


def _shape(name: str, proto: Any, limits: Limits) -> tuple[int, ...]:
    shape_pb = proto.tensor_shape
    if shape_pb.unknown_rank:
        raise InvalidInput(f"input '{name}' has an unknown rank; send its shape")
    return check_shape_limits(name, tuple(int(d.size) for d in shape_pb.dim), limits)


def _from_values(name: str, dt: DataType, shape: tuple[int, ...], proto: Any) -> np.ndarray[Any, Any]:
    field, read_as = _VALUES[dt]
    values = getattr(proto, field)
    count = math.prod(shape)
    if len(values) not in (count, 1) or (len(values) == 1 and count == 0):
        raise InvalidInput(f"input '{name}': shape {fmt_shape(shape)} needs {count} values in '{field}' "
                           f"(or one value for all), got {len(values)}")
    if dt is DataType.BYTES:
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    else:
        arr = np.asarray(values, dtype=read_as)
        if dt is DataType.FP16:
            arr = arr.astype(np.uint16).view(np.float16)
        elif arr.dtype != dt.numpy:
            info = np.iinfo(dt.numpy)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise InvalidInput(f"input '{name}': a value in '{field}' does not fit {dt.value}")
            arr = arr.astype(dt.numpy)
    if len(values) != count:
        arr = np.repeat(arr, count)
    return arr.reshape(shape)


def decode_tensor(name: str, proto: Any, limits: Limits) -> np.ndarray[Any, Any]:
    """One ``TensorProto`` as a numpy array (numeric content is a read-only view of the message's bytes)."""
    dt = _dtype(name, proto.dtype)
    shape = _shape(name, proto, limits)
    content = proto.tensor_content
    if content and dt is not DataType.BYTES:
        expected = math.prod(shape) * dt.itemsize
        if len(content) != expected:
            raise InvalidInput(f"input '{name}': {dt.tf_name} with shape {fmt_shape(shape)} needs {expected} "
                               f"bytes of tensor_content, got {len(content)}")
        return np.frombuffer(content, dtype=dt.numpy.newbyteorder("<")).reshape(shape)
    return _from_values(name, dt, shape, proto)


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


_to_bytes = np.frompyfunc(_as_bytes, 1, 1)


def encode_tensor(name: str, arr: np.ndarray[Any, Any], target: Any) -> None:
    """Fill ``target`` (a ``TensorProto``) with ``arr``."""
    try:
        dt = DataType.from_numpy(arr.dtype)
    except ValueError:
        raise InvalidInput(f"output '{name}' has dtype {arr.dtype}, which TF Serving's API cannot carry") from None
    target.dtype = TF_DTYPE[dt]
    target.tensor_shape.dim.extend(tfpb.TensorShapeProto.Dim(size=d) for d in arr.shape)
    if dt is DataType.BYTES:
        target.string_val.extend(_to_bytes(arr.reshape(-1)).tolist() if arr.size else [])
    else:
        target.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def decode_predict_request(request: Any, limits: Limits, signature_name: str) -> InferenceRequest:
    """A ``PredictRequest`` as named arrays; ``output_filter`` chooses the outputs, ``signature_name`` the signature."""
    if not request.inputs:
        raise InvalidInput("the request has no inputs")
    if len(request.inputs) > limits.max_tensors_per_request:
        raise InvalidInput(f"too many inputs ({len(request.inputs)}); the limit is {limits.max_tensors_per_request}")
    inputs = {name: decode_tensor(name, proto, limits) for name, proto in request.inputs.items()}
    wanted = list(request.output_filter)
    if len(set(wanted)) != len(wanted):
        raise InvalidInput("output_filter names an output twice")
    return InferenceRequest(inputs=inputs, outputs=wanted or None, parameters={"signature_name": signature_name})


def model_spec(name: str, version: int | str, signature_name: str) -> Any:
    """The ``ModelSpec`` an answer carries: the model, the version that answered and the signature used."""
    spec = spb.ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = int(version)
    return spec


def encode_predict_response(response: InferenceResponse, signature_name: str) -> Any:
    message = spb.PredictResponse(model_spec=model_spec(response.model_name, response.model_version, signature_name))
    for name, arr in response.outputs.items():
        encode_tensor(name, arr, message.outputs[name])
    return message


# ------------------------------------------------------------------------ examples
def _examples(inputs: Any, limits: Limits) -> list[Any]:
    """The examples of an ``Input``, each with the context's features it does not set itself."""
    kind = inputs.WhichOneof("kind")
    if kind is None:
        raise InvalidInput("the request's input has no examples: set example_list or example_list_with_context")
    if kind == "example_list":
        examples = list(inputs.example_list.examples)
    else:
        with_context = inputs.example_list_with_context
        examples = []
        context = with_context.context.features.feature
        for example in with_context.examples:
            merged = tfpb.Example()
            merged.features.feature.MergeFrom(context)
            merged.features.feature.MergeFrom(example.features.feature)
            examples.append(merged)
    if not examples:
        raise InvalidInput("the request's input has no examples")
    if len(examples) > limits.max_tensor_elements:
        raise InvalidInput(f"too many examples ({len(examples)}); the limit is {limits.max_tensor_elements}")
    return examples


def _feature_values(spec: TensorSpec, examples: list[Any]) -> list[Any]:
    rows = []
    for i, example in enumerate(examples):
        feature = example.features.feature.get(spec.name)
        kind = feature.WhichOneof("kind") if feature is not None else None
        if kind is None:
            raise InvalidInput(f"example {i} has no feature '{spec.name}' (the model's inputs: see its metadata)")
        rows.append(getattr(feature, kind).value)
    return rows


def _feature_tensor(spec: TensorSpec, examples: list[Any], limits: Limits) -> np.ndarray[Any, Any]:
    """One input from the feature of the same name in every example: axis 0 is the example."""
    rows = _feature_values(spec, examples)
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise InvalidInput(f"feature '{spec.name}' has a different number of values in different examples")
    arr: np.ndarray[Any, Any]
    if examples[0].features.feature[spec.name].WhichOneof("kind") == "bytes_list":
        arr = np.empty((len(rows), width), dtype=object)
        arr[:] = [list(r) for r in rows]
    else:
        try:
            arr = np.array([list(r) for r in rows])
        except ValueError:
            raise InvalidInput(f"feature '{spec.name}' mixes kinds of values across examples") from None
    inner = spec.shape[1:] if spec.batched else spec.shape
    if not inner:
        if width != 1:
            raise InvalidInput(f"feature '{spec.name}' needs one value per example, got {width}")
        arr = arr.reshape(len(rows))
    elif all(d >= 0 for d in inner) or sum(d < 0 for d in inner) == 1:
        known = math.prod(d for d in inner if d >= 0)
        if (known == 0 and width) or (known and width % known):
            raise InvalidInput(f"feature '{spec.name}' has {width} values per example; the input's shape is "
                               f"{fmt_shape(spec.shape)}")
        arr = arr.reshape((len(rows), *inner))
    check_shape_limits(spec.name, arr.shape, limits)
    return arr


def examples_to_inputs(inputs: Any, signature: Signature, limits: Limits) -> dict[str, np.ndarray[Any, Any]]:
    """The model's inputs from an ``Input`` of ``tf.Example`` s.

    Each model input is the feature of its name; a model with a single string input and no feature of
    that name takes the serialized examples themselves (TF Serving's classify and regress signatures).
    """
    examples = _examples(inputs, limits)
    specs = signature.inputs
    if (len(specs) == 1 and specs[0].datatype is DataType.BYTES
            and specs[0].name not in examples[0].features.feature):
        arr = np.empty(len(examples), dtype=object)
        arr[:] = [e.SerializeToString(deterministic=True) for e in examples]
        return {specs[0].name: arr}
    return {spec.name: _feature_tensor(spec, examples, limits) for spec in specs}


# ------------------------------------------------------------- classify and regress
#: Output names a classifier's scores go by: TF Serving's classify signatures, then mlport's converters.
SCORE_OUTPUTS = ("scores", "probabilities")
#: Output names a regressor's values go by, before falling back on a model's only output.
REGRESSION_OUTPUTS = ("outputs", "predictions", "variable")


def classify_outputs(signature: Signature, signature_name: str) -> tuple[str | None, str | None]:
    """The outputs (scores, classes) that answer ``Classify``; refuses a signature that has neither."""
    scores = next((n for n in SCORE_OUTPUTS if _fits(signature.output(n), numeric=True)), None)
    classes = "classes" if _fits(signature.output("classes"), numeric=False) else None
    if scores is None and classes is None:
        raise InvalidInput(
            f"signature '{signature_name}' does not fit Classify: it needs an output 'scores' or 'probabilities' "
            f"(numbers, [batch, classes]) or 'classes' (strings, [batch, classes]); its outputs: "
            f"{', '.join(signature.output_names)}"
        )
    return scores, classes


def _fits(spec: TensorSpec | None, numeric: bool) -> bool:
    if spec is None or len(spec.shape) != 2:
        return False
    return (spec.datatype is not DataType.BYTES) == numeric


def regress_output(signature: Signature, signature_name: str) -> str:
    """The output that answers ``Regress``: numbers, one per example ([batch] or [batch, 1])."""
    named = [n for n in REGRESSION_OUTPUTS if signature.output(n) is not None]
    candidates = named[:1] or (signature.output_names if len(signature.outputs) == 1 else [])
    for name in candidates:
        spec = signature.output(name)
        assert spec is not None
        if spec.datatype is not DataType.BYTES and (len(spec.shape) == 1 or spec.shape[1:] == (1,)):
            return name
    raise InvalidInput(
        f"signature '{signature_name}' does not fit Regress: it needs one numeric output of shape [batch] or "
        f"[batch, 1] (named 'outputs' when there are several); its outputs: {', '.join(signature.output_names)}"
    )


def classification_result(scores: np.ndarray[Any, Any] | None, classes: np.ndarray[Any, Any] | None) -> Any:
    """A ``ClassificationResult``: per example, per class, the label (from ``classes``) and the score."""
    first = scores if scores is not None else classes
    assert first is not None
    if first.ndim != 2 or (scores is not None and classes is not None and scores.shape != classes.shape):
        raise InvalidInput("the model's scores and classes are not both [batch, classes] of one shape")
    n, k = first.shape
    score_rows = scores.astype(np.float32).tolist() if scores is not None else [[0.0] * k] * n
    label_rows = (_to_text(classes).tolist() if classes is not None else [[""] * k] * n)
    result = spb.ClassificationResult()
    for labels, values in zip(label_rows, score_rows, strict=True):
        result.classifications.add().classes.extend(
            spb.Class(label=label, score=score) for label, score in zip(labels, values, strict=True)
        )
    return result


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_to_text = np.frompyfunc(_text, 1, 1)


def regression_result(values: np.ndarray[Any, Any]) -> Any:
    """A ``RegressionResult`` with one value per example."""
    result = spb.RegressionResult()
    result.regressions.extend(spb.Regression(value=v) for v in values.reshape(len(values)).astype(float).tolist())
    return result
