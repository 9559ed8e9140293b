"""The gRPC error table and the ModelInferRequest/Response codec, without a server."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest

from mlport.core.inference import InferenceResponse
from mlport.errors import ErrorCode, InvalidInput
from mlport.limits import Limits
from mlport.protocols.grpc.codec import decode_infer_request, encode_infer_response, from_parameters
from mlport.protocols.grpc.errors import GRPC_STATUS
from mlport.protocols.grpc.proto import inference_pb2 as pb

LIMITS = Limits()


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_a_grpc_status(code: ErrorCode) -> None:
    assert isinstance(GRPC_STATUS[code], grpc.StatusCode)
    assert GRPC_STATUS[code] is not grpc.StatusCode.OK


def test_error_table_values() -> None:
    assert set(GRPC_STATUS) == set(ErrorCode)
    assert GRPC_STATUS[ErrorCode.INVALID_ARGUMENT] is grpc.StatusCode.INVALID_ARGUMENT
    assert GRPC_STATUS[ErrorCode.NOT_FOUND] is grpc.StatusCode.NOT_FOUND
    assert GRPC_STATUS[ErrorCode.UNAVAILABLE] is grpc.StatusCode.UNAVAILABLE
    assert GRPC_STATUS[ErrorCode.TOO_LARGE] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert GRPC_STATUS[ErrorCode.DEADLINE_EXCEEDED] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert GRPC_STATUS[ErrorCode.FAILED_PRECONDITION] is grpc.StatusCode.FAILED_PRECONDITION
    assert GRPC_STATUS[ErrorCode.INTERNAL] is grpc.StatusCode.INTERNAL


def _bytes_blob(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def test_decode_raw_inputs_are_views_of_the_message_bytes() -> None:
    x = np.arange(6, dtype="<f4").reshape(2, 3)
    req = pb.ModelInferRequest(model_name="m", id="r", raw_input_contents=[x.tobytes(), _bytes_blob([b"a", b""])])
    req.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    req.inputs.add(name="s", datatype="BYTES", shape=[2])
    req.outputs.add(name="y")
    req.parameters["k"].int64_param = 4
    req.parameters["t"].string_param = "v"
    out = decode_infer_request(req, LIMITS)
    np.testing.assert_array_equal(out.inputs["x"], x)
    assert not out.inputs["x"].flags.writeable and not out.inputs["x"].flags.owndata  # a view, not a copy
    assert out.inputs["s"].tolist() == [b"a", b""]
    assert out.outputs == ["y"] and out.id == "r" and out.parameters == {"k": 4, "t": "v"}


def test_decode_typed_contents() -> None:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="b", datatype="BOOL", shape=[2]).contents.bool_contents.extend([True, False])
    req.inputs.add(name="i8", datatype="INT8", shape=[2]).contents.int_contents.extend([-3, 4])
    req.inputs.add(name="u64", datatype="UINT64", shape=[1]).contents.uint64_contents.extend([2**63])
    req.inputs.add(name="f", datatype="FP64", shape=[1, 2]).contents.fp64_contents.extend([0.5, 1.5])
    req.inputs.add(name="s", datatype="BYTES", shape=[1]).contents.bytes_contents.extend([b"hi"])
    out = decode_infer_request(req, LIMITS)
    assert out.inputs["b"].dtype == np.bool_ and out.inputs["b"].tolist() == [True, False]
    assert out.inputs["i8"].dtype == np.int8 and out.inputs["i8"].tolist() == [-3, 4]
    assert out.inputs["u64"].dtype == np.uint64 and int(out.inputs["u64"][0]) == 2**63
    assert out.inputs["f"].shape == (1, 2)
    assert out.inputs["s"].dtype == object and out.inputs["s"].tolist() == [b"hi"]
    assert out.outputs is None and out.id is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: r.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0]),
         "needs 2 values, got 1"),
        (lambda r: r.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.extend([300]),
         "does not fit INT8"),
        (lambda r: r.inputs.add(name="x", datatype="FP16", shape=[1]), "travels only in raw_input_contents"),
        (lambda r: r.inputs.add(name="x", datatype="NOPE", shape=[1]), "unknown datatype"),
        (lambda r: r.inputs.add(name="x", datatype="FP32", shape=[-1]), "negative dimension"),
        (lambda r: r.inputs.add(name="x", datatype="FP32", shape=[1] * 17), "dimensions; the limit is 16"),
        (lambda r: [r.inputs.add(name="x", datatype="FP32", shape=[0]) for _ in range(2)], "given twice"),
        (lambda r: None, "no inputs"),
    ],
)
def test_decode_refuses_bad_requests(build, message: str) -> None:
    req = pb.ModelInferRequest(model_name="m")
    build(req)
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(req, LIMITS)


def test_decode_raw_needs_one_entry_per_input_of_the_right_size() -> None:
    req = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00" * 8])
    req.inputs.add(name="x", datatype="FP32", shape=[1])
    req.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(InvalidInput, match="one per input"):
        decode_infer_request(req, LIMITS)
    req = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00" * 8])
    req.inputs.add(name="x", datatype="FP32", shape=[1])
    with pytest.raises(InvalidInput, match="needs 4 bytes, got 8"):
        decode_infer_request(req, LIMITS)
    req = pb.ModelInferRequest(model_name="m", raw_input_contents=[struct.pack("<I", 9) + b"ab"])
    req.inputs.add(name="s", datatype="BYTES", shape=[1])
    with pytest.raises(InvalidInput, match="longer than the data"):
        decode_infer_request(req, LIMITS)


def test_encode_writes_every_output_raw_in_order() -> None:
    outputs = {
        "p": np.array([[0.25, 0.75]], dtype=np.float32),
        "label": np.array([3], dtype=np.int64),
        "text": np.array([b"x", "\u00e9"], dtype=object),
        "flag": np.array([True, False]),
        "half": np.array([1.5], dtype=np.float16),
        "big": np.array([1.0], dtype=">f8"),
    }
    res = encode_infer_response(InferenceResponse("m", "2", outputs, id="q", parameters={"n": 1, "f": 0.5}))
    assert res.model_name == "m" and res.model_version == "2" and res.id == "q"
    assert from_parameters(res.parameters) == {"n": 1, "f": 0.5}
    assert [(o.name, o.datatype, list(o.shape)) for o in res.outputs] == [
        ("p", "FP32", [1, 2]), ("label", "INT64", [1]), ("text", "BYTES", [2]), ("flag", "BOOL", [2]),
        ("half", "FP16", [1]), ("big", "FP64", [1]),
    ]
    raw = list(res.raw_output_contents)
    assert np.frombuffer(raw[0], "<f4").tolist() == [0.25, 0.75]
    assert np.frombuffer(raw[1], "<i8").tolist() == [3]
    assert raw[2] == _bytes_blob([b"x", "\u00e9".encode()])
    assert raw[3] == b"\x01\x00"
    assert np.frombuffer(raw[4], "<f2").tolist() == [1.5]
    assert np.frombuffer(raw[5], "<f8").tolist() == [1.0]


@pytest.mark.parametrize("raw", [False, True])
def test_bytes_with_nul_round_trip_exactly(raw: bool) -> None:
    values = [b"a\x00b", b"\x00", b"\xff\x00", b"", b"\x00\x00"]
    req = pb.ModelInferRequest(model_name="m")
    tensor = req.inputs.add(name="s", datatype="BYTES", shape=[len(values)])
    if raw:
        req.raw_input_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in values))
    else:
        tensor.contents.bytes_contents.extend(values)
    got = decode_infer_request(req, LIMITS).inputs["s"]
    assert got.dtype == object and got.tolist() == values
    # strings with NUL characters too, as a model answering str would give them
    out = np.array([*values, "z\x00"], dtype=object)
    message = encode_infer_response(InferenceResponse("m", "1", {"s": out}))
    blob = message.raw_output_contents[0]
    assert blob == b"".join(struct.pack("<I", len(v)) + v for v in [*values, b"z\x00"])
