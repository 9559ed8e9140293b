from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest

from mlport.core.inference import InferenceResponse
from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.wire import encode_bytes_tensor
from mlport.errors import InvalidInput, MlportError
from mlport.formats.config import ModelConfig
from mlport.limits import Limits
from mlport.protocols.http.negotiation import parse_accept, pick_encoder
from mlport.protocols.native import decode_eval_json, encode_eval_json, fit_instance
from mlport.protocols.oip import decode_infer_request, encode_infer_response

SIG = Signature((TensorSpec("x", DataType.FP32, (-1, 3)),), (TensorSpec("y", DataType.FP32, (-1, 3)),))


def test_fit_instance() -> None:
    spec = TensorSpec("x", DataType.FP32, (-1, 1))
    arr, single = fit_instance(spec, np.array(7.0))
    assert single and arr.shape == (1, 1)
    arr, single = fit_instance(spec, np.array([[1.0], [2.0]]))
    assert not single and arr.shape == (2, 1)
    with pytest.raises(InvalidInput):
        fit_instance(TensorSpec("x", DataType.FP32, (-1, 2)), np.array(7.0))


def test_eval_json_single_roundtrip() -> None:
    req = decode_eval_json({"x": [1, 2, 3]}, SIG, ModelConfig(), Limits())
    assert req.single and req.inputs["x"].shape == (1, 3)
    resp = InferenceResponse("m", "1", {"y": np.array([[1.5, 2.5, 3.5]], dtype=np.float32)})
    assert orjson.loads(orjson.dumps(encode_eval_json(resp, True), option=orjson.OPT_SERIALIZE_NUMPY)) == {
        "y": [1.5, 2.5, 3.5]}


def test_oip_binary_roundtrip_is_a_view() -> None:
    x = np.arange(6, dtype="<f4").reshape(2, 3)
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 24}}]}).encode()
    body = header + x.tobytes()
    req, _binary = decode_infer_request(body, len(header), SIG, Limits())
    got = req.inputs["x"]
    np.testing.assert_array_equal(got, x)
    assert not got.flags.owndata  # a view of the body, not a copy
    enc = encode_infer_response(InferenceResponse("m", "1", {"y": got * 2}), {"y"})
    assert enc.header_length is not None
    doc = json.loads(enc.body[: enc.header_length])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 24
    np.testing.assert_array_equal(np.frombuffer(enc.body[enc.header_length:], "<f4").reshape(2, 3), x * 2)


def test_oip_bytes_encoding() -> None:
    arr = np.array([b"ab", "c"], dtype=object)
    assert encode_bytes_tensor(arr) == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"


def test_oip_rejects_bad_shapes() -> None:
    for shape in ([-1, 3], "2", [1.5]):
        body = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": [1, 2, 3]}]})
        with pytest.raises(InvalidInput, match="shape"):
            decode_infer_request(body.encode(), None, SIG, Limits())
    huge = json.dumps({"inputs": [{"name": "x", "shape": [10**9, 3], "datatype": "FP32", "data": [1]}]})
    with pytest.raises(InvalidInput, match="elements"):
        decode_infer_request(huge.encode(), None, SIG, Limits())


def test_accept_negotiation() -> None:
    acc = parse_accept("text/html;q=0.5, application/json, image/png; probs=image/png; q=0")
    assert [a.media for a in acc] == ["application/json", "text/html"]
    enc, _ = pick_encoder("*/*")
    assert enc is pick_encoder(None)[0]
    with pytest.raises(MlportError):
        pick_encoder("application/xml")


@pytest.mark.parametrize(("datatype", "data"), [("INT8", [1, 300]), ("UINT8", [-1]), ("INT32", [2**40]),
                                                 ("UINT64", [1, 2**64])])
def test_oip_json_integers_out_of_range_are_refused_not_wrapped(datatype: str, data: list[int]) -> None:
    sig = Signature((TensorSpec("x", DataType.parse(datatype), (-1,)),), (TensorSpec("y", DataType.FP32, (-1,)),))
    body = json.dumps({"inputs": [{"name": "x", "shape": [len(data)], "datatype": datatype, "data": data}]})
    with pytest.raises(InvalidInput, match="out of the range"):
        decode_infer_request(body.encode(), None, sig, Limits())


def _oip(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


TEXT_SIG = Signature((TensorSpec("s", DataType.BYTES, (-1,)),), (TensorSpec("s", DataType.BYTES, (-1,)),))


@pytest.mark.parametrize("where", ["data", "parameters", "input parameters", "id"])
def test_oip_deep_json_is_refused_not_a_recursion_error(where: str) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    head = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3]'
    body = {
        "data": head + b', "data": ' + deep + b"}]}",
        "parameters": head + b', "data": [1, 2, 3]}], "parameters": {"p": ' + deep + b"}}",
        "input parameters": head + b', "data": [1, 2, 3], "parameters": {"p": ' + deep + b"}}]}",
        "id": head + b', "data": [1, 2, 3]}], "id": ' + deep + b"}",
    }[where]
    with pytest.raises(InvalidInput, match="depth limit exceeded"):
        decode_infer_request(body, None, SIG, Limits())


