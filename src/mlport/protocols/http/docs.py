"""OpenAPI 3.1 description of every HTTP endpoint, and a self-contained page to try them (``/docs``).

The document is built on each request, so it names the models served right now: an enum of
their names and, per model, example bodies made from its signature.  Any route of the app that
is not described below still appears, marked ``x-mlport-undocumented``, so the list of paths
never hides an endpoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from mlport.core.types import DataType, Signature
from mlport.errors import MlportError
from mlport.protocols.http.body import json_response
from mlport.protocols.http.negotiation import decoders, encoders
from mlport.protocols.http.state import AppState, state_of
from mlport.protocols.native import describe
from mlport.runtime.manager import VersionState

__all__ = ["UNDOCUMENTED", "build_openapi", "route_table", "routes", "sample_path", "serves", "undocumented"]

OPENAPI_VERSION = "3.1.0"
#: Marks an operation that exists in the app but has no hand-written description here.
UNDOCUMENTED = "x-mlport-undocumented"
#: Examples larger than this many elements per input are left out (an image would bloat the page).
MAX_EXAMPLE_ELEMENTS = 1024

TAG_NATIVE = "describe/eval"
TAG_OIP = "Open Inference Protocol v2"
TAG_REPO = "OIP model repository"
TAG_TF = "TF Serving REST"
TAG_SERVER = "Server"

_JSON = "application/json"
_PARAM = re.compile(r"\{[^}]*\}")

Json = dict[str, Any]


# --------------------------------------------------------------------------- routes of the app
def route_table(app_routes: Iterable[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    """``(mount prefix, route)`` for every plain route, looking inside mounts."""
    found: list[tuple[str, Route]] = []
    for route in app_routes:
        if isinstance(route, Route):
            found.append((prefix, route))
        elif isinstance(route, Mount):
            found.extend(route_table(route.routes, prefix + route.path_format.rstrip("/")))
    return found


def sample_path(template: str) -> str:
    """An OpenAPI path template with every parameter filled in (``/models/{name}`` -> ``/models/1``).

    ``1`` fits every Starlette convertor (str, path, int, float).
    """
    return _PARAM.sub("1", template)


def serves(prefix: str, route: Route, method: str, template: str) -> bool:
    """Whether ``route`` answers ``method`` on the paths ``template`` describes.

    Matching a filled-in template against the route's own pattern also covers routes that take the
    rest of the path in one parameter (``/v1/models/{path:path}``) and parse it themselves.
    """
    sample = sample_path(template)
    if method not in (route.methods or {"GET"}) or not sample.startswith(prefix):
        return False
    return route.path_regex.fullmatch(sample[len(prefix):]) is not None


def undocumented(paths: Json, app_routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """``(path, METHOD)`` of each route method that no operation in ``paths`` describes (HEAD left out)."""
    missing: list[tuple[str, str]] = []
    for prefix, route in route_table(app_routes):
        for method in sorted(route.methods or {"GET"}):
            if method == "HEAD":
                continue
            if not any(serves(prefix, route, method, template) and method.lower() in ops
                       for template, ops in paths.items()):
                missing.append((prefix + route.path_format, method))
    return missing


# --------------------------------------------------------------------------- small builders
def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Json:
    return _ref("schemas", name)


def _json_body(schema: str | Json, description: str = "") -> Json:
    out: Json = {"content": {_JSON: {"schema": _schema(schema) if isinstance(schema, str) else schema}}}
    out["description"] = description or "OK"
    return out


def _errors(*codes: int) -> dict[str, Json]:
    return {str(c): _ref("responses", f"E{c}") for c in codes}


def _op(summary: str, tag: str, ok: Json, *, errors: Sequence[int] = (), params: Sequence[str] = (),
        body: Json | None = None, description: str = "", op_id: str = "") -> Json:
    out: Json = {"tags": [tag], "summary": summary, "operationId": op_id or _op_id(summary)}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = [_ref("parameters", p) for p in params]
    if body is not None:
        out["requestBody"] = body
    out["responses"] = {"200": ok, **_errors(*errors)}
    return out


def _op_id(summary: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", summary)
    first: str = words[0].lower()
    return first + "".join(w.capitalize() for w in words[1:])


_ERROR_TEXT = {
    400: "The request is invalid (the message names the value)",
    404: "No such model, version or label",
    406: "The Accept header asks for a media type this endpoint cannot produce",
    413: "The body exceeds the server's limit",
    415: "The Content-Type is not one this endpoint reads",
    500: "Internal error (the message carries a request id to find it in the log)",
    503: "The model (or server) is not ready",
    504: "The prediction took longer than the server's time limit",
}
_CALL_ERRORS = (400, 404, 413, 503, 504)


# --------------------------------------------------------------------------- schemas
def _schemas() -> Json:
    ints: Json = {"type": "array", "items": {"type": "integer"}}
    dims = {**ints, "description": "-1 marks a free dimension"}
    params = {"type": "object", "additionalProperties": {"type": ["boolean", "integer", "number", "string"]}}
    datatype = {"type": "string", "enum": [d.value for d in DataType]}
    tensor_meta = {"type": "object", "required": ["name", "datatype", "shape"],
                   "properties": {"name": {"type": "string"}, "datatype": datatype, "shape": dims}}
    any_value: Json = {"description": "a number, string or boolean, or nested arrays of them"}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "TensorDescription": {
            "type": "object", "required": ["name", "type", "shape"],
            "properties": {"name": {"type": "string"},
                           "type": {"type": "string", "enum": sorted({d.short_name for d in DataType})},
                           "shape": dims},
        },
        "Describe": {
            "type": "object", "required": ["inputs", "outputs"],
            "properties": {"inputs": {"type": "array", "items": _schema("TensorDescription")},
                           "outputs": {"type": "array", "items": _schema("TensorDescription")}},
        },
        "EvalRequest": {
            "type": "object", "additionalProperties": any_value,
            "description": "Keys are input names. A value with the input's full rank is a batch; "
                           "one with a rank lower by one (a row or a scalar) is a single instance.",
        },
        "EvalResponse": {"type": "object", "additionalProperties": any_value,
                         "description": "Keys are output names; single-instance requests get no batch axis."},
        "ModelList": {
            "type": "object", "required": ["models"],
            "properties": {"models": {"type": "array", "items": {
                "type": "object", "required": ["name", "ready", "versions"],
                "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"},
                               "versions": {"type": "array", "items": _schema("VersionState")}},
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
        "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        "ServerMetadata": {
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}},
        },
        "Datatype": datatype,
        "TensorMetadata": tensor_meta,
        "ModelMetadata": {
            "type": "object", "required": ["name", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"},
                           "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": _schema("TensorMetadata")},
                           "outputs": {"type": "array", "items": _schema("TensorMetadata")}},
        },
        "ModelReady": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "ready": {"type": "boolean"}}},
        "Parameters": params,
        "InferInput": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": ints,
                           "datatype": _schema("Datatype"), "parameters": _schema("Parameters"),
                           "data": {**any_value, "description": "row-major values, nested or flat; left out "
                                                                "when parameters.binary_data_size is set"}},
        },
        "InferRequestedOutput": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": _schema("Parameters")},
        },
        "InferRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {"id": {"type": "string"}, "parameters": _schema("Parameters"),
                           "inputs": {"type": "array", "minItems": 1, "items": _schema("InferInput")},
                           "outputs": {"type": "array", "items": _schema("InferRequestedOutput")}},
        },
        "InferOutput": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": ints,
                           "datatype": _schema("Datatype"), "parameters": _schema("Parameters"),
                           "data": any_value},
        },
        "InferResponse": {
            "type": "object", "required": ["model_name", "outputs"],
            "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                           "id": {"type": ["string", "null"]}, "parameters": _schema("Parameters"),
                           "outputs": {"type": "array", "items": _schema("InferOutput")}},
        },
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
                           "inputs": {**any_value, "description": "columnar format: one tensor, or an object "
                                      "of named tensors"}},
            "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        },
        "TfPredictResponse": {
            "type": "object",
            "properties": {"predictions": {"type": "array", "description": "answer to the row format"},
                           "outputs": {**any_value, "description": "answer to the columnar format"}},
        },
    }


# --------------------------------------------------------------------------- per-model examples
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


class _Served:
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


# --------------------------------------------------------------------------- components
def _parameters(served: _Served) -> Json:
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


def _responses() -> Json:
    return {f"E{code}": {"description": text, "content": {_JSON: {"schema": _schema("Error")}}}
            for code, text in _ERROR_TEXT.items()}


# --------------------------------------------------------------------------- paths
def _native_paths(served: _Served) -> Json:
    binary = {"type": "string", "contentMediaType": "application/octet-stream"}
    media_schema: dict[str, Json] = {_JSON: _schema("EvalRequest"), "multipart/form-data": {
        "type": "object", "additionalProperties": binary, "description": "one part per input, named by it"}}
    request: Json = {}
    for mt in sorted(decoders):
        if mt == "application/x-www-form-urlencoded":
            continue  # the JSON body as curl -d labels it; not a form
        request[mt] = {"schema": media_schema.get(mt, binary)}
    request.setdefault(_JSON, {"schema": _schema("EvalRequest")})
    if served.eval:
        request[_JSON]["examples"] = served.examples(served.eval)
    answer: Json = {mt: {"schema": _schema("EvalResponse") if mt == _JSON
                         else binary if mt.startswith("image/") else {"type": "string"}}
                    for mt in sorted(encoders)}
    eval_body: Json = {"required": True, "content": request}
    eval_ok: Json = {"description": "the outputs, in the media type the Accept header asks for",
                     "content": answer}
    eval_text = ("Content-Type chooses how the body is read, Accept how the answer is written. "
                 "curl's default form Content-Type is read as JSON.")
    described = _json_body("Describe", "the model's inputs and outputs")
    if served.describe:
        described["content"][_JSON]["examples"] = served.examples(served.describe)
    eval_errors = (*_CALL_ERRORS, 406, 415)

    def eval_op(summary: str, params: Sequence[str], op_id: str) -> Json:
        return _op(summary, TAG_NATIVE, eval_ok, errors=eval_errors, params=(*params, "RequestId"),
                   body=eval_body, description=eval_text, op_id=op_id)

    return {
        "/models": {"get": _op("List models and their versions", TAG_NATIVE, _json_body("ModelList"))},
        "/models/{name}/describe": {"get": _op("Describe a model", TAG_NATIVE, described, errors=(404, 503),
                                               params=["ModelName"])},
        "/models/{name}/versions/{version}/describe": {"get": _op(
            "Describe a model version", TAG_NATIVE, described, errors=(404, 503),
            params=["ModelName", "Version"])},
        "/models/{name}/eval": {"post": eval_op("Evaluate a model", ["ModelName"], "evalModel")},
        "/models/{name}/versions/{version}/eval": {"post": eval_op(
            "Evaluate a model version", ["ModelName", "Version"], "evalModelVersion")},
        "/describe": {"get": _op("Describe the only model", TAG_NATIVE, described, errors=(404, 503),
                                 description="Only when the server serves exactly one model.")},
        "/eval": {"post": eval_op("Evaluate the only model", [], "evalSingle")},
        "/models/{name}/feedback": {"post": _op(
            "Reward a routed answer", TAG_NATIVE, _json_body({"type": "object"}), errors=(400, 404),
            params=["ModelName"],
            body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["id", "reward"],
                "properties": {"id": {"type": "string"}, "reward": {"type": "number"}}}}}},
            description="A bandit router (epsilon_greedy, thompson) learns from the reward for the answer to "
                        "the request with this id (the OIP 'id' or the X-Request-Id header).")},
        "/models/{name}/drift": {"get": _op(
            "Drift of a model", TAG_NATIVE, _json_body({"type": "object"}), errors=(404,), params=["ModelName"],
            description="Per watched version: the drift figures (PSI, Kolmogorov-Smirnov, chi-square) and status of "
                        "each feature over the sliding window, against the version's reference profile.")},
    }


def _oip_paths(served: _Served) -> Json:
    infer_content: Json = {"schema": _schema("InferRequest")}
    if served.infer:
        infer_content["examples"] = served.examples(served.infer)
    infer_body: Json = {"required": True, "content": {
        _JSON: infer_content,
        "application/octet-stream": {"schema": {
            "type": "string", "contentMediaType": "application/octet-stream",
            "description": "the JSON request, then binary tensors; see Inference-Header-Content-Length"}},
    }}
    infer_ok: Json = {
        "description": "the outputs; with binary outputs the JSON header is followed by their bytes",
        "headers": {"Inference-Header-Content-Length": {
            "schema": {"type": "integer"}, "description": "length of the JSON header before binary outputs"}},
        "content": {_JSON: {"schema": _schema("InferResponse")},
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "contentMediaType": "application/octet-stream"}}},
    }

    def infer_op(summary: str, params: Sequence[str]) -> Json:
        return _op(summary, TAG_OIP, infer_ok, errors=_CALL_ERRORS, body=infer_body,
                   params=(*params, "BinaryHeaderLength", "RequestId"))

    empty = _json_body({"type": "object"})
    return {
        "/v2/health/live": {"get": _op("Server live", TAG_OIP, _json_body("Live"), op_id="v2Live")},
        "/v2/health/ready": {"get": _op("Server ready", TAG_OIP, _json_body("Ready"), errors=(503,),
                                        op_id="v2Ready")},
        "/v2": {"get": _op("Server metadata", TAG_OIP, _json_body("ServerMetadata"))},
        "/v2/models/{name}": {"get": _op("Model metadata", TAG_OIP, _json_body("ModelMetadata"),
                                         errors=(404, 503), params=["ModelName"])},
        "/v2/models/{name}/versions/{version}": {"get": _op(
            "Model version metadata", TAG_OIP, _json_body("ModelMetadata"), errors=(404, 503),
            params=["ModelName", "Version"])},
        "/v2/models/{name}/ready": {"get": _op("Model ready", TAG_OIP, _json_body("ModelReady"),
                                               errors=(404, 503), params=["ModelName"])},
        "/v2/models/{name}/versions/{version}/ready": {"get": _op(
            "Model version ready", TAG_OIP, _json_body("ModelReady"), errors=(404, 503),
            params=["ModelName", "Version"])},
        **_extension_paths(),
        "/v2/models/{name}/infer": {"post": infer_op("Infer", ["ModelName"])},
        "/v2/models/{name}/versions/{version}/infer": {"post": infer_op("Infer with a version",
                                                                        ["ModelName", "Version"])},
        "/v2/repository/index": {"post": _op(
            "Repository index", TAG_REPO, _json_body("RepositoryIndex"), errors=(400,),
            body={"required": False, "content": {_JSON: {"schema": _schema("RepositoryIndexRequest")}}})},
        "/v2/repository/models/{name}/load": {"post": _op("Load a model", TAG_REPO, empty, errors=(400, 404),
                                                          params=["ModelName"])},
        "/v2/repository/models/{name}/unload": {"post": _op("Unload a model", TAG_REPO, empty, errors=(404,),
                                                            params=["ModelName"])},
    }


def _extension_paths() -> Json:
    """Triton's model configuration and statistics extensions."""
    config = _json_body({"type": "object", "description": "Triton's ModelConfig (model_config.proto) as JSON"})
    stats = _json_body({"type": "object", "description": "Triton's ModelStatisticsResponse as JSON",
                        "properties": {"model_stats": {"type": "array", "items": {"type": "object"}}}})
    paths: Json = {"/v2/models/stats": {"get": _op("Statistics of every model", TAG_OIP, stats)}}
    for suffix, params, what, key in (("", ["ModelName"], "", ""),
                                      ("/versions/{version}", ["ModelName", "Version"], " version", "V")):
        base = "/v2/models/{name}" + suffix
        paths[base + "/config"] = {"get": _op(f"Model{what} configuration", TAG_OIP, config, errors=(404, 503),
                                              params=params, op_id="modelConfig" + key)}
        paths[base + "/stats"] = {"get": _op(f"Model{what} statistics", TAG_OIP, stats, errors=(404, 503),
                                             params=params, op_id="modelStats" + key)}
    return paths


