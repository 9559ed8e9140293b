"""The model name of OIP gRPC requests, read and replaced in their wire form, against protobuf's own reading."""

from __future__ import annotations

import pytest

from mlport.errors import InvalidInput
from mlport.hub.grpcwire import MAX_NAME, model_name, with_model_name
from mlport.protocols.grpc.proto import inference_pb2 as pb


def _infer(name: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name, model_version="3", id="r1", raw_input_contents=[b"\x01" * 300])
    request.inputs.add(name="input", datatype="FP32", shape=[1, 75])
    request.parameters["k"].int64_param = 7
    return request


@pytest.mark.parametrize("message", [_infer("iris"), pb.ModelMetadataRequest(name="iris", version="1"),
                                     pb.ModelReadyRequest(name="iris")])
def test_the_name_is_read_and_replaced_as_protobuf_reads_it(message: object) -> None:
    data = message.SerializeToString()  # type: ignore[attr-defined]
    assert model_name(data) == "iris"
    renamed = with_model_name(data, "iris-prod-ü")
    again = type(message)()
    again.ParseFromString(renamed)  # type: ignore[attr-defined]
    assert model_name(renamed) == "iris-prod-ü"
    original = type(message)()
    original.ParseFromString(data)  # type: ignore[attr-defined]
    name_field = original.DESCRIPTOR.fields_by_number[1].name
    setattr(original, name_field, "iris-prod-ü")
    assert again == original


def test_repeated_names_the_last_wins_and_all_are_replaced() -> None:
    data = _infer("a").SerializeToString() + pb.ModelInferRequest(model_name="b").SerializeToString()
    assert model_name(data) == "b"
    parsed = pb.ModelInferRequest()
    parsed.ParseFromString(with_model_name(data, "c"))
    assert parsed.model_name == "c" and parsed.raw_input_contents == [b"\x01" * 300]


def test_bad_messages_are_refused() -> None:
    assert model_name(b"") == ""
    for bad in (b"\x0a\x05ab", b"\x08", b"\x0b", b"\x08\x01\x0a\x02\xff\xfe"):
        with pytest.raises(InvalidInput):
            model_name(bad)
    with pytest.raises(InvalidInput, match="longer than"):
        model_name(pb.ModelReadyRequest(name="x" * (MAX_NAME + 1)).SerializeToString())
