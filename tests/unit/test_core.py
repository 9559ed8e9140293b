from __future__ import annotations

import numpy as np
import pytest

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.validate import as_array, check_inputs, to_dtype
from mlport.errors import InvalidInput
from mlport.formats.config import ModelConfig, VersionPolicy
from mlport.limits import Limits

SIG = Signature((TensorSpec("a", DataType.FP32, (-1, 2)), TensorSpec("s", DataType.BYTES, (-1,))),
                (TensorSpec("y", DataType.FP32, (-1,)),))


@pytest.mark.parametrize(
    ("policy", "want"),
    [(VersionPolicy(), [5]), (VersionPolicy(latest=2), [5, 3]), (VersionPolicy(all=True), [5, 3, 1]),
     (VersionPolicy(specific=(1, 4)), [1])],
)
def test_version_policy(policy: VersionPolicy, want: list[int]) -> None:
    assert policy.select([1, 5, 3]) == want


def test_version_policy_one_kind() -> None:
    with pytest.raises(ValueError):
        VersionPolicy(latest=1, all=True)


def test_fields_must_cover_columns() -> None:
    with pytest.raises(ValueError):
        ModelConfig(fields={"x": {"a": 0, "b": 2}})


def test_datatype_names() -> None:
    assert DataType.parse("FP32") is DataType.parse("float32") is DataType.parse("TYPE_FP32") is DataType.FP32
    assert DataType.from_numpy(np.dtype("<U3")) is DataType.BYTES
    assert DataType.FP16.tf_name == "DT_HALF"
    with pytest.raises(ValueError):
        DataType.parse("complex")


def test_check_inputs_casts_and_names_problems() -> None:
    out = check_inputs(SIG, {"a": np.array([[1, 2]]), "s": np.array(["x"])})
    assert out["a"].dtype == np.float32 and out["s"].dtype == object
    with pytest.raises(InvalidInput, match="unknown input 'b'"):
        check_inputs(SIG, {"a": np.zeros((1, 2)), "s": np.array(["x"]), "b": np.zeros(1)})
    with pytest.raises(InvalidInput, match="missing input 's'"):
        check_inputs(SIG, {"a": np.zeros((1, 2))})
    with pytest.raises(InvalidInput, match=r"expects FP32 with shape \[-1, 2\], got shape \[1, 3\]"):
        check_inputs(SIG, {"a": np.zeros((1, 3)), "s": np.array(["x"])})
    with pytest.raises(InvalidInput, match="batch size 2"):
        check_inputs(SIG, {"a": np.zeros((1, 2)), "s": np.array(["x", "y"])})


def test_to_dtype_refuses_lossy_casts() -> None:
    spec = TensorSpec("i", DataType.INT8, (-1,))
    assert to_dtype(spec, np.array([1.0, 2.0])).dtype == np.int8
    with pytest.raises(InvalidInput, match="fractional"):
        to_dtype(spec, np.array([1.5]))
    with pytest.raises(InvalidInput, match="outside the range"):
        to_dtype(spec, np.array([300]))
    assert to_dtype(TensorSpec("s", DataType.BYTES, (-1,)), np.array([3, 4])).tolist() == ["3", "4"]


def test_as_array_limits_and_ragged() -> None:
    limits = Limits(max_tensor_elements=10, max_tensor_rank=3)
    with pytest.raises(InvalidInput, match="rectangular"):
        as_array("x", [[1, 2], [3]], limits)
    with pytest.raises(InvalidInput, match="elements"):
        as_array("x", list(range(11)), limits)
    with pytest.raises(InvalidInput, match="dimensions"):
        as_array("x", [[[[1]]]], limits)
    with pytest.raises(InvalidInput, match="null"):
        as_array("x", [True, None], limits)


def test_as_array_checks_every_leaf() -> None:
    values = [1.0] * 100 + [None]
    assert np.isnan(as_array("x", values, Limits())[100])
    with pytest.raises(InvalidInput, match="null"):
        as_array("x", [*([1.0] * 100), True, None], Limits())
    with pytest.raises(InvalidInput, match="rectangular"):
        as_array("x", [*(["a"] * 100), ["b"]], Limits())


def test_null_is_a_missing_value_where_one_can_be() -> None:
    limits = Limits()
    numbers = as_array("x", [[1, None], [None, 2.5]], limits)
    assert numbers.dtype == np.float64 and np.isnan(numbers).tolist() == [[False, True], [True, False]]
    assert to_dtype(TensorSpec("x", DataType.FP32, (-1, 2)), numbers).dtype == np.float32
    text = as_array("s", ["a", None], limits)
    assert text.dtype == object and text.tolist() == ["a", ""]
    # all missing: a string input gets "", an integer input a 400 naming it
    empty = as_array("s", [None, None], limits)
    assert to_dtype(TensorSpec("s", DataType.BYTES, (-1,)), empty).tolist() == ["", ""]
    with pytest.raises(InvalidInput, match="input 'n' is INT64, which cannot hold a missing value"):
        to_dtype(TensorSpec("n", DataType.INT64, (-1,)), as_array("n", [1, None], limits))
    with pytest.raises(InvalidInput, match="input 'b' is BOOL"):
        to_dtype(TensorSpec("b", DataType.BOOL, (-1,)), as_array("b", [None], limits))


def test_strings_keep_every_character() -> None:
    values = ["a\u0000b", "\u0000", "x\u0000\u0000", ""]
    arr = as_array("s", values, Limits())
    assert arr.dtype == object and arr.tolist() == values
    nested = as_array("s", [["\u0000", "b"], ["c", "d\u0000"]], Limits())
    assert nested.shape == (2, 2) and nested[1, 1] == "d\u0000"
    # numbers beside strings become their text, as before
    assert as_array("s", ["a", 1], Limits()).tolist() == ["a", "1"]


def test_onnx_string_inputs_decode_bytes_exactly(tmp_path) -> None:
    from mlport.formats.base import LoadOptions
    from mlport.formats.onnx import OnnxFormat
    from tests.builders_strings import string_concat_onnx

    ev = OnnxFormat().load(string_concat_onnx(tmp_path / "s.onnx"), LoadOptions())
    out = ev.predict({"text": np.array([b"ab\x00", "c"], dtype=object), "n": np.array([1, 2])})
    assert out["echo"].tolist() == ["ab\x00!", "c!"]
    with pytest.raises(InvalidInput, match="not UTF-8"):
        ev.predict({"text": np.array([b"\xff"], dtype=object), "n": np.array([1])})


def test_datatype_from_any_byte_order() -> None:
    assert DataType.from_numpy(np.dtype(">f8")) is DataType.FP64
    assert DataType.from_numpy(np.dtype("<i4")) is DataType.INT32
