"""The TF Serving REST codec, without a server."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import orjson
import pytest

from mlport.core.inference import InferenceResponse
from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, ModelNotFound
from mlport.formats.config import ModelConfig
from mlport.limits import Limits
from mlport.protocols.tfserving import (
    ModelPath,
    decode_predict_request,
    encode_predict_response,
    model_metadata,
    model_status,
    parse_json_body,
    parse_model_path,
)
from mlport.runtime.manager import ModelStatus, VersionState, VersionStatus

LIMITS = Limits()
ONE = Signature((TensorSpec("x", DataType.FP32, (-1, 3)),), (TensorSpec("y", DataType.FP32, (-1, 3)),))
MANY = Signature(
    (
        TensorSpec("tag", DataType.BYTES, (-1,)),
        TensorSpec("signal", DataType.FP32, (-1, 5)),
        TensorSpec("sensor", DataType.FP32, (-1, 2, 2)),
    ),
    (TensorSpec("total", DataType.FP32, (-1,)), TensorSpec("tag_out", DataType.BYTES, (-1,))),
)
TEXT = Signature((TensorSpec("text", DataType.BYTES, (-1,)),), (TensorSpec("text", DataType.BYTES, (-1,)),))


def b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


def dumps(doc: Any) -> Any:
    """What the client receives (the server writes responses with orjson)."""
    return orjson.loads(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))


# ---------------------------------------------------------------------------- paths
@pytest.mark.parametrize(
    ("rest", "want"),
    [
        ("iris", ModelPath("iris")),
        ("iris/metadata", ModelPath("iris", metadata=True)),
        ("iris/versions/2", ModelPath("iris", version="2")),
        ("iris/versions/2/metadata", ModelPath("iris", version="2", metadata=True)),
        ("iris/labels/stable", ModelPath("iris", label="stable")),
        ("iris/labels/stable/metadata", ModelPath("iris", label="stable", metadata=True)),
        ("iris:predict", ModelPath("iris", verb="predict")),
        ("iris/versions/2:predict", ModelPath("iris", version="2", verb="predict")),
        ("iris/labels/canary:predict", ModelPath("iris", label="canary", verb="predict")),
        ("iris:classify", ModelPath("iris", verb="classify")),
        ("metadata", ModelPath("metadata")),
    ],
)
def test_parse_model_path(rest: str, want: ModelPath) -> None:
    assert parse_model_path(rest) == want


@pytest.mark.parametrize(
    "rest",
    ["", "iris/", "iris/foo", "iris/versions", "iris/versions/1/foo", "iris/metadata:predict", "iris:",
     "a:b/versions/1", "iris/things/1", "iris//1", "iris:predict:x/y"],
)
def test_parse_model_path_refuses(rest: str) -> None:
    assert parse_model_path(rest) is None


# ------------------------------------------------------------------- status, metadata
def test_status_maps_states_and_errors() -> None:
    status = ModelStatus("m", (
        VersionStatus(4, VersionState.LOADING),
        VersionStatus(3, VersionState.READY),
        VersionStatus(2, VersionState.UNAVAILABLE, "onnxruntime could not load model.onnx"),
        VersionStatus(1, VersionState.UNAVAILABLE, "unloaded"),
    ))
    rows = model_status(status)["model_version_status"]
    assert rows == [
        {"version": "4", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "2", "state": "END",
         "status": {"error_code": "UNKNOWN", "error_message": "onnxruntime could not load model.onnx"}},
        {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
    ]
    assert model_status(status, 3)["model_version_status"] == [rows[1]]
    with pytest.raises(ModelNotFound, match="no version 9"):
        model_status(status, 9)


def test_metadata_shape() -> None:
    sig = Signature(
        (TensorSpec("input", DataType.FP32, (-1, 4)), TensorSpec("k", DataType.BYTES, ())),
        (TensorSpec("label", DataType.INT64, (-1,)),),
    )
    doc = model_metadata("iris", 7, sig)
    assert doc["model_spec"] == {"name": "iris", "signature_name": "", "version": "7"}
    sd = doc["metadata"]["signature_def"]["signature_def"]
    assert list(sd) == ["serving_default"]
    assert sd["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert sd["serving_default"]["inputs"]["input"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}], "unknown_rank": False},
        "name": "input",
    }
    assert sd["serving_default"]["inputs"]["k"]["dtype"] == "DT_STRING"
    assert sd["serving_default"]["inputs"]["k"]["tensor_shape"]["dim"] == []
    assert sd["serving_default"]["outputs"]["label"]["dtype"] == "DT_INT64"


def test_config_takes_version_labels() -> None:
    cfg = ModelConfig.model_validate({"version_labels": {"stable": 1, "canary": "2"}})
    assert cfg.version_labels == {"stable": 1, "canary": 2}
    assert ModelConfig().version_labels == {}


# ------------------------------------------------------------------------ JSON body
def test_parse_json_body_standard_and_non_finite() -> None:
    assert parse_json_body(b'{"instances": [1.5]}') == {"instances": [1.5]}
    doc = parse_json_body(b'{"instances": [NaN, Infinity, -Infinity, 1e3]}')
    values = doc["instances"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf and values[3] == 1000.0


@pytest.mark.parametrize("body", [b"", b"  ", b"{", b'{"a": NaN', b'{"a": nan}', b"[1,]"])
def test_parse_json_body_refuses(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_json_body(body)


# ------------------------------------------------------------------------- decoding
def test_row_one_input() -> None:
    req, columnar = decode_predict_request({"instances": [[1, 2, 3], [4, 5, 6]]}, ONE, LIMITS)
    assert not columnar
    np.testing.assert_array_equal(req.inputs["x"], [[1, 2, 3], [4, 5, 6]])
    assert req.parameters == {"signature_name": "serving_default"}


def test_row_named_inputs_share_the_batch() -> None:
    doc = {"instances": [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
    ]}
    req, columnar = decode_predict_request(doc, MANY, LIMITS)
    assert not columnar
    assert req.inputs["tag"].tolist() == ["foo", "bar"]
    assert req.inputs["signal"].shape == (2, 5)
    assert req.inputs["sensor"].shape == (2, 2, 2)


def test_row_named_for_a_one_input_model() -> None:
    req, _ = decode_predict_request({"instances": [{"x": [1, 2, 3]}]}, ONE, LIMITS)
    assert req.inputs["x"].shape == (1, 3)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([{"tag": "a", "signal": [1] * 5, "sensor": [[1, 2], [3, 4]]}, {"tag": "b"}], "same inputs"),
        ([{"tag": "a", "signal": [1] * 5, "sensor": [[1, 2], [3, 4]]}, ["b"]], "instance 1"),
        (["a", "b"], "several inputs"),
        ([], "empty"),
        ("a", "must be a list"),
    ],
)
def test_row_errors(instances: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_predict_request({"instances": instances}, MANY, LIMITS)


def test_columnar_single_and_named() -> None:
    req, columnar = decode_predict_request({"inputs": [[1, 2, 3]]}, ONE, LIMITS)
    assert columnar
    assert req.inputs["x"].shape == (1, 3)
    doc = {"inputs": {"tag": ["foo", "bar"], "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
                      "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}}
    req, columnar = decode_predict_request(doc, MANY, LIMITS)
    assert columnar
    assert {k: v.shape for k, v in req.inputs.items()} == {"tag": (2,), "signal": (2, 5), "sensor": (2, 2, 2)}


def test_columnar_errors() -> None:
    with pytest.raises(InvalidInput, match="several inputs"):
        decode_predict_request({"inputs": ["a"]}, MANY, LIMITS)
    with pytest.raises(InvalidInput, match="empty object"):
        decode_predict_request({"inputs": {}}, MANY, LIMITS)


def test_exactly_one_of_instances_and_inputs() -> None:
    with pytest.raises(InvalidInput, match="both"):
        decode_predict_request({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, ONE, LIMITS)
    with pytest.raises(InvalidInput, match="needs 'instances'"):
        decode_predict_request({"signature_name": "serving_default"}, ONE, LIMITS)
    with pytest.raises(InvalidInput, match="JSON object"):
        decode_predict_request([[1, 2, 3]], ONE, LIMITS)


def test_signature_name() -> None:
    for name in (None, "", "serving_default"):
        doc: dict[str, Any] = {"instances": [[1, 2, 3]]}
        if name is not None:
            doc["signature_name"] = name
        req, _ = decode_predict_request(doc, ONE, LIMITS)
        assert req.parameters["signature_name"] == "serving_default"
    with pytest.raises(InvalidInput, match="'serving_default'"):
        decode_predict_request({"instances": [[1, 2, 3]], "signature_name": "classify"}, ONE, LIMITS)
    with pytest.raises(InvalidInput, match="must be a string"):
        decode_predict_request({"instances": [[1, 2, 3]], "signature_name": 3}, ONE, LIMITS)
    req, _ = decode_predict_request(
        {"instances": [[1, 2, 3]], "signature_name": "other"}, ONE, LIMITS, signatures=("serving_default", "other")
    )
    assert req.parameters["signature_name"] == "other"


def test_b64_anywhere_in_input() -> None:
    raw = [b"\x00\xffbinary\x00", b"text"]
    req, _ = decode_predict_request({"instances": [b64(raw[0]), b64(raw[1])]}, TEXT, LIMITS)
    arr = req.inputs["text"]
    assert arr.dtype == object and arr.tolist() == raw  # trailing NUL kept
    req, _ = decode_predict_request({"inputs": {"text": [[b64(b"a")], ["plain"]]}}, TEXT, LIMITS)
    assert req.inputs["text"].tolist() == [[b"a"], [b"plain"]]
    req, _ = decode_predict_request({"inputs": b64(b"one")}, TEXT, LIMITS)
    assert req.inputs["text"].shape == () and req.inputs["text"].item() == b"one"
    doc = {"instances": [{"tag": b64(b"x"), "signal": [1] * 5, "sensor": [[1, 2], [3, 4]]}]}
    req, _ = decode_predict_request(doc, MANY, LIMITS)
    assert req.inputs["tag"].tolist() == [b"x"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"b64": "not base64!"}], "not valid base64"),
        ([{"b64": 3}], "b64"),
        ([{"other": "x"}], "b64"),
        ([[b64(b"a")], [b64(b"b"), b64(b"c")]], "rectangular"),
        ([[1, 2], [3]], "rectangular"),
        ([True, None], "null"),
        ([b64(b"a"), None], "null"),
    ],
)
def test_bad_tensor_data(inputs: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_predict_request({"inputs": inputs}, TEXT, LIMITS)


def test_non_finite_values_reach_the_array() -> None:
    doc = parse_json_body(b'{"instances": [[NaN, Infinity, -Infinity]]}')
    req, _ = decode_predict_request(doc, ONE, LIMITS)
    x = req.inputs["x"]
    assert np.isnan(x[0, 0]) and x[0, 1] == np.inf and x[0, 2] == -np.inf


def test_limits_apply() -> None:
    small = Limits(max_tensor_elements=4)
    with pytest.raises(InvalidInput, match="limit"):
        decode_predict_request({"instances": [[1, 2, 3], [4, 5, 6]]}, ONE, small)


# ------------------------------------------------------------------------- encoding
def response(**outputs: np.ndarray[Any, Any]) -> InferenceResponse:
    return InferenceResponse("m", "1", dict(outputs))


def test_encode_one_output() -> None:
    y = np.array([[1.5, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    assert dumps(encode_predict_response(response(y=y), columnar=False)) == {"predictions": y.tolist()}
    assert dumps(encode_predict_response(response(y=y), columnar=True)) == {"outputs": y.tolist()}


def test_encode_several_outputs() -> None:
    label = np.array([0, 2], dtype=np.longlong)
    prob = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    rows = dumps(encode_predict_response(response(label=label, prob=prob), columnar=False))
    assert rows == {"predictions": [{"label": 0, "prob": [0.9, 0.1]}, {"label": 2, "prob": [0.2, 0.8]}]}
    cols = dumps(encode_predict_response(response(label=label, prob=prob), columnar=True))
    assert cols == {"outputs": {"label": [0, 2], "prob": [[0.9, 0.1], [0.2, 0.8]]}}


def test_encode_rows_need_one_batch_size() -> None:
    with pytest.raises(InvalidInput, match="batch size"):
        encode_predict_response(response(a=np.zeros(2), b=np.zeros(3)), columnar=False)
    with pytest.raises(InvalidInput, match="batch size"):
        encode_predict_response(response(a=np.zeros(2), b=np.array(1.0)), columnar=False)
    out = dumps(encode_predict_response(response(a=np.zeros(2), b=np.zeros(3)), columnar=True))
    assert out == {"outputs": {"a": [0.0, 0.0], "b": [0.0, 0.0, 0.0]}}


def test_encode_bytes() -> None:
    text = np.array([b"caf\xc3\xa9", b"\xff\x00", "plain"], dtype=object)
    out = dumps(encode_predict_response(response(text=text), columnar=True))
    assert out == {"outputs": ["café", {"b64": base64.b64encode(b"\xff\x00").decode()}, "plain"]}
    out = dumps(encode_predict_response(response(image_bytes=np.array([b"abc", "d"], dtype=object)), True))
    assert out == {"outputs": [{"b64": "YWJj"}, {"b64": "ZA=="}]}
    out = dumps(encode_predict_response(response(t=np.array(b"\xfe", dtype=object)), columnar=True))
    assert out == {"outputs": {"b64": "/g=="}}


@pytest.mark.parametrize("extra", [b"", b', "x": NaN'])
def test_deep_bodies_are_refused_with_and_without_non_finite_tokens(extra: bytes) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    with pytest.raises(InvalidInput, match="depth limit exceeded"):
        parse_json_body(b'{"instances": ' + deep + extra + b"}")


def test_strings_with_nul_and_nulls_round_trip() -> None:
    values = ["a\u0000b", "\u0000", None]
    req, columnar = decode_predict_request({"instances": values}, TEXT, LIMITS)
    assert req.inputs["text"].tolist() == ["a\u0000b", "\u0000", ""]
    resp = InferenceResponse("m", "1", {"text": req.inputs["text"]})
    assert encode_predict_response(resp, columnar) == {"predictions": ["a\u0000b", "\u0000", ""]}
    raw = [b"\x00", b"\xff\x00"]
    req, columnar = decode_predict_request({"inputs": [{"b64": base64.b64encode(v).decode()} for v in raw]},
                                           TEXT, LIMITS)
    assert req.inputs["text"].tolist() == raw
    out = encode_predict_response(InferenceResponse("m", "1", {"text": req.inputs["text"]}), columnar)
    assert out == {"outputs": ["\u0000", {"b64": base64.b64encode(b"\xff\x00").decode()}]}
