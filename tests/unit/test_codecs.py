from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest

from mlport.core.inference import InferenceResponse
from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, MlportError
from mlport.formats.config import ModelConfig
from mlport.limits import Limits
from mlport.protocols.http.negotiation import parse_accept, pick_encoder
from mlport.protocols.native import decode_eval_json, encode_eval_json, fit_instance
from mlport.protocols.oip import decode_infer_request, encode_bytes_tensor, encode_infer_response

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
