"""What the document says about the models served right now: names, versions, labels, example bodies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlport.core.types import DataType, Signature
from mlport.errors import MlportError
from mlport.protocols.http.openapi.parts import Json
from mlport.protocols.http.state import AppState
from mlport.protocols.native import describe

__all__ = ["MAX_EXAMPLE_ELEMENTS", "Served", "parameters"]

#: Examples larger than this many elements per input are left out (an image would bloat the page).
MAX_EXAMPLE_ELEMENTS = 1024


def _fill(type_name: str) -> Any:
    if type_name == "string":
        return ""
    if type_name == "bool":
        return False
    return 0.0 if type_name.startswith("float") else 0


def _dims(shape: Sequence[int]) -> list[int] | None:
    dims = [1 if d < 0 else d for d in shape]
    return dims if math.prod(dims) <= MAX_EXAMPLE_ELEMENTS else None


def _nested(value: Any, dims: Sequence[int]) -> Any:
    for d in reversed(dims):
        value = [value] * d
    return value


def _eval_example(described: Json) -> Json | None:
    body: Json = {}
    for spec in described["inputs"]:
        dims = _dims(spec["shape"])
        if dims is None:
            return None
        body[spec["name"]] = _nested(_fill(spec["type"]), dims)
    return body


def _infer_example(signature: Signature) -> Json | None:
    inputs: list[Json] = []
    for spec in signature.inputs:
        dims = _dims(spec.shape)
        if dims is None or spec.datatype is DataType.FP16:  # FP16 travels only in binary form
            return None
        inputs.append({"name": spec.name, "shape": dims, "datatype": spec.datatype.value,
                       "data": [_fill(spec.datatype.short_name)] * math.prod(dims)})
    return {"inputs": inputs}


def _predict_example(signature: Signature) -> Json | None:
    shapes: list[list[int]] = []
    for spec in signature.inputs:
        dims = _dims(spec.shape)
        if dims is None:
            return None
        shapes.append(dims)
    specs = list(zip(signature.inputs, shapes, strict=True))
    if not all(spec.batched for spec in signature.inputs):
        # the row format needs a batch axis: use the columnar one
        return {"inputs": {spec.name: _nested(_fill(spec.datatype.short_name), dims) for spec, dims in specs}}
    row = {spec.name: _nested(_fill(spec.datatype.short_name), dims[1:]) for spec, dims in specs}
    return {"instances": list(row.values()) if len(row) == 1 else [row]}


class Served:
    """Names, versions and example bodies of the models served right now."""

    def __init__(self, state: AppState) -> None:
        self.names = state.manager.names()
        self.versions: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.describe: dict[str, Json] = {}
        self.eval: dict[str, Json] = {}
        self.infer: dict[str, Json] = {}
        self.predict: dict[str, Json] = {}
        for name in self.names:
            try:
                lv = state.manager.serving_version(name)
            except MlportError:
                continue  # not ready: listed by name, without examples
            self.versions[name] = str(lv.version)
            if lv.config.version_labels:
                self.labels[name] = min(lv.config.version_labels)
            self.describe[name] = describe(lv.signature, lv.config)
            for table, example in ((self.eval, _eval_example(self.describe[name])),
                                   (self.infer, _infer_example(lv.signature)),
                                   (self.predict, _predict_example(lv.signature))):
                if example is not None:
                    table[name] = example

    @staticmethod
    def examples(table: dict[str, Json]) -> Json:
        return {name: {"summary": name, "value": value} for name, value in table.items()}


def parameters(served: Served) -> Json:
    """The ``components.parameters``: path and header parameters, with the served names and versions."""
    name_schema: Json = {"type": "string"}
    if served.names:
        name_schema["enum"] = served.names
    version: Json = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "a version number, or 'latest'"}
    if served.versions:
        version["examples"] = {n: {"summary": n, "value": v} for n, v in served.versions.items()}
    label: Json = {"name": "label", "in": "path", "required": True, "schema": {"type": "string"},
                   "description": "a version label (version_labels in the model's config)"}
    if served.labels:
        label["examples"] = {n: {"summary": n, "value": v} for n, v in served.labels.items()}
    return {
        "ModelName": {"name": "name", "in": "path", "required": True, "schema": name_schema,
                      "description": "the model's name (GET /models lists them)"},
        "Version": version,
        "Label": label,
        "BinaryHeaderLength": {
            "name": "Inference-Header-Content-Length", "in": "header", "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "binary tensor data extension: length of the JSON header at the start of the "
                           "body; the binary tensors follow it in the order of the inputs. 0: the whole "
                           "body is the raw bytes of the model's single input.",
        },
        "RequestId": {"name": "x-request-id", "in": "header", "required": False, "schema": {"type": "string"},
                      "description": "echoed in logs and error answers (the OIP id when the body has none)"},
    }
