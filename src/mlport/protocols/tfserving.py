"""TF Serving REST codec (``/v1/models/...``): model status, metadata and predict, as pure functions.

Predict bodies come in two shapes.  Row format (``instances``) is a list with one element per
example: the value itself when the model has one input, an object keyed by input name when it
has several (every input then shares the batch size).  Columnar format (``inputs``) is one tensor
or an object of named tensors.  Binary strings travel as ``{"b64": "..."}`` and the non-finite
tokens ``NaN``/``Infinity``/``-Infinity`` are accepted in input; ``null`` is a missing value (NaN for
numbers, ``""`` for strings).  Strings keep every character, NUL included.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.types import Signature, TensorSpec
from mlport.core.validate import as_array
from mlport.errors import InvalidInput, ModelNotFound
from mlport.formats.base import Evaluator
from mlport.limits import Limits
from mlport.protocols.jsonbody import DEPTH_MESSAGE, loads
from mlport.protocols.jsontensors import jsonable
from mlport.runtime.manager import ColdModel, ModelManager, ModelStatus, VersionState

__all__ = [
    "DEFAULT_SIGNATURE",
    "PREDICT_METHOD",
    "ModelPath",
    "decode_predict_request",
    "encode_predict_response",
    "model_metadata",
    "model_status",
    "parse_json_body",
    "parse_model_path",
    "resolve_version",
    "served_metadata",
    "signatures_of",
]

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
#: Outputs whose name ends with this always carry binary values (``{"b64": ...}``), as in TF Serving.
BINARY_SUFFIX = "_bytes"

_STATE = {
    VersionState.LOADING: "LOADING",
    VersionState.READY: "AVAILABLE",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.UNAVAILABLE: "END",
    VersionState.NOT_LOADED: "START",  # lazy: loads on its first request
    VersionState.EVICTED: "END",
}
_NON_FINITE = re.compile(rb"NaN|Infinity")
_B64_FORM = '{"b64": "<base64>"}'


# ---------------------------------------------------------------------------- paths
@dataclass(frozen=True, slots=True)
class ModelPath:
    """What follows ``/v1/models/``: ``{name}[/versions/{v} | /labels/{l}][/metadata | :{verb}]``."""

    name: str
    version: str | None = None
    label: str | None = None
    metadata: bool = False
    verb: str | None = None


def parse_model_path(rest: str) -> ModelPath | None:
    """Split the path after ``/v1/models/``; ``None`` when it is not a TF Serving model path."""
    verb: str | None = None
    head = rest
    if ":" in rest:
        head, verb = rest.rsplit(":", 1)
        if not verb or "/" in verb:
            return None
    parts = head.split("/")
    metadata = False
    if len(parts) in (2, 4) and parts[-1] == "metadata":
        if verb is not None:
            return None
        metadata = True
        parts = parts[:-1]
    if any(not p for p in parts) or ":" in head:
        return None
    if len(parts) == 1:
        return ModelPath(parts[0], metadata=metadata, verb=verb)
    if len(parts) == 3 and parts[1] == "versions":
        return ModelPath(parts[0], version=parts[2], metadata=metadata, verb=verb)
    if len(parts) == 3 and parts[1] == "labels":
        return ModelPath(parts[0], label=parts[2], metadata=metadata, verb=verb)
    return None


def resolve_version(manager: ModelManager, name: str, version: int | str | None, label: str | None) -> int | str | None:
    """The version a request names: a number, a label (``version_labels`` in the model's config), or latest."""
    if label is None:
        return version
    try:
        labels = manager.serving_version(name).config.version_labels
    except ColdModel:  # not loaded now (lazy, evicted): its config is known without it
        labels = manager.model_config(name).version_labels
    found = labels.get(label)
    if found is None:
        known = ", ".join(sorted(labels)) or "none"
        raise ModelNotFound(f"model '{name}' has no label '{label}' (labels: {known})")
    return found


# ----------------------------------------------------------------- status, metadata
def model_status(status: ModelStatus, version: int | None = None) -> dict[str, Any]:
    """``GetModelStatusResponse`` as JSON: every version, or only ``version`` (404 when unknown)."""
    rows = status.versions
    if version is not None:
        rows = tuple(v for v in rows if v.version == version)
        if not rows:
            raise ModelNotFound(f"model '{status.name}' has no version {version}")
    out: list[dict[str, Any]] = []
    for row in rows:
        failed = row.state is VersionState.UNAVAILABLE and row.reason not in ("", "unloaded")
        out.append({
            "version": str(row.version),
            "state": _STATE[row.state],
            "status": {
                "error_code": "UNKNOWN" if failed else "OK",
                "error_message": row.reason if failed else "",
            },
        })
    return {"model_version_status": out}


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": spec.datatype.tf_name,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False},
        "name": spec.name,
    }


