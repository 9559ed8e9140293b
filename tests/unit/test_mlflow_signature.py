"""MLmodel signatures and the adapter that serves a flavor's model under them, without servers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput
from mlport.formats.base import Arrays, Evaluator
from mlport.formats.mlflow_signature import MlflowEvaluator, parse_signature


class Matrix(Evaluator):
    """Sums the rows of one FP32 [N, 3] matrix 'x'."""

    signature = Signature((TensorSpec("x", DataType.FP32, (-1, 3)),), (TensorSpec("s", DataType.FP32, (-1,)),))

    def predict(self, inputs: Arrays) -> Arrays:
        assert inputs["x"].dtype == np.float32
        return {"s": inputs["x"].sum(axis=1)}


def _columns(*names: str, kind: str = "double") -> str:
    return json.dumps([{"name": n, "type": kind, "required": True} for n in names])


def test_parse_columns_and_tensors() -> None:
    specs, columns = parse_signature(_columns("a", "b"))  # type: ignore[misc]
    assert columns and specs == [TensorSpec("a", DataType.FP64, (-1,)), TensorSpec("b", DataType.FP64, (-1,))]
    tensor = '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'
    assert parse_signature(tensor) == ([TensorSpec("", DataType.FP32, (-1, 4))], False)
    assert parse_signature(None) is None
    with pytest.raises(InvalidInput, match="'datetime'"):
        parse_signature(_columns("when", kind="datetime"))
    with pytest.raises(InvalidInput, match="mixes"):
        parse_signature('[{"type": "tensor", "tensor-spec": {"dtype": "int8", "shape": [-1]}}, '
                        '{"name": "a", "type": "long"}]')


def test_columns_are_stacked_into_the_models_matrix() -> None:
    ev = MlflowEvaluator(Matrix(), parse_signature(_columns("a", "b", "c")))
    assert ev.signature.input_names == ["a", "b", "c"]
    got = ev.predict({"a": np.array([1.0, 2.0]), "b": np.array([10.0, 20.0]), "c": np.array([100.0, 200.0])})
    assert got["s"].tolist() == [111.0, 222.0]


def test_an_unnamed_tensor_takes_the_models_input_name_and_mismatches_are_refused() -> None:
    tensor = '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}]'
    ev = MlflowEvaluator(Matrix(), parse_signature(tensor))
    assert ev.signature.inputs == (TensorSpec("x", DataType.FP64, (-1, 3)),)
    assert ev.predict({"x": np.ones((2, 3))})["s"].tolist() == [3.0, 3.0]  # cast to the model's FP32
    with pytest.raises(InvalidInput, match="do not match"):
        MlflowEvaluator(Matrix(), parse_signature(_columns("a", "b")))
