"""The ``paths`` of the OpenAPI document, one function per API."""

from __future__ import annotations

from collections.abc import Sequence

from mlport.protocols.http.negotiation import decoders, encoders
from mlport.protocols.http.openapi.examples import Served
from mlport.protocols.http.openapi.parts import (
    CALL_ERRORS,
    JSON_TYPE,
    TAG_NATIVE,
    TAG_OIP,
    TAG_REPO,
    TAG_SERVER,
    TAG_TF,
    Json,
    json_body,
    op,
    schema_ref,
)

__all__ = ["explain_paths", "native_paths", "oip_paths", "server_paths", "tf_paths"]


def native_paths(served: Served) -> Json:
    binary = {"type": "string", "contentMediaType": "application/octet-stream"}
    media_schema: dict[str, Json] = {JSON_TYPE: schema_ref("EvalRequest"), "multipart/form-data": {
        "type": "object", "additionalProperties": binary, "description": "one part per input, named by it"}}
    request: Json = {}
    for mt in sorted(decoders):
        if mt == "application/x-www-form-urlencoded":
            continue  # the JSON body as curl -d labels it; not a form
        request[mt] = {"schema": media_schema.get(mt, binary)}
    request.setdefault(JSON_TYPE, {"schema": schema_ref("EvalRequest")})
    if served.eval:
        request[JSON_TYPE]["examples"] = served.examples(served.eval)
    answer: Json = {mt: {"schema": schema_ref("EvalResponse") if mt == JSON_TYPE
                         else binary if mt.startswith("image/") else {"type": "string"}}
                    for mt in sorted(encoders)}
    eval_body: Json = {"required": True, "content": request}
    eval_ok: Json = {"description": "the outputs, in the media type the Accept header asks for",
                     "content": answer}
    eval_text = ("Content-Type chooses how the body is read, Accept how the answer is written. "
                 "curl's default form Content-Type is read as JSON.")
    described = json_body("Describe", "the model's inputs and outputs")
    if served.describe:
        described["content"][JSON_TYPE]["examples"] = served.examples(served.describe)
    eval_errors = (*CALL_ERRORS, 406, 415)

    def eval_op(summary: str, params: Sequence[str], op_id: str) -> Json:
        return op(summary, TAG_NATIVE, eval_ok, errors=eval_errors, params=(*params, "RequestId"),
                   body=eval_body, description=eval_text, op_id=op_id)

    return {
        "/models": {"get": op("List models and their versions", TAG_NATIVE, json_body("ModelList"))},
        "/models/{name}/describe": {"get": op("Describe a model", TAG_NATIVE, described, errors=(404, 503),
                                               params=["ModelName"])},
        "/models/{name}/versions/{version}/describe": {"get": op(
            "Describe a model version", TAG_NATIVE, described, errors=(404, 503),
            params=["ModelName", "Version"])},
        "/models/{name}/eval": {"post": eval_op("Evaluate a model", ["ModelName"], "evalModel")},
        "/models/{name}/versions/{version}/eval": {"post": eval_op(
            "Evaluate a model version", ["ModelName", "Version"], "evalModelVersion")},
        "/describe": {"get": op("Describe the only model", TAG_NATIVE, described, errors=(404, 503),
                                 description="Only when the server serves exactly one model.")},
        "/eval": {"post": eval_op("Evaluate the only model", [], "evalSingle")},
        "/models/{name}/feedback": {"post": op(
            "Reward a routed answer", TAG_NATIVE, json_body({"type": "object"}), errors=(400, 404),
            params=["ModelName"],
            body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["id", "reward"],
                "properties": {"id": {"type": "string"}, "reward": {"type": "number"}}}}}},
            description="A bandit router (epsilon_greedy, thompson) learns from the reward for the answer to "
                        "the request with this id (the OIP 'id' or the X-Request-Id header).")},
        "/models/{name}/drift": {"get": op(
            "Drift of a model", TAG_NATIVE, json_body({"type": "object"}), errors=(404,), params=["ModelName"],
            description="Per watched version: the drift figures (PSI, Kolmogorov-Smirnov, chi-square) and status of "
                        "each feature over the sliding window, against the version's reference profile.")},
    }