def signatures_of(evaluator: Evaluator) -> dict[str, Signature]:
    """Every signature of a loaded model by name, the default one first."""
    return {evaluator.signature_name: evaluator.signature,
            **{k: e.signature for k, e in evaluator.signatures().items()}}


async def served_metadata(manager: ModelManager, name: str, version: int | str | None) -> dict[str, Any]:
    """:func:`model_metadata` of the version that would serve: a loaded one's signatures, or for a model not
    loaded now what :meth:`ModelManager.describe` knows without loading it (503 when that is nothing)."""
    try:
        lv = manager.serving_version(name, version)
    except ColdModel:
        known = await manager.describe(name, version)
        return model_metadata(name, known.version, {DEFAULT_SIGNATURE: known.signature})
    return model_metadata(name, lv.version, signatures_of(lv.evaluator))


def model_metadata(name: str, version: int, signatures: Signature | dict[str, Signature]) -> dict[str, Any]:
    """``GetModelMetadataResponse`` as JSON, with the model's predict signatures (by name)."""
    if isinstance(signatures, Signature):
        signatures = {DEFAULT_SIGNATURE: signatures}
    defs = {
        sig_name: {
            "inputs": {s.name: _tensor_info(s) for s in signature.inputs},
            "outputs": {s.name: _tensor_info(s) for s in signature.outputs},
            "method_name": PREDICT_METHOD,
        }
        for sig_name, signature in signatures.items()
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": defs}},
    }


