"""TF Serving's gRPC API against a real server, with the official client stubs (tensorflow-serving-api).

Every answer is compared with the TF Serving REST API's and with the model library's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.builders import iris_onnx, ort_run, save_graph, scale_onnx
from tests.builders_tf import text_module, two_signature_module
from tests.conftest import Server, start_server

pytestmark = pytest.mark.slow

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
#: numpy dtype -> the ONNX element type of the echo model's input and output of that dtype.
DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64", "str"]


def echo_onnx(path: Path) -> Path:
    """One Identity per datatype mlport serves: input 'in_<dtype>' [N, 2] -> output 'out_<dtype>'."""
    from onnx import helper
    from onnx.helper import np_dtype_to_tensor_dtype

    inputs, outputs, nodes = [], [], []
    for name in DTYPES:
        et = np_dtype_to_tensor_dtype(np.dtype(object if name == "str" else name))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", et, ["N", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", et, ["N", 2]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
    return save_graph(helper.make_graph(nodes, "echo", inputs, outputs), path)


class Env:
    def __init__(self, root: Path, server: Server) -> None:
        self.root = root
        self.server = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.http = server.client()

    def rest(self, path: str, body: Any = None) -> Any:
        r = self.http.post(f"/v1/models/{path}", json=body) if body is not None else self.http.get(f"/v1/models/{path}")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("tfsgrpc") / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    scale_onnx(root / "half" / "1" / "model.onnx", 0.5, shape=(None,))
    scale_onnx(root / "scale" / "1" / "model.onnx", 1.0)
    scale_onnx(root / "scale" / "2" / "model.onnx", 2.0)
    (root / "scale" / "model.yaml").write_text(
        "version_policy: {all: true}\nversion_labels: {stable: 1, canary: 2}\n", encoding="utf-8")
    echo_onnx(root / "echo" / "1" / "model.onnx")
    two_signature_module(root / "tfiris" / "1")
    text_module(root / "text" / "1")
    server = start_server(root, "--poll-interval", "0", log_dir=tmp_path_factory.mktemp("logs"), timeout=180)
    e = Env(root, server)
    try:
        yield e
    finally:
        e.channel.close()
        e.http.close()
        server.stop()


def _predict(env: Env, name: str, inputs: dict[str, Any], **spec: Any) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    version = spec.pop("version", None)
    if version is not None:
        request.model_spec.version.value = version
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    for key, value in inputs.items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        request.inputs[key].CopyFrom(proto)
    return env.predict.Predict(request, timeout=60)


def _outputs(response: Any) -> dict[str, np.ndarray]:
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _error(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return str(err.value.details())


# ------------------------------------------------------------------------- Predict
def test_predict_onnx_equals_rest_and_onnxruntime(env: Env) -> None:
    response = _predict(env, "iris", {"input": X})
    got = _outputs(response)
    assert response.model_spec.name == "iris" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    own = ort_run(env.root / "iris" / "1" / "model.onnx", {"input": X})
    rest = env.rest("iris:predict", {"inputs": X.tolist()})["outputs"]
    for name in ("label", "probabilities"):
        assert got[name].dtype == own[name].dtype
        np.testing.assert_array_equal(got[name], own[name])
        np.testing.assert_allclose(got[name], np.asarray(rest[name], dtype=own[name].dtype), rtol=1e-6)
    filtered = _predict(env, "iris", {"input": X}, signature_name="serving_default")
    assert set(filtered.outputs) == {"label", "probabilities"}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "iris"
    request.inputs["input"].CopyFrom(tf.make_tensor_proto(X))
    request.output_filter.append("label")
    assert set(env.predict.Predict(request, timeout=60).outputs) == {"label"}


def test_predict_savedmodel_signatures_equal_rest_and_tensorflow(env: Env) -> None:
    loaded = tf.saved_model.load(str(env.root / "tfiris" / "1"))
    own = {k: v.numpy() for k, v in loaded.signatures["serving_default"](x=tf.constant(X)).items()}
    got = _outputs(_predict(env, "tfiris", {"x": X}))
    rest = env.rest("tfiris:predict", {"inputs": {"x": X.tolist()}})["outputs"]
    for name in ("probabilities", "label"):
        np.testing.assert_allclose(got[name], own[name], rtol=1e-6)
        np.testing.assert_allclose(got[name], np.asarray(rest[name]), rtol=1e-6)
    temperature = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    response = _predict(env, "tfiris", {"features": X, "temperature": temperature}, signature_name="scores")
    assert response.model_spec.signature_name == "scores"
    own_logits = loaded.signatures["scores"](features=tf.constant(X), temperature=tf.constant(temperature))["logits"]
    rest_logits = env.rest("tfiris:predict", {"signature_name": "scores",
                                               "inputs": {"features": X.tolist(), "temperature": temperature.tolist()}})
    np.testing.assert_allclose(_outputs(response)["logits"], own_logits.numpy(), rtol=1e-6)
    np.testing.assert_allclose(_outputs(response)["logits"], np.asarray(rest_logits["outputs"]), rtol=1e-6)
    message = _error(lambda: _predict(env, "tfiris", {"x": X}, signature_name="nope"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "'nope'" in message and "scores" in message


def test_string_tensors(env: Env) -> None:
    words = np.array([b"hello", "w\u00f6rld".encode(), b"\x00bin\xff"], dtype=object)
    got = _outputs(_predict(env, "text", {"text": words}))
    loaded = tf.saved_model.load(str(env.root / "text" / "1"))
    own = {k: v.numpy() for k, v in loaded.signatures["serving_default"](text=tf.constant(words)).items()}
    for name in ("length", "upper", "bucket"):
        np.testing.assert_array_equal(got[name], own[name])
    assert got["upper"].tolist() == [b"HELLO", "W\u00f6RLD".encode(), b"\x00BIN\xff"]


def test_every_dtype_round_trips(env: Env) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name in DTYPES:
        if name == "str":
            arrays[name] = np.array([[b"a", b""], [b"\x00z", "\u00e9".encode()]], dtype=object)
        elif name == "bool":
            arrays[name] = np.array([[True, False], [False, True]])
        else:
            info = np.finfo(name) if name.startswith("float") else np.iinfo(name)
            arrays[name] = np.array([[info.min, info.max], [0, 1]], dtype=name)
    got = _outputs(_predict(env, "echo", {f"in_{n}": a for n, a in arrays.items()}))
    for name, arr in arrays.items():
        out = got[f"out_{name}"]
        assert out.shape == arr.shape, name
        if name != "str":
            assert out.dtype == arr.dtype, name
        np.testing.assert_array_equal(out, arr)


def _typed(dtype: int, shape: list[int], field: str, values: list[Any]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]))
    getattr(proto, field).extend(values)
    return proto


def test_typed_value_fields_and_broadcast(env: Env) -> None:
    """Tensors in the typed *_val fields (as other clients send them), and one value filling a tensor."""
    half_bits = np.array([1.5, -2.0, 0.25, 65504.0], dtype=np.float16).view(np.uint16).astype(int).tolist()
    inputs = {
        "in_bool": _typed(types_pb2.DT_BOOL, [2, 2], "bool_val", [True, False, True, True]),
        "in_uint8": _typed(types_pb2.DT_UINT8, [2, 2], "int_val", [0, 255, 7, 8]),
        "in_uint16": _typed(types_pb2.DT_UINT16, [2, 2], "int_val", [65535, 1, 2, 3]),
        "in_uint32": _typed(types_pb2.DT_UINT32, [2, 2], "uint32_val", [2**32 - 1, 1, 2, 3]),
        "in_uint64": _typed(types_pb2.DT_UINT64, [2, 2], "uint64_val", [2**64 - 1, 1, 2, 3]),
        "in_int8": _typed(types_pb2.DT_INT8, [2, 2], "int_val", [-128, 127, 0, 1]),
        "in_int16": _typed(types_pb2.DT_INT16, [2, 2], "int_val", [-32768, 32767, 0, 1]),
        "in_int32": _typed(types_pb2.DT_INT32, [2, 2], "int_val", [-(2**31), 2**31 - 1, 0, 1]),
        "in_int64": _typed(types_pb2.DT_INT64, [2, 2], "int64_val", [-(2**63), 2**63 - 1, 0, 1]),
        "in_float16": _typed(types_pb2.DT_HALF, [2, 2], "half_val", half_bits),
        "in_float32": _typed(types_pb2.DT_FLOAT, [2, 2], "float_val", [7.5]),  # one value fills the tensor
        "in_float64": _typed(types_pb2.DT_DOUBLE, [2, 2], "double_val", [1e300, -1e-300, 0.0, 2.0]),
        "in_str": _typed(types_pb2.DT_STRING, [2, 2], "string_val", [b"a", b"b", b"c", b"d"]),
    }
    got = _outputs(_predict(env, "echo", inputs))
    assert got["out_uint64"].tolist() == [[2**64 - 1, 1], [2, 3]]
    assert got["out_int8"].dtype == np.int8 and got["out_int8"].tolist() == [[-128, 127], [0, 1]]
    assert got["out_float16"].tolist() == [[1.5, -2.0], [0.25, 65504.0]]
    assert got["out_float32"].tolist() == [[7.5, 7.5], [7.5, 7.5]]
    assert got["out_str"].tolist() == [[b"a", b"b"], [b"c", b"d"]]
    bad = dict(inputs, in_int8=_typed(types_pb2.DT_INT8, [2, 2], "int_val", [300, 0, 0, 0]))
    assert "does not fit INT8" in _error(lambda: _predict(env, "echo", bad), grpc.StatusCode.INVALID_ARGUMENT)
    short = dict(inputs, in_int32=_typed(types_pb2.DT_INT32, [2, 2], "int_val", [1, 2]))
    assert "needs 4 values" in _error(lambda: _predict(env, "echo", short), grpc.StatusCode.INVALID_ARGUMENT)


def test_versions_labels_and_errors(env: Env) -> None:
    x = np.ones((1, 3), dtype=np.float32)
    assert _outputs(_predict(env, "scale", {"x": x}, version=1))["y"].tolist() == [[1.0] * 3]
    canary = _predict(env, "scale", {"x": x}, version_label="canary")
    assert _outputs(canary)["y"].tolist() == [[2.0] * 3] and canary.model_spec.version.value == 2
    assert _outputs(_predict(env, "scale", {"x": x}))["y"].tolist() == [[2.0] * 3]
    assert "no label 'beta'" in _error(lambda: _predict(env, "scale", {"x": x}, version_label="beta"),
                                       grpc.StatusCode.NOT_FOUND)
    _error(lambda: _predict(env, "scale", {"x": x}, version=7), grpc.StatusCode.NOT_FOUND)
    _error(lambda: _predict(env, "nope", {"x": x}), grpc.StatusCode.NOT_FOUND)
    assert "empty" in _error(lambda: _predict(env, "", {"x": x}), grpc.StatusCode.INVALID_ARGUMENT)
    complex_input = tf.make_tensor_proto(np.ones((1, 3), dtype=np.complex64))
    assert "DT_COMPLEX64" in _error(lambda: _predict(env, "scale", {"x": complex_input}),
                                    grpc.StatusCode.INVALID_ARGUMENT)
    assert "expects" in _error(lambda: _predict(env, "scale", {"x": np.ones((1, 5), np.float32)}),
                               grpc.StatusCode.INVALID_ARGUMENT)


# ---------------------------------------------------------------- Classify, Regress
def _example(**features: Any) -> example_pb2.Example:
    example = example_pb2.Example()
    for key, values in features.items():
        feature = example.features.feature[key]
        if isinstance(values[0], bytes):
            feature.bytes_list.CopyFrom(feature_pb2.BytesList(value=values))
        elif isinstance(values[0], float):
            feature.float_list.CopyFrom(feature_pb2.FloatList(value=values))
        else:
            feature.int64_list.CopyFrom(feature_pb2.Int64List(value=values))
    return example


def _input(examples: list[example_pb2.Example], context: example_pb2.Example | None = None) -> input_pb2.Input:
    if context is None:
        return input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))
    return input_pb2.Input(example_list_with_context=input_pb2.ExampleListWithContext(examples=examples,
                                                                                        context=context))


def test_classify_onnx_and_savedmodel(env: Env) -> None:
    examples = [_example(input=row.tolist()) for row in X]
    request = classification_pb2.ClassificationRequest(input=_input(examples))
    request.model_spec.name = "iris"
    response = env.predict.Classify(request, timeout=60)
    scores = np.array([[c.score for c in row.classes] for row in response.result.classifications], dtype=np.float32)
    np.testing.assert_allclose(scores, ort_run(env.root / "iris" / "1" / "model.onnx", {"input": X})["probabilities"],
                               rtol=1e-6)
    assert response.model_spec.name == "iris" and response.model_spec.version.value == 1

    tf_request = classification_pb2.ClassificationRequest(input=_input([_example(x=row.tolist()) for row in X]))
    tf_request.model_spec.name = "tfiris"
    tf_scores = [[c.score for c in row.classes] for row in env.predict.Classify(tf_request, timeout=60)
                 .result.classifications]
    rest = env.rest("tfiris:predict", {"inputs": {"x": X.tolist()}})["outputs"]["probabilities"]
    np.testing.assert_allclose(tf_scores, rest, rtol=1e-6)

    text = classification_pb2.ClassificationRequest(input=_input([_example(text=[b"a"])]))
    text.model_spec.name = "text"
    assert "does not fit Classify" in _error(lambda: env.predict.Classify(text, timeout=60),
                                             grpc.StatusCode.INVALID_ARGUMENT)
    missing = classification_pb2.ClassificationRequest(input=_input([_example(other=[1.0, 2.0, 3.0, 4.0])]))
    missing.model_spec.name = "iris"
    assert "no feature 'input'" in _error(lambda: env.predict.Classify(missing, timeout=60),
                                          grpc.StatusCode.INVALID_ARGUMENT)


def test_regress_with_context(env: Env) -> None:
    examples = [_example(x=[v]) for v in (1.0, 3.0, -4.0)]
    request = regression_pb2.RegressionRequest(input=_input(examples, context=_example(unused=[b"ctx"])))
    request.model_spec.name = "half"
    response = env.predict.Regress(request, timeout=60)
    assert [r.value for r in response.result.regressions] == [0.5, 1.5, -2.0]
    rest = env.rest("half:predict", {"instances": [1.0, 3.0, -4.0]})["predictions"]
    assert rest == [r.value for r in response.result.regressions]
    # the feature comes from the context when the examples do not set it
    shared = regression_pb2.RegressionRequest(input=_input([example_pb2.Example()] * 2, context=_example(x=[8.0])))
    shared.model_spec.name = "half"
    assert [r.value for r in env.predict.Regress(shared, timeout=60).result.regressions] == [4.0, 4.0]
    iris = regression_pb2.RegressionRequest(input=_input([_example(input=X[0].tolist())]))
    iris.model_spec.name = "iris"
    assert "does not fit Regress" in _error(lambda: env.predict.Regress(iris, timeout=60),
                                            grpc.StatusCode.INVALID_ARGUMENT)


# --------------------------------------------------------------- metadata, status
def test_metadata_equals_rest(env: Env) -> None:
    for name in ("iris", "tfiris", "text"):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        response = env.predict.GetModelMetadata(request, timeout=60)
        defs = get_model_metadata_pb2.SignatureDefMap()
        assert response.metadata["signature_def"].Unpack(defs)
        rest = env.rest(f"{name}/metadata")
        got = json_format.MessageToDict(defs, preserving_proto_field_name=True)
        assert got == _without_defaults(rest["metadata"]["signature_def"]), name
        assert response.model_spec.name == name and response.model_spec.version.value == 1
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "iris"
    assert "signature_def" in _error(lambda: env.predict.GetModelMetadata(request, timeout=60),
                                     grpc.StatusCode.INVALID_ARGUMENT)


def _without_defaults(value: Any) -> Any:
    """The REST JSON as protobuf's JSON printer writes it: fields at their default value left out."""
    if isinstance(value, dict):
        return {k: _without_defaults(v) for k, v in value.items() if v not in ("", False, [], {}, "0")}
    if isinstance(value, list):
        return [_without_defaults(v) for v in value]
    return value


def test_model_status_equals_rest(env: Env) -> None:
    for name, spec in (("scale", {}), ("scale", {"version_label": "stable"}), ("iris", {})):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        for key, value in spec.items():
            setattr(request.model_spec, key, value)
        response = env.models.GetModelStatus(request, timeout=60)
        got = json_format.MessageToDict(response, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
        path = name if not spec else f"{name}/labels/{spec['version_label']}"
        assert got == env.rest(path), (name, spec)
    assert [s.version for s in env.models.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "scale", "version": {"value": 2}}),
        timeout=60).model_version_status] == [2]
    _error(lambda: env.models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "nope"}), timeout=60), grpc.StatusCode.NOT_FOUND)


def test_reflection_lists_the_tf_serving_services(env: Env) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    db = ProtoReflectionDescriptorDatabase(env.channel)
    services = db.get_services()
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "inference.GRPCInferenceService"} <= set(services)
    file = db.FindFileContainingSymbol("tensorflow.serving.PredictionService")
    assert "tensorflow.serving.PredictRequest" in {f"{file.package}.{m.name}" for m in file.message_type}
