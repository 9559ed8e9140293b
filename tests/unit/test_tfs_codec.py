"""The TF Serving gRPC codec as pure functions: tensors both ways, examples to inputs, classify/regress fits."""

from __future__ import annotations

import numpy as np
import pytest

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput
from mlport.limits import Limits
from mlport.protocols.grpc import tfs_codec as codec
from mlport.protocols.grpc.proto import tf_framework_pb2 as tfpb
from mlport.protocols.grpc.proto import tf_serving_pb2 as spb

LIMITS = Limits()


def _round_trip(arr: np.ndarray) -> np.ndarray:
    proto = tfpb.TensorProto()
    codec.encode_tensor("t", arr, proto)
    return codec.decode_tensor("t", tfpb.TensorProto.FromString(proto.SerializeToString()), LIMITS)


@pytest.mark.parametrize("dtype", ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                                   "float16", "float32", "float64"])
def test_numeric_round_trip(dtype: str) -> None:
    arr = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    got = _round_trip(arr)
    assert got.dtype == arr.dtype and got.shape == (2, 3)
    np.testing.assert_array_equal(got, arr)


def test_strings_and_empty() -> None:
    arr = np.array([["a", "\u00e9"], [b"\x00", b""]], dtype=object)
    assert _round_trip(arr).tolist() == [[b"a", "\u00e9".encode()], [b"\x00", b""]]
    assert _round_trip(np.zeros((0, 3), dtype=np.float32)).shape == (0, 3)


def test_decode_errors_name_the_input() -> None:
    proto = tfpb.TensorProto(dtype=tfpb.DT_FLOAT, tensor_content=b"\x00" * 7)
    proto.tensor_shape.dim.add(size=2)
    with pytest.raises(InvalidInput, match=r"'t'.*needs 8 bytes"):
        codec.decode_tensor("t", proto, LIMITS)
    with pytest.raises(InvalidInput, match="DT_BFLOAT16"):
        codec.decode_tensor("t", tfpb.TensorProto(dtype=tfpb.DT_BFLOAT16), LIMITS)
    unknown = tfpb.TensorProto(dtype=tfpb.DT_FLOAT)
    unknown.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidInput, match="unknown rank"):
        codec.decode_tensor("t", unknown, LIMITS)
    negative = tfpb.TensorProto(dtype=tfpb.DT_FLOAT)
    negative.tensor_shape.dim.add(size=-1)
    with pytest.raises(InvalidInput, match="negative"):
        codec.decode_tensor("t", negative, LIMITS)
    huge = tfpb.TensorProto(dtype=tfpb.DT_UINT16)
    huge.tensor_shape.dim.add(size=1)
    huge.int_val.append(70000)
    with pytest.raises(InvalidInput, match="does not fit UINT16"):
        codec.decode_tensor("t", huge, LIMITS)


def _input(*rows: dict[str, list[float]]) -> spb.Input:
    examples = []
    for row in rows:
        example = tfpb.Example()
        for key, values in row.items():
            example.features.feature[key].float_list.value.extend(values)
        examples.append(example)
    return spb.Input(example_list=spb.ExampleList(examples=examples))


def test_examples_to_inputs_shapes() -> None:
    sig = Signature(inputs=(TensorSpec("a", DataType.FP32, (-1, 2)), TensorSpec("b", DataType.FP64, (-1,))),
                    outputs=(TensorSpec("y", DataType.FP32, (-1,)),))
    got = codec.examples_to_inputs(_input({"a": [1, 2], "b": [3], "extra": [9]}, {"a": [4, 5], "b": [6]}), sig, LIMITS)
    assert got["a"].tolist() == [[1, 2], [4, 5]] and got["b"].tolist() == [3, 6]
    with pytest.raises(InvalidInput, match="example 1 has no feature 'b'"):
        codec.examples_to_inputs(_input({"a": [1, 2], "b": [3]}, {"a": [4, 5]}), sig, LIMITS)
    with pytest.raises(InvalidInput, match="one value per example"):
        codec.examples_to_inputs(_input({"a": [1, 2], "b": [3, 4]}), sig, LIMITS)
    with pytest.raises(InvalidInput, match="no examples"):
        codec.examples_to_inputs(spb.Input(), sig, LIMITS)


def test_serialized_examples_for_a_single_string_input() -> None:
    sig = Signature(inputs=(TensorSpec("inputs", DataType.BYTES, (-1,)),), outputs=())
    request = _input({"a": [1.0]})
    got = codec.examples_to_inputs(request, sig, LIMITS)["inputs"]
    assert tfpb.Example.FromString(got[0]) == request.example_list.examples[0]


def test_classify_and_regress_fits() -> None:
    fp = DataType.FP32
    classifier = Signature(inputs=(), outputs=(TensorSpec("label", DataType.INT64, (-1,)),
                                               TensorSpec("probabilities", fp, (-1, 3))))
    assert codec.classify_outputs(classifier, "s") == ("probabilities", None)
    with pytest.raises(InvalidInput, match="does not fit Regress"):
        codec.regress_output(classifier, "s")
    regressor = Signature(inputs=(), outputs=(TensorSpec("y", fp, (-1, 1)),))
    assert codec.regress_output(regressor, "s") == "y"
    with pytest.raises(InvalidInput, match=r"does not fit Classify.*outputs: y"):
        codec.classify_outputs(regressor, "s")
    result = codec.classification_result(np.array([[0.25, 0.75]]), np.array([[b"no", b"yes"]], dtype=object))
    assert [(c.label, c.score) for c in result.classifications[0].classes] == [("no", 0.25), ("yes", 0.75)]
    assert [r.value for r in codec.regression_result(np.array([[1.5], [2.0]])).regressions] == [1.5, 2.0]
