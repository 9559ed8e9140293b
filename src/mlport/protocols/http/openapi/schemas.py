"""The ``components.schemas`` of the OpenAPI document: the bodies of every API."""

from __future__ import annotations

from mlport.core.types import DataType
from mlport.protocols.http.openapi.parts import Json, schema_ref
from mlport.runtime.manager import VersionState

__all__ = ["schemas"]

_INTS: Json = {"type": "array", "items": {"type": "integer"}}
_DIMS: Json = {**_INTS, "description": "-1 marks a free dimension"}
_DATATYPE: Json = {"type": "string", "enum": [d.value for d in DataType]}
_ANY_VALUE: Json = {"description": "a number, string or boolean, or nested arrays of them"}
_PARAMS: Json = {"type": "object", "additionalProperties": {"type": ["boolean", "integer", "number", "string"]}}
_TENSOR_META: Json = {"type": "object", "required": ["name", "datatype", "shape"],
                      "properties": {"name": {"type": "string"}, "datatype": _DATATYPE, "shape": _DIMS}}


def schemas() -> Json:
    """Every schema, in the order the document lists them."""
    return {**_native_schemas(), **_metadata_schemas(), **_infer_schemas(), **_repository_and_tf_schemas()}


def _native_schemas() -> Json:
    """describe/eval bodies, the model list and the error answer."""
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "TensorDescription": {
            "type": "object", "required": ["name", "type", "shape"],
            "properties": {"name": {"type": "string"},
                           "type": {"type": "string", "enum": sorted({d.short_name for d in DataType})},
                           "shape": _DIMS},
        },
        "Describe": {
            "type": "object", "required": ["inputs", "outputs"],
            "properties": {"inputs": {"type": "array", "items": schema_ref("TensorDescription")},
                           "outputs": {"type": "array", "items": schema_ref("TensorDescription")}},
        },
        "EvalRequest": {
            "type": "object", "additionalProperties": _ANY_VALUE,
            "description": "Keys are input names. A value with the input's full rank is a batch; "
                           "one with a rank lower by one (a row or a scalar) is a single instance.",
        },
        "EvalResponse": {"type": "object", "additionalProperties": _ANY_VALUE,
                         "description": "Keys are output names; single-instance requests get no batch axis."},
        "ModelList": {
            "type": "object", "required": ["models"],
            "properties": {"models": {"type": "array", "items": {
                "type": "object", "required": ["name", "ready", "versions"],
                "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"},
                               "versions": {"type": "array", "items": schema_ref("VersionState")}},
            }}},
        },
        "VersionState": {
            "type": "object", "required": ["version", "state"],
            "properties": {"version": {"type": "string"},
                           "state": {"type": "string",
                                     "enum": [s.value for s in VersionState]},
                           "reason": {"type": "string"},
                           "memory_bytes": {"type": "integer",
                                            "description": "memory the loaded version holds (measured at its load)"}},
        },
    }


def _metadata_schemas() -> Json:
    """Health, server and model metadata."""
    return {
        "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        "ServerMetadata": {
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}},
        },
        "Datatype": _DATATYPE,
        "TensorMetadata": _TENSOR_META,
        "ModelMetadata": {
            "type": "object", "required": ["name", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"},
                           "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": schema_ref("TensorMetadata")},
                           "outputs": {"type": "array", "items": schema_ref("TensorMetadata")}},
        },
        "ModelReady": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "ready": {"type": "boolean"}}},
    }


def _infer_schemas() -> Json:
    """The OIP inference request and response."""
    return {
        "Parameters": _PARAMS,
        "InferInput": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": _INTS,
                           "datatype": schema_ref("Datatype"), "parameters": schema_ref("Parameters"),
                           "data": {**_ANY_VALUE, "description": "row-major values, nested or flat; left out "
                                                                 "when parameters.binary_data_size is set"}},
        },
        "InferRequestedOutput": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": schema_ref("Parameters")},
        },
        "InferRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {"id": {"type": "string"}, "parameters": schema_ref("Parameters"),
                           "inputs": {"type": "array", "minItems": 1, "items": schema_ref("InferInput")},
                           "outputs": {"type": "array", "items": schema_ref("InferRequestedOutput")}},
        },
        "InferOutput": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": _INTS,
                           "datatype": schema_ref("Datatype"), "parameters": schema_ref("Parameters"),
                           "data": _ANY_VALUE},
        },
        "InferResponse": {
            "type": "object", "required": ["model_name", "outputs"],
            "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                           "id": {"type": ["string", "null"]}, "parameters": schema_ref("Parameters"),
                           "outputs": {"type": "array", "items": schema_ref("InferOutput")}},
        },
    }


def _repository_and_tf_schemas() -> Json:
    """The OIP repository index and the TF Serving REST bodies."""
    return {
        "RepositoryIndexRequest": {"type": "object", "properties": {
            "ready": {"type": "boolean", "description": "only versions that are ready"}}},
        "RepositoryIndex": {"type": "array", "items": {
            "type": "object", "required": ["name", "version", "state"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "state": {"type": "string"}, "reason": {"type": "string"}},
        }},
        "TfModelStatus": {
            "type": "object", "required": ["model_version_status"],
            "properties": {"model_version_status": {"type": "array", "items": {
                "type": "object",
                "properties": {"version": {"type": "string"}, "state": {"type": "string"},
                               "status": {"type": "object", "properties": {
                                   "error_code": {"type": "string"}, "error_message": {"type": "string"}}}},
            }}},
        },
        "TfMetadata": {
            "type": "object", "required": ["model_spec", "metadata"],
            "properties": {"model_spec": {"type": "object", "properties": {
                               "name": {"type": "string"}, "signature_name": {"type": "string"},
                               "version": {"type": "string"}}},
                           "metadata": {"type": "object",
                                        "properties": {"signature_def": {"type": "object"}}}},
        },
        "TfPredictRequest": {
            "type": "object",
            "properties": {"signature_name": {"type": "string", "default": "serving_default"},
                           "instances": {"type": "array", "description": "row format: one element per "
                                         "example (an object keyed by input name with several inputs)"},
                           "inputs": {**_ANY_VALUE, "description": "columnar format: one tensor, or an object "
                                       "of named tensors"}},
            "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        },
        "TfPredictResponse": {
            "type": "object",
            "properties": {"predictions": {"type": "array", "description": "answer to the row format"},
                           "outputs": {**_ANY_VALUE, "description": "answer to the columnar format"}},
        },
    }