def _tf_paths(served: _Served) -> Json:
    predict_content: Json = {"schema": _schema("TfPredictRequest")}
    if served.predict:
        predict_content["examples"] = served.examples(served.predict)
    paths: Json = {}
    for suffix, params, what in (("", ["ModelName"], ""), ("/versions/{version}", ["ModelName", "Version"],
                                                           " (version)"),
                                 ("/labels/{label}", ["ModelName", "Label"], " (label)")):
        key = "V" if "version" in suffix else "L" if "label" in suffix else ""
        base = "/v1/models/{name}" + suffix
        paths[base] = {"get": _op("TF model status" + what, TAG_TF, _json_body("TfModelStatus"),
                                  errors=(404,), params=params, op_id="tfStatus" + key)}
        paths[base + "/metadata"] = {"get": _op("TF model metadata" + what, TAG_TF, _json_body("TfMetadata"),
                                                errors=(404, 503), params=params, op_id="tfMetadata" + key)}
        paths[base + ":predict"] = {"post": _op(
            "TF predict" + what, TAG_TF, _json_body("TfPredictResponse"), errors=_CALL_ERRORS, params=params,
            body={"required": True, "content": {_JSON: predict_content}}, op_id="tfPredict" + key,
            description="Send either instances (row format) or inputs (columnar format), not both.")}
    return paths