def oip_paths(served: Served) -> Json:
    infer_content: Json = {"schema": schema_ref("InferRequest")}
    if served.infer:
        infer_content["examples"] = served.examples(served.infer)
    infer_body: Json = {"required": True, "content": {
        JSON_TYPE: infer_content,
        "application/octet-stream": {"schema": {
            "type": "string", "contentMediaType": "application/octet-stream",
            "description": "the JSON request, then binary tensors; see Inference-Header-Content-Length"}},
    }}
    infer_ok: Json = {
        "description": "the outputs; with binary outputs the JSON header is followed by their bytes",
        "headers": {"Inference-Header-Content-Length": {
            "schema": {"type": "integer"}, "description": "length of the JSON header before binary outputs"}},
        "content": {JSON_TYPE: {"schema": schema_ref("InferResponse")},
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "contentMediaType": "application/octet-stream"}}},
    }

    def infer_op(summary: str, params: Sequence[str]) -> Json:
        return op(summary, TAG_OIP, infer_ok, errors=CALL_ERRORS, body=infer_body,
                   params=(*params, "BinaryHeaderLength", "RequestId"))

    empty = json_body({"type": "object"})
    return {
        "/v2/health/live": {"get": op("Server live", TAG_OIP, json_body("Live"), op_id="v2Live")},
        "/v2/health/ready": {"get": op("Server ready", TAG_OIP, json_body("Ready"), errors=(503,),
                                        op_id="v2Ready")},
        "/v2": {"get": op("Server metadata", TAG_OIP, json_body("ServerMetadata"))},
        "/v2/models/{name}": {"get": op("Model metadata", TAG_OIP, json_body("ModelMetadata"),
                                         errors=(404, 503), params=["ModelName"])},
        "/v2/models/{name}/versions/{version}": {"get": op(
            "Model version metadata", TAG_OIP, json_body("ModelMetadata"), errors=(404, 503),
            params=["ModelName", "Version"])},
        "/v2/models/{name}/ready": {"get": op("Model ready", TAG_OIP, json_body("ModelReady"),
                                               errors=(404, 503), params=["ModelName"])},
        "/v2/models/{name}/versions/{version}/ready": {"get": op(
            "Model version ready", TAG_OIP, json_body("ModelReady"), errors=(404, 503),
            params=["ModelName", "Version"])},
        **_extension_paths(),
        "/v2/models/{name}/infer": {"post": infer_op("Infer", ["ModelName"])},
        "/v2/models/{name}/versions/{version}/infer": {"post": infer_op("Infer with a version",
                                                                        ["ModelName", "Version"])},
        "/v2/repository/index": {"post": op(
            "Repository index", TAG_REPO, json_body("RepositoryIndex"), errors=(400,),
            body={"required": False, "content": {JSON_TYPE: {"schema": schema_ref("RepositoryIndexRequest")}}})},
        "/v2/repository/models/{name}/load": {"post": op("Load a model", TAG_REPO, empty, errors=(400, 404),
                                                          params=["ModelName"])},
        "/v2/repository/models/{name}/unload": {"post": op("Unload a model", TAG_REPO, empty, errors=(404,),
                                                            params=["ModelName"])},
    }


def _extension_paths() -> Json:
    """Triton's model configuration and statistics extensions."""
    config = json_body({"type": "object", "description": "Triton's ModelConfig (model_config.proto) as JSON"})
    stats = json_body({"type": "object", "description": "Triton's ModelStatisticsResponse as JSON",
                        "properties": {"model_stats": {"type": "array", "items": {"type": "object"}}}})
    paths: Json = {"/v2/models/stats": {"get": op("Statistics of every model", TAG_OIP, stats)}}
    for suffix, params, what, key in (("", ["ModelName"], "", ""),
                                      ("/versions/{version}", ["ModelName", "Version"], " version", "V")):
        base = "/v2/models/{name}" + suffix
        paths[base + "/config"] = {"get": op(f"Model{what} configuration", TAG_OIP, config, errors=(404, 503),
                                              params=params, op_id="modelConfig" + key)}
        paths[base + "/stats"] = {"get": op(f"Model{what} statistics", TAG_OIP, stats, errors=(404, 503),
                                             params=params, op_id="modelStats" + key)}
    return paths