def test_oip_nesting_within_the_parser_limit_still_gets_a_400() -> None:
    # deep enough to stop msgspec and Python's repr, within orjson's limit
    deep = "[" * 1000 + "]" * 1000
    body = ('{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}], '
            '"parameters": {"p": ' + deep + '}}').encode()
    with pytest.raises(InvalidInput, match="'parameters' cannot be used"):
        decode_infer_request(body, None, SIG, Limits())
    with pytest.raises(InvalidInput, match="'id' must be a string"):
        decode_infer_request(body.replace(b'"parameters": {"p": ', b'"id": ')[:-1], None, SIG, Limits())
    body = ('{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": ' + deep + '}]}').encode()
    with pytest.raises(InvalidInput, match="input 'x'"):
        decode_infer_request(body, None, SIG, Limits())


def test_oip_strings_with_nul_round_trip_in_json_and_binary() -> None:
    values = ["a\u0000b", "\u0000", "tail\u0000\u0000"]
    body = _oip([{"name": "s", "datatype": "BYTES", "shape": [3], "data": values}])
    req, _ = decode_infer_request(body, None, TEXT_SIG, Limits())
    assert req.inputs["s"].tolist() == values
    resp = InferenceResponse("m", "1", {"s": req.inputs["s"]})
    assert orjson.loads(encode_infer_response(resp, set()).body)["outputs"][0]["data"] == values
    raw = [b"a\x00b", b"\x00", b"\xff\x00"]
    blob = encode_bytes_tensor(np.array(raw, dtype=object))
    assert blob.count(b"\x00") >= 4
    resp = InferenceResponse("m", "1", {"s": np.array(raw, dtype=object)})
    encoded = encode_infer_response(resp, {"s"})
    assert encoded.header_length is not None and encoded.body[encoded.header_length:] == blob
    # bytes that are not UTF-8 cannot travel as JSON text: refused, never replaced
    with pytest.raises(InvalidInput, match="output 's' holds bytes that are not UTF-8"):
        encode_infer_response(resp, set())


def test_oip_null_is_missing_for_floats_and_strings_only() -> None:
    sig = Signature((TensorSpec("x", DataType.FP32, (-1,)),), (TensorSpec("y", DataType.FP32, (-1,)),))
    body = _oip([{"name": "x", "datatype": "FP32", "shape": [3], "data": [1.5, None, 2]}])
    req, _ = decode_infer_request(body, None, sig, Limits())
    got = req.inputs["x"]
    assert got.dtype == np.float32 and got[0] == 1.5 and np.isnan(got[1]) and got[2] == 2
    body = _oip([{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", None]}])
    assert decode_infer_request(body, None, TEXT_SIG, Limits())[0].inputs["s"].tolist() == ["a", ""]
    body = _oip([{"name": "s", "datatype": "BYTES", "shape": [2], "data": [None, None]}])
    assert decode_infer_request(body, None, TEXT_SIG, Limits())[0].inputs["s"].tolist() == ["", ""]
    for datatype, data in (("INT64", [1, None]), ("INT32", [None]), ("BOOL", [None])):
        body = _oip([{"name": "n", "datatype": datatype, "shape": [len(data)], "data": data}])
        with pytest.raises(InvalidInput, match=f"input 'n' is {datatype}, which cannot hold a missing value"):
            decode_infer_request(body, None, sig, Limits())
    body = _oip([{"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, None]}])
    with pytest.raises(InvalidInput, match="input 'b' has null values beside booleans"):
        decode_infer_request(body, None, sig, Limits())


def test_eval_json_strings_nulls_and_non_text_outputs() -> None:
    sig = Signature((TensorSpec("s", DataType.BYTES, (-1,)), TensorSpec("x", DataType.FP64, (-1,))),
                    (TensorSpec("s", DataType.BYTES, (-1,)),))
    req = decode_eval_json({"s": ["a\u0000", None], "x": [None, 1]}, sig, ModelConfig(), Limits())
    assert req.inputs["s"].tolist() == ["a\u0000", ""]
    assert np.isnan(req.inputs["x"][0]) and req.inputs["x"][1] == 1
    resp = InferenceResponse("m", "1", {"s": np.array(["a\u0000", b"\x00"], dtype=object)})
    assert encode_eval_json(resp, False)["s"] == ["a\u0000", "\u0000"]
    with pytest.raises(InvalidInput, match="output 's' holds bytes"):
        encode_eval_json(InferenceResponse("m", "1", {"s": np.array([b"\xff"], dtype=object)}), False)