def _server_paths() -> Json:
    return {
        "/metrics": {"get": _op("Prometheus metrics", TAG_SERVER, {
            "description": "the text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}})},
        "/health/live": {"get": _op("Live", TAG_SERVER, _json_body("Live"))},
        "/health/ready": {"get": _op("Ready", TAG_SERVER, _json_body("Ready"), errors=(503,))},
        "/openapi.json": {"get": _op("This document", TAG_SERVER, _json_body({"type": "object"}),
                                     op_id="openapi")},
        "/docs": {"get": _op("A page to read and try the API", TAG_SERVER, {
            "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}, op_id="docs")},
    }


def build_openapi(state: AppState, app_routes: Iterable[BaseRoute] = (), root_path: str = "") -> Json:
    """The OpenAPI document for the models served now; ``app_routes`` adds any route not described here."""
    served = _Served(state)
    paths: Json = {**_native_paths(served), **_oip_paths(served), **_tf_paths(served), **_server_paths()}
    for path, method in undocumented(paths, app_routes):
        op: Json = {"summary": f"{method} {path}", UNDOCUMENTED: True,
                    "responses": {"200": {"description": "OK"}}}
        names = re.findall(r"\{([^}]*)\}", path)
        if names:
            op["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                for n in names]
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "mlport", "version": state.server_version,
                 "description": "Model server: describe/eval, Open Inference Protocol v2 and TF Serving "
                                "REST. Errors answer {\"error\": message}."},
        "servers": [{"url": root_path or "/"}],
        "tags": [{"name": t} for t in (TAG_NATIVE, TAG_OIP, TAG_REPO, TAG_TF, TAG_SERVER)],
        "paths": paths,
        "components": {"schemas": _schemas(), "parameters": _parameters(served), "responses": _responses()},
    }


# --------------------------------------------------------------------------- endpoints
#: The docs page may talk to this server only; it loads nothing from anywhere else.
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' blob: data:; base-uri 'none'; form-action 'none'")


@cache
def _page() -> str:
    return resources.files("mlport.protocols.http").joinpath("static/docs.html").read_text(encoding="utf-8")


async def openapi_json(request: Request) -> Response:
    doc = build_openapi(state_of(request), request.app.routes, request.scope.get("root_path", ""))
    return json_response(doc)


async def docs_page(request: Request) -> Response:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})


routes: list[Route] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
]