def tf_paths(served: Served) -> Json:
    predict_content: Json = {"schema": schema_ref("TfPredictRequest")}
    if served.predict:
        predict_content["examples"] = served.examples(served.predict)
    paths: Json = {}
    for suffix, params, what in (("", ["ModelName"], ""), ("/versions/{version}", ["ModelName", "Version"],
                                                           " (version)"),
                                 ("/labels/{label}", ["ModelName", "Label"], " (label)")):
        key = "V" if "version" in suffix else "L" if "label" in suffix else ""
        base = "/v1/models/{name}" + suffix
        paths[base] = {"get": op("TF model status" + what, TAG_TF, json_body("TfModelStatus"),
                                  errors=(404,), params=params, op_id="tfStatus" + key)}
        paths[base + "/metadata"] = {"get": op("TF model metadata" + what, TAG_TF, json_body("TfMetadata"),
                                                errors=(404, 503), params=params, op_id="tfMetadata" + key)}
        paths[base + ":predict"] = {"post": op(
            "TF predict" + what, TAG_TF, json_body("TfPredictResponse"), errors=CALL_ERRORS, params=params,
            body={"required": True, "content": {JSON_TYPE: predict_content}}, op_id="tfPredict" + key,
            description="Send either instances (row format) or inputs (columnar format), not both.")}
    return paths


_FLOATS: Json = {"type": "array", "items": {"type": ["number", "null"]}}
#: The answer of the explain routes (see mlport.explain.result).
EXPLANATION: Json = {"type": "object", "required": ["model_name", "model_version", "method", "features", "outputs",
                                                    "limits"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"},
    "method": {"enum": ["tree_shap", "kernel_shap", "permutation_shap", "occlusion"]},
    "features": {"type": "array", "items": {"type": "string"}},
    "outputs": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "element": {"type": ["string", "integer", "null"]},
        "base_value": _FLOATS, "prediction": _FLOATS,
        "values": {"type": "array", "items": _FLOATS, "description": "per row, one value per feature"},
        "map": {"type": "array", "items": {"type": "array", "items": _FLOATS},
                "description": "per row, an H x W grid (image inputs)"}}}},
    "limits": {"type": "object", "properties": {"rows": {"type": "integer"}, "evaluations": {"type": "integer"},
                                                "seconds": {"type": "number"}}}}}


def explain_paths() -> Json:
    """``/v2/models/{name}[/versions/{v}]/explain`` and TF Serving's ``:explain`` verb."""
    ok: Json = {"description": "the explanation; a PNG heat map with Accept: image/png for an image model",
                "content": {JSON_TYPE: {"schema": EXPLANATION},
                            "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}}
    errors = (*CALL_ERRORS, 406, 422)
    body: Json = {"required": True, "content": {
        JSON_TYPE: {"schema": schema_ref("InferRequest")},
        "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
        "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}}}
    tf_body: Json = {"required": True, "content": {JSON_TYPE: {"schema": schema_ref("TfPredictRequest")}}}
    return {
        "/v2/models/{name}/explain": {"post": op("Explain", TAG_OIP, ok, errors=errors, body=body,
                                                  params=["ModelName"])},
        "/v2/models/{name}/versions/{version}/explain": {"post": op(
            "Explain with a version", TAG_OIP, ok, errors=errors, body=body, params=["ModelName", "Version"])},
        "/v1/models/{name}:explain": {"post": op("TF explain", TAG_TF, ok, errors=errors, body=tf_body,
                                                  params=["ModelName"])},
        "/v1/models/{name}/versions/{version}:explain": {"post": op(
            "TF explain (version)", TAG_TF, ok, errors=errors, body=tf_body, params=["ModelName", "Version"])},
    }


def server_paths() -> Json:
    html: Json = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
    text: Json = {"schema": {"type": "string"}}
    icon: Json = {"description": "an SVG image", "content": {"image/svg+xml": text}}
    static: Json = {"description": "the file",
                    "content": {"text/javascript": text, "text/css": text, "image/svg+xml": text}}
    file_name: Json = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                       "description": "a file the pages load (docs.js, mlport.css, favicon.svg)"}
    return {
        "/metrics": {"get": op("Prometheus metrics", TAG_SERVER, {
            "description": "the text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}})},
        "/health/live": {"get": op("Live", TAG_SERVER, json_body("Live"))},
        "/health/ready": {"get": op("Ready", TAG_SERVER, json_body("Ready"), errors=(503,))},
        "/openapi.json": {"get": op("This document", TAG_SERVER, json_body({"type": "object"}),
                                    op_id="openapi")},
        "/docs": {"get": op("A page to read and try the API", TAG_SERVER, html, op_id="docs")},
        "/": {"get": op("The landing page: the models served, their versions, states and load errors",
                        TAG_SERVER, html, op_id="landing")},
        "/static/{name}": {"get": {**op("A script, style sheet or icon of the pages", TAG_SERVER, static,
                                        errors=(404,), op_id="staticFile"), "parameters": [file_name]}},
        "/favicon.ico": {"get": op("The icon browsers ask for", TAG_SERVER, icon, op_id="favicon")},
    }
