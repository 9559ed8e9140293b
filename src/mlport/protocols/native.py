"""The describe/eval API (OVH Serving Runtime style): named JSON tensors, batched or one instance.

A value with as many dimensions as the input's shape is a batch; one with fewer is a single
instance (a scalar or one row), answered without the batch axis.  A model config may map named
scalar fields onto the columns of one input (``fields``); such inputs are described and called
by their field names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.types import Signature, TensorSpec
from mlport.core.validate import as_array, fmt_shape
from mlport.errors import InvalidInput
from mlport.formats.config import ModelConfig
from mlport.limits import Limits
from mlport.protocols.jsontensors import jsonable

__all__ = ["decode_eval_json", "describe", "encode_eval_json", "fit_instance", "unbatch"]


def describe(signature: Signature, config: ModelConfig) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = []
    for spec in signature.inputs:
        mapping = config.fields.get(spec.name)
        if mapping:
            for field in sorted(mapping, key=mapping.__getitem__):
                inputs.append({"name": field, "type": spec.datatype.short_name, "shape": [-1]})
        else:
            inputs.append(spec.describe())
    return {"inputs": inputs, "outputs": [s.describe() for s in signature.outputs]}


def fit_instance(spec: TensorSpec, arr: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], bool]:
    """Return ``(batch, single)``: ``arr`` as a batch for ``spec``, and whether it was one instance."""
    rank = len(spec.shape)
    if arr.ndim >= rank or not spec.batched:
        return arr, False
    inner = spec.shape[1:]
    if arr.ndim == rank - 1:
        return arr[np.newaxis, ...], True
    if -1 not in inner and arr.size == int(np.prod(inner)):
        return arr.reshape((1, *inner)), True
    raise InvalidInput(
        f"input '{spec.name}' expects {spec.datatype.value} with shape {fmt_shape(spec.shape)}, "
        f"got shape {fmt_shape(arr.shape)}"
    )


def _gather_fields(name: str, mapping: dict[str, int], body: dict[str, Any], limits: Limits) -> Any:
    missing = [f for f in mapping if f not in body]
    if missing:
        raise InvalidInput(f"missing field {', '.join(repr(f) for f in missing)} of input '{name}'")
    cols = [as_array(f, body.pop(f), limits) for f in sorted(mapping, key=mapping.__getitem__)]
    shapes = {c.shape for c in cols}
    if len(shapes) != 1:
        raise InvalidInput(f"the fields of input '{name}' differ in shape: {sorted(shapes)}")
    kinds = {c.dtype.kind for c in cols}
    if kinds & set("USO") and kinds - set("USO"):
        cols = [c.astype(object) for c in cols]
    return np.stack(cols, axis=-1)


def decode_eval_json(body: Any, signature: Signature, config: ModelConfig, limits: Limits) -> InferenceRequest:
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object whose keys are input names")
    body = dict(body)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for tensor, mapping in config.fields.items():
        if tensor not in body and any(f in body for f in mapping):
            arrays[tensor] = _gather_fields(tensor, mapping, body, limits)
    for name, value in body.items():
        arrays[name] = as_array(name, value, limits)
    singles: set[bool] = set()
    for name, arr in arrays.items():
        spec = signature.input(name)
        if spec is None:
            continue  # check_inputs names every unknown input
        arrays[name], single = fit_instance(spec, arr)
        if spec.batched:  # inputs without a batch axis (a threshold, say) say nothing about it
            singles.add(single)
    if len(singles) > 1:
        raise InvalidInput("mix of single values and batches: send every input as one instance or as a batch")
    return InferenceRequest(inputs=arrays, single=singles == {True})


def unbatch(response: InferenceResponse) -> dict[str, np.ndarray[Any, Any]]:
    """Outputs without the batch axis (for a single-instance request)."""
    return {n: (a[0, ...] if a.ndim > 0 and a.shape[0] == 1 else a) for n, a in response.outputs.items()}


def encode_eval_json(response: InferenceResponse, single: bool) -> dict[str, Any]:
    outputs = unbatch(response) if single else response.outputs
    return {n: jsonable(a, n) for n, a in outputs.items()}