# ------------------------------------------------------------------------- decoding
def parse_json_body(body: bytes) -> Any:
    """Parse a request body, accepting ``NaN``/``Infinity``/``-Infinity`` tokens.

    Standard JSON goes through orjson; only a body orjson refuses and that holds one of these
    tokens is parsed again by the standard library, which maps them to floats.
    """
    if not body.strip():
        raise InvalidInput("the request body is empty; expected a JSON object")
    if not _NON_FINITE.search(body):
        return loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise InvalidInput(f"malformed JSON: {exc}") from None
        try:
            return json.loads(body, parse_constant=float)
        except RecursionError:
            raise InvalidInput(f"malformed JSON: {DEPTH_MESSAGE}") from None
        except ValueError:
            raise InvalidInput(f"malformed JSON: {exc}") from None


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _unwrap_b64(name: str, value: Any) -> tuple[Any, bool]:
    """Replace ``{"b64": ...}`` objects by their bytes; returns the value and whether any was found.

    When one is found, text leaves become UTF-8 bytes too, so the tensor holds one kind of value.
    """
    found = False

    def walk(v: Any) -> Any:
        nonlocal found
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            if not _is_b64(v) or not isinstance(v["b64"], str):
                raise InvalidInput(f"input '{name}': an object in tensor data must be {_B64_FORM}")
            try:
                decoded = base64.b64decode(v["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"input '{name}': a 'b64' value is not valid base64") from None
            found = True
            return decoded
        return v

    out = walk(value)
    if found:
        out = _text_to_bytes(out)
    return out, found


def _text_to_bytes(v: Any) -> Any:
    if isinstance(v, list):
        return [_text_to_bytes(x) for x in v]
    if isinstance(v, str):
        return v.encode("utf-8")
    return v


def _object_array(name: str, value: Any) -> np.ndarray[Any, Any]:
    """A nested list of bytes as an object array (numpy's bytes dtype would drop trailing NULs)."""
    if not isinstance(value, list):
        arr = np.empty((), dtype=object)
        arr[()] = value
        return arr
    try:
        return np.array(value, dtype=object)
    except ValueError:  # inhomogeneous nesting
        raise InvalidInput(f"input '{name}' is not a rectangular array (ragged nesting?)") from None


def _tensor(name: str, value: Any, limits: Limits) -> np.ndarray[Any, Any]:
    """One input tensor from its JSON value; only data holding objects is walked for ``b64``."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        # ragged nesting (objects as leaves do not make numpy fail): as_array names the problem
        return as_array(name, value, limits)
    if arr.dtype.kind == "U":
        return as_array(name, value, limits)  # from the strings themselves: numpy's str dtype drops trailing NULs
    if arr.dtype != object:
        return as_array(name, arr, limits)
    unwrapped, found = _unwrap_b64(name, value)
    if found:
        return as_array(name, _object_array(name, unwrapped), limits)
    return as_array(name, arr, limits)


def _check_signature(doc: dict[str, Any], signatures: Sequence[str], default: str) -> str:
    raw = doc.get("signature_name")
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise InvalidInput("'signature_name' must be a string")
    if raw not in signatures:
        known = ", ".join(repr(s) for s in signatures)
        raise InvalidInput(f"signature '{raw}' is not served by this model; signatures: {known}")
    return raw


def _rows(instances: Any, signature: Signature, limits: Limits) -> dict[str, np.ndarray[Any, Any]]:
    if not isinstance(instances, list):
        raise InvalidInput("'instances' must be a list with one element per example")
    if not instances:
        raise InvalidInput("'instances' is empty")
    first = instances[0]
    if not isinstance(first, dict) or _is_b64(first):
        if len(signature.inputs) != 1:
            raise InvalidInput(
                f"the model takes several inputs ({', '.join(signature.input_names)}): "
                "each instance must be an object keyed by input name"
            )
        return {signature.inputs[0].name: _tensor(signature.inputs[0].name, instances, limits)}
    keys = set(first)
    if len(keys) > limits.max_tensors_per_request:
        raise InvalidInput(f"too many inputs ({len(keys)}); the limit is {limits.max_tensors_per_request}")
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict) or _is_b64(inst):
            raise InvalidInput(f"instance {i} is not an object of named inputs like instance 0")
        if inst.keys() != keys:
            raise InvalidInput(
                f"instance {i} has inputs {sorted(inst)}, instance 0 has {sorted(keys)}; "
                "every instance needs the same inputs"
            )
    return {name: _tensor(name, [inst[name] for inst in instances], limits) for name in first}


def _columns(inputs: Any, signature: Signature, limits: Limits) -> dict[str, np.ndarray[Any, Any]]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if not inputs:
            raise InvalidInput("'inputs' is an empty object")
        if len(inputs) > limits.max_tensors_per_request:
            raise InvalidInput(
                f"too many inputs ({len(inputs)}); the limit is {limits.max_tensors_per_request}"
            )
        return {name: _tensor(name, value, limits) for name, value in inputs.items()}
    if len(signature.inputs) != 1:
        raise InvalidInput(
            f"the model takes several inputs ({', '.join(signature.input_names)}): "
            "'inputs' must be an object keyed by input name"
        )
    name = signature.inputs[0].name
    return {name: _tensor(name, inputs, limits)}


def decode_predict_request(
    doc: Any,
    signature: Signature,
    limits: Limits,
    signatures: Sequence[str] = (DEFAULT_SIGNATURE,),
    default: str = DEFAULT_SIGNATURE,
) -> tuple[InferenceRequest, bool]:
    """A parsed predict body as a request; the flag is True for the columnar (``inputs``) format.

    ``signatures`` names the signatures the model serves; the one asked for is passed on in
    ``parameters["signature_name"]``.
    """
    if not isinstance(doc, dict):
        raise InvalidInput("the request must be a JSON object with 'instances' or 'inputs'")
    signature_name = _check_signature(doc, signatures, default)
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows and has_columns:
        raise InvalidInput("the request has both 'instances' and 'inputs'; send one of them")
    if has_rows:
        arrays = _rows(doc["instances"], signature, limits)
    elif has_columns:
        arrays = _columns(doc["inputs"], signature, limits)
    else:
        raise InvalidInput("the request needs 'instances' (row format) or 'inputs' (columnar format)")
    return InferenceRequest(inputs=arrays, parameters={"signature_name": signature_name}), has_columns


# ------------------------------------------------------------------------- encoding
def _text_or_b64(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _always_b64(value: Any) -> Any:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return _text_or_b64(value)


_text_or_b64_array = np.frompyfunc(_text_or_b64, 1, 1)
_always_b64_array = np.frompyfunc(_always_b64, 1, 1)


def _output_value(name: str, arr: np.ndarray[Any, Any]) -> Any:
    """A JSON-ready value: numeric arrays stay numpy (orjson writes them), strings become lists."""
    if arr.dtype.kind not in "OSU":
        value = jsonable(arr)
        if isinstance(value, np.ndarray):
            # the canonical scalar type of the dtype (e.g. int64, not longlong): rows of a 1-D
            # output are numpy scalars, and orjson writes only the canonical ones
            value = value.view(np.dtype(value.dtype.str))
        return value
    binary = name.endswith(BINARY_SUFFIX)
    if arr.ndim == 0:
        return _always_b64(arr.item()) if binary else _text_or_b64(arr.item())
    return (_always_b64_array if binary else _text_or_b64_array)(arr).tolist()


def encode_predict_response(response: InferenceResponse, columnar: bool) -> dict[str, Any]:
    """``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for columnar ones."""
    values = {name: _output_value(name, arr) for name, arr in response.outputs.items()}
    if columnar:
        if len(values) == 1:
            return {"outputs": next(iter(values.values()))}
        return {"outputs": values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    batch: int | None = None
    for name, arr in response.outputs.items():
        size = arr.shape[0] if arr.ndim else None
        if size is None or (batch is not None and size != batch):
            raise InvalidInput(
                f"output '{name}' has shape {list(arr.shape)}, which does not share the batch size of the "
                "other outputs; use the columnar format ('inputs')"
            )
        batch = size
    names = list(values)
    return {"predictions": [{n: values[n][i] for n in names} for i in range(batch or 0)]}

