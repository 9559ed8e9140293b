"""MLflow signatures and input examples, and the evaluator that serves a flavor's model under them.

An ``MLmodel`` signature is column-based (``[{"name": "age", "type": "double"}, ...]``: one input per
column) or tensor-based (``[{"name": "x", "type": "tensor", "tensor-spec": {"dtype": "float32",
"shape": [-1, 4]}}]``). The served inputs are the signature's; a model that takes one matrix gets
the columns stacked in the signature's order, and every input is cast to what the model takes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.validate import check_inputs, fmt_shape, to_dtype
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator

__all__ = ["MlflowEvaluator", "parse_signature", "read_example"]

log = logging.getLogger(__name__)

#: Largest input example read, in bytes (a larger one is not used).
MAX_EXAMPLE_BYTES = 1024 * 1024

#: MLflow column types -> datatypes.
COLUMN_TYPES: dict[str, DataType] = {
    "boolean": DataType.BOOL,
    "integer": DataType.INT32,
    "long": DataType.INT64,
    "float": DataType.FP32,
    "double": DataType.FP64,
    "string": DataType.BYTES,
    "binary": DataType.BYTES,
}


def _tensor_spec(i: int, item: dict[str, Any]) -> TensorSpec:
    spec = item.get("tensor-spec")
    if not isinstance(spec, dict):
        raise InvalidInput(f"MLmodel signature: tensor {i} has no 'tensor-spec'")
    dtype = str(spec.get("dtype", ""))
    try:
        datatype = DataType.BYTES if dtype in ("str", "object", "bytes") else DataType.from_numpy(np.dtype(dtype))
    except (TypeError, ValueError):
        raise InvalidInput(f"MLmodel signature: tensor {i} has dtype {dtype!r}, which mlport does not serve") from None
    shape = spec.get("shape", [])
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        raise InvalidInput(f"MLmodel signature: tensor {i} has a malformed shape {shape!r}")
    return TensorSpec(str(item.get("name") or ""), datatype, tuple(shape))


def _column_spec(i: int, item: dict[str, Any]) -> TensorSpec:
    kind = str(item.get("type", ""))
    datatype = COLUMN_TYPES.get(kind)
    if datatype is None:
        known = ", ".join(COLUMN_TYPES)
        raise InvalidInput(f"MLmodel signature: column {item.get('name', i)!r} has type {kind!r}, which mlport "
                           f"does not serve (column types: {known})")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"MLmodel signature: column {i} has no name")
    return TensorSpec(name, datatype, (-1,))


def parse_signature(text: Any) -> tuple[list[TensorSpec], bool] | None:
    """The inputs of an ``MLmodel`` signature and whether they are columns; ``None`` when there is none.

    A tensor's name is ``""`` when the signature leaves it out.
    """
    if text is None:
        return None
    try:
        items = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise InvalidInput("MLmodel signature: 'inputs' is not valid JSON") from None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise InvalidInput("MLmodel signature: 'inputs' must be a non-empty list of columns or tensors")
    tensors = [item.get("type") == "tensor" for item in items]
    if any(tensors) and not all(tensors):
        raise InvalidInput("MLmodel signature: 'inputs' mixes columns and tensors")
    if all(tensors):
        return [_tensor_spec(i, item) for i, item in enumerate(items)], False
    return [_column_spec(i, item) for i, item in enumerate(items)], True


def read_example(folder: Path, info: Any, inputs: list[TensorSpec]) -> Arrays | None:
    """The saved input example as named arrays (``None`` when there is none, or it is too large)."""
    if not isinstance(info, dict) or not isinstance(info.get("artifact_path"), str):
        return None
    path = folder / info["artifact_path"]
    try:
        if path.resolve().parent != folder.resolve() or not path.is_file():
            return None
        if path.stat().st_size > MAX_EXAMPLE_BYTES:
            log.info("%s: the input example is over %d bytes; not used", folder.name, MAX_EXAMPLE_BYTES)
            return None
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"MLmodel: the input example {path.name} cannot be read: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("columns"), list) and isinstance(doc.get("data"), list):
        rows = doc["data"]
        return {str(c): np.asarray([row[i] for row in rows]) for i, c in enumerate(doc["columns"])}
    if isinstance(doc, dict) and "inputs" in doc:
        doc = doc["inputs"]
    if isinstance(doc, dict):
        return {str(k): np.asarray(v) for k, v in doc.items()}
    if len(inputs) == 1:
        return {inputs[0].name: np.asarray(doc)}
    return None


class MlflowEvaluator(Evaluator):
    """A flavor's model served under its MLmodel signature (columns or tensors)."""

    def __init__(self, inner: Evaluator, declared: tuple[list[TensorSpec], bool] | None) -> None:
        self._inner = inner
        self.platform = inner.platform
        self.signature_name = inner.signature_name
        #: the one matrix input the columns are stacked into, when the model takes one
        self._stack: TensorSpec | None = None
        self._cast: dict[str, TensorSpec] = {}
        inputs = self._inputs(inner.signature, declared)
        self.signature = Signature(tuple(inputs), inner.signature.outputs)

    def _inputs(self, model: Signature, declared: tuple[list[TensorSpec], bool] | None) -> list[TensorSpec]:
        if declared is None:
            return list(model.inputs)
        specs, columns = declared
        if not columns and len(specs) == 1 and not specs[0].name and len(model.inputs) == 1:
            specs = [TensorSpec(model.inputs[0].name, specs[0].datatype, specs[0].shape)]
        names = [s.name for s in specs]
        if set(names) == set(model.input_names) and len(names) == len(model.inputs):
            for spec in specs:
                inner = model.input(spec.name)
                assert inner is not None
                if inner.datatype is not spec.datatype:
                    self._cast[spec.name] = inner
            return specs
        matrix = model.inputs[0] if len(model.inputs) == 1 else None
        if columns and matrix is not None and len(matrix.shape) == 2 and matrix.shape[1] in (-1, len(specs)):
            self._stack = matrix
            return specs
        raise InvalidInput(
            f"MLmodel's signature takes {', '.join(names) or 'unnamed tensors'}; the {self.platform or 'flavor'} "
            f"model takes {', '.join(f'{s.name} {fmt_shape(s.shape)}' for s in model.inputs)}: they do not match"
        )

    def model_inputs(self, inputs: Arrays) -> Arrays:
        """The checked inputs as the flavor's model takes them: stacked, or cast to its dtypes."""
        stack = self._stack
        if stack is not None:
            columns = [inputs[s.name] for s in self.signature.inputs]
            matrix = np.stack([to_dtype(stack, c) for c in columns], axis=1)
            return {stack.name: matrix}
        if not self._cast:
            return inputs
        return {n: to_dtype(self._cast[n], a) if n in self._cast else a for n, a in inputs.items()}

    def predict(self, inputs: Arrays) -> Arrays:
        return self._inner.predict(self.model_inputs(inputs))

    def signatures(self) -> Mapping[str, Evaluator]:
        return self._inner.signatures()

    def check_example(self, example: Arrays) -> None:
        """Run the model once on the saved input example: a folder whose example fails does not load."""
        try:
            self.predict(check_inputs(self.signature, example))
        except MlportError as exc:
            raise InvalidInput(f"MLmodel's input example does not fit the model: {exc.message}") from None
        except Exception as exc:
            raise InvalidInput(f"the model fails on MLmodel's input example: {exc}") from None

    def close(self) -> None:
        self._inner.close()
