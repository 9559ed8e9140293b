"""OpenAPI 3.1 description of the hub's HTTP API (the page that lists it, ``/docs``, is a template)."""

from __future__ import annotations

from functools import cache
from typing import Any

from mlport.hub.bodies import BODIES
from mlport.hub.presets import openapi_paths

__all__ = ["build_openapi"]

Json = dict[str, Any]

_JSON = "application/json"

_ERRORS = {
    400: "The request is invalid (the message names the field)",
    401: "No token, or a token that does not verify (expired, revoked, wrong signature or algorithm)",
    403: "The token's roles do not allow this, or it is limited to other deployments",
    404: "No such model, version, deployment or user",
    409: "The request clashes with the current state (name taken, model still deployed)",
    413: "The body exceeds the hub's limit",
    415: "The Content-Type is not one this endpoint reads",
    503: "No replica of the deployment is ready",
    504: "The replica did not answer in time",
}


_IMAGE_IN: Json = {"type": "object", "required": ["image", "digest"], "additionalProperties": False,
                   "properties": {"image": {"type": "string"}, "digest": {"type": "string",
                                                                          "pattern": "^sha256:[0-9a-f]{64}$"}}}
_IMAGE: Json = {"type": "object", "properties": {
    "image": {"type": "string"}, "digest": {"type": "string"}, "pinned": {"type": "string"},
    "recorded_at": {"type": "number"}, "recorded_by": {"type": "string"}}}
_BUILD_IN: Json = {"type": "object", "required": ["tag"], "additionalProperties": False, "properties": {
    "tag": {"type": "string"}, "push": {"type": "boolean"}, "tls_verify": {"type": "boolean"}}}
_JOB: Json = {"type": "object", "properties": {
    "id": {"type": "string"}, "kind": {"type": "string"},
    "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
    "spec": {"type": "object"}, "created_at": {"type": "number"}, "created_by": {"type": "string"},
    "started_at": {"type": ["number", "null"]}, "finished_at": {"type": ["number", "null"]},
    "message": {"type": "string"}, "result": {"type": ["object", "null"]}}}
_MANIFEST_QUERY: tuple[Json, ...] = (
    {"name": "target", "in": "query", "schema": {"type": "string", "enum": ["kubernetes", "kserve"]}},
    {"name": "image", "in": "query", "description": "kserve: the runtime image", "schema": {"type": "string"}},
    {"name": "namespace", "in": "query", "schema": {"type": "string"}},
    {"name": "gateway", "in": "query", "schema": {"type": "string"}},
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["yaml", "json"]}},
)


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: Json | str, required: bool = True) -> Json:
    return {"required": required,
            "content": {_JSON: {"schema": _ref(schema) if isinstance(schema, str) else schema}}}


def _ok(schema: Json | str | None, status: str = "200", description: str = "OK") -> Json:
    if schema is None:
        return {status: {"description": description}}
    return {status: {"description": description,
                     "content": {_JSON: {"schema": _ref(schema) if isinstance(schema, str) else schema}}}}


_LOGGING_BODY: Json = {"type": "object", "properties": {
    "sample": {"type": "number", "minimum": 0, "maximum": 1},
    "payload": {"type": "string", "enum": ["none", "inputs", "outputs", "all"]},
    "sink": {"type": ["string", "object", "null"], "description": "a folder, s3://bucket/prefix or http(s):// URL"}}}
_LOGGING: Json = {"type": "object", "properties": {"deployment": {"type": "string"},
                                                   "logging": {"type": ["object", "null"]}, "sink": {"type": "string"}}}


def _op(op_id: str, summary: str, tag: str, ok: Json, *, errors: tuple[int, ...] = (400, 401, 403),
        body: Json | None = None, params: tuple[str, ...] = (), secured: bool = True,
        query: tuple[Json, ...] = ()) -> Json:
    out: Json = {"operationId": op_id, "summary": summary, "tags": [tag]}
    parameters = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 1} if p == "version" else {"type": "string"}}
                  for p in params]
    parameters.extend(query)
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = body
    out["responses"] = {**ok, **{str(c): {"$ref": f"#/components/responses/E{c}"} for c in errors}}
    if not secured:
        out["security"] = []
    return out


def _schemas() -> Json:
    s: Json = {"type": "string"}
    i: Json = {"type": "integer"}
    n: Json = {"type": "number"}
    strs: Json = {"type": "array", "items": s}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": s}},
        "Token": {"type": "object", "required": ["access_token", "token_type", "expires_in"],
                  "properties": {"access_token": s, "token_type": {"const": "bearer"}, "expires_in": i,
                                 "roles": strs, "name": s, "jti": s}},
        "Principal": {"type": "object", "properties": {"subject": s, "roles": strs, "kind": s,
                                                       "deployments": {"type": ["array", "null"], "items": s}}},
        "Model": {"type": "object", "properties": {"name": s, "description": s,
                                                   "labels": {"type": "object", "additionalProperties": s},
                                                   "created_at": n, "created_by": s,
                                                   "latest_version": {"type": ["integer", "null"]},
                                                   "deployed_by": strs}},
        "Version": {"type": "object", "properties": {
            "model": s, "version": i, "format": {"type": ["string", "null"]},
            "signature": {"type": ["object", "null"]}, "size": i, "sha256": s, "created_at": n, "created_by": s,
            "description": s, "tags": strs, "source": s, "kind": {"enum": ["file", "folder"]}, "filename": s,
            "warning": {**s, "description": "on upload: why no signature was recorded, and what to do"}}},
        "Target": {"type": "object", "properties": {
            "model": s, "primary": i, "strategy": {"enum": ["single", "canary", "ab", "shadow"]},
            "candidate": {"type": ["integer", "null"]}, "percent": n,
            "sticky_header": {"type": ["string", "null"]}}},
        "Deployment": {"type": "object", "properties": {
            "name": s, "model": s, "target": _ref("Target"), "policy": _ref("ScalePolicy"),
            "trusted": {"type": "boolean"}, "created_at": n, "created_by": s, "updated_at": n,
            "serving": {"type": "object", "properties": {"lazy": {"type": "boolean"},
                                                         "load_timeout_s": {"type": ["number", "null"]}}},
            "replicas": {"type": "object"}}},
        "HistoryEntry": {"type": "object", "properties": {"id": i, "number": i, "at": n, "by": s, "action": s,
                                                          "target": _ref("Target"), "policy": _ref("ScalePolicy")}},
        "ShadowSummary": {"type": "object", "properties": {
            "primary": {"type": ["integer", "null"]}, "shadow": {"type": ["integer", "null"]}, "requests": i,
            "agreed": i, "agreement_rate": {"type": ["number", "null"]}, "errors": i, "dropped": i,
            "live_latency_ms": {"type": "object"}, "shadow_latency_ms": {"type": "object"},
            "recent_disagreements": {"type": "array"}}},
        **_body_schemas(),
    }


def _body_schemas() -> Json:
    """The JSON schemas of the request bodies, generated from the models the handlers parse them with."""
    out: Json = {}
    for name, model in BODIES.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        schema["title"] = name
        out[name] = schema
    return out


def _list_of(key: str, schema: str) -> Json:
    return {"type": "object", "properties": {key: {"type": "array", "items": _ref(schema)}}}


# path parameters and tags of the operations below
_M, _V, _D, _U = ("model",), ("model", "version"), ("name",), ("name",)
_T_AUTH, _T_MODELS, _T_DEPLOY, _T_GW, _T_JOBS = "Auth and users", "Models", "Deployments", "Gateway", "Jobs"


def _auth_paths() -> Json:
    return {
        "/auth/token": {"post": _op("issueToken", "Log in: a user's name and password for a bearer token", _T_AUTH,
                                    _ok("Token"), body=_body("Login"), errors=(400, 401, 415), secured=False)},
        "/api/v1/whoami": {"get": _op("whoami", "The caller's token: subject, roles, deployments", _T_AUTH,
                                      _ok("Principal"), errors=(401,))},
        "/api/v1/users": {
            "get": _op("listUsers", "List users and service accounts (admin)", _T_AUTH,
                       _ok({"type": "object", "properties": {"users": {"type": "array"}}})),
            "post": _op("createUser", "Create a user with roles (admin)", _T_AUTH, _ok(None, "201", "Created"),
                        body=_body("NewUser"), errors=(400, 401, 403, 409))},
        "/api/v1/users/{name}": {"delete": _op("deleteUser", "Delete a user (admin)", _T_AUTH,
                                               _ok(None, "204", "Deleted"), params=_U, errors=(400, 401, 403, 404))},
        "/api/v1/service-accounts": {"post": _op(
            "createServiceAccount", "Create a service account and return its token, shown only once (admin)",
            _T_AUTH, _ok("Token", "201", "Created"), body=_body("NewServiceAccount"), errors=(400, 401, 403, 409))},
        "/api/v1/tokens/revoke": {"post": _op("revokeToken", "Revoke a token (your own, or any as admin)", _T_AUTH,
                                              _ok({"type": "object"}), body=_body("Revoke"))},
    }


def _model_paths() -> Json:
    return {
        "/api/v1/models": {
            "get": _op("listModels", "List models", _T_MODELS, _ok(_list_of("models", "Model"))),
            "post": _op("createModel", "Create a model", _T_MODELS, _ok("Model", "201", "Created"),
                        body=_body("NewModel"), errors=(400, 401, 403, 409))},
        "/api/v1/models/{model}": {
            "get": _op("getModel", "A model and the deployments that serve it", _T_MODELS, _ok("Model"), params=_M,
                       errors=(401, 403, 404)),
            "delete": _op("deleteModel", "Delete a model and its versions (refused while deployed)", _T_MODELS,
                          _ok(None, "204", "Deleted"), params=_M, errors=(401, 403, 404, 409))},
        "/api/v1/models/{model}/versions": {
            "get": _op("listVersions", "List a model's versions", _T_MODELS, _ok(_list_of("versions", "Version")),
                       params=_M, errors=(401, 403, 404)),
            "post": _op(
                "createVersion", "Upload a new version (raw body: a model file or a .tar.gz/.zip of a model folder) "
                "or register an artifact already in the store (JSON)", _T_MODELS, _ok("Version", "201", "Created"),
                params=_M, errors=(400, 401, 403, 404, 413, 415),
                body={"required": True, "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    _JSON: {"schema": _ref("Register")}}},
                query=(
                    {"name": "filename", "in": "query", "schema": {"type": "string"},
                     "description": "file name of the upload (required for raw uploads)"},
                    {"name": "source", "in": "query", "schema": {"type": "string"},
                     "description": "what the version's source records (default: filename), e.g. the user's "
                                    "file or folder name"},
                    {"name": "description", "in": "query", "schema": {"type": "string"}},
                    {"name": "tags", "in": "query", "schema": {"type": "string"}, "description": "comma-separated"},
                    {"name": "trusted", "in": "query", "schema": {"type": "boolean"},
                     "description": "read the signature of a format that runs code (admin)"}))},
        "/api/v1/models/{model}/versions/{version}": {"get": _op(
            "getVersion", "A version's metadata: format, signature, size, sha256", _T_MODELS, _ok("Version"),
            params=_V, errors=(400, 401, 403, 404))},
        "/api/v1/models/{model}/versions/{version}/artifact": {"get": _op(
            "downloadVersion", "Download a version's file", _T_MODELS,
            {"200": {"description": "The file", "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}}, params=_V, errors=(400, 401, 403, 404))},
        "/api/v1/models/{model}/versions/{version}/images": {
            "post": _op("recordImage", "Record an image built from a version (reference and digest)", _T_MODELS,
                        _ok(_IMAGE, "201", "Recorded"), params=_V, body=_body(_IMAGE_IN), errors=(400, 401, 403, 404)),
            "get": _op("listImages", "The images built from a version, newest first", _T_MODELS,
                       _ok({"type": "object", "properties": {"images": {"type": "array", "items": _IMAGE}}}),
                       params=_V, errors=(400, 401, 403, 404))},
        "/api/v1/models/{model}/versions/{version}/build": {"post": _op(
            "buildImage", "Build (and push) an image of a version as a job; a pushed image is recorded on it",
            _T_MODELS, _ok(_JOB, "202", "Queued"), params=_V, body=_body(_BUILD_IN), errors=(400, 401, 403, 404))},
    }


def _job_paths() -> Json:
    return {
        "/api/v1/jobs": {"get": _op("listJobs", "Jobs, newest first (state= to filter)", _T_JOBS, _ok(
            {"type": "object", "properties": {"jobs": {"type": "array", "items": _JOB}}}), errors=(400, 401, 403),
            query=({"name": "state", "in": "query", "schema": {"type": "string"}},)),
            "post": _op("submitScoreJob", "Score a file with a model version (mlport score run by the hub: kind "
                        "batch-score; the progress message counts the rows scored)", _T_JOBS,
                        _ok(_JOB, "202", "Queued"), errors=(400, 401, 403, 404), body=_body({
                            "type": "object", "required": ["input", "output"], "properties": {
                                "model": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
                                "deployment": {"type": "string",
                                               "description": "score with the version this deployment serves"},
                                "input": {"type": "string", "description": "a path on the hub's machine or s3://"},
                                "output": {"type": "string", "description": ".parquet, .csv or .jsonl; path or s3://"},
                                "options": {"type": "object",
                                            "description": "batch_size, workers, keep, maps, fail_fast"}}}))},
        "/api/v1/jobs/{job}": {"get": _op("getJob", "A job's state, progress message and result", _T_JOBS,
                                          _ok(_JOB), params=("job",), errors=(401, 403, 404))},
        "/api/v1/jobs/{job}/log": {"get": _op(
            "jobLog", "A job's log (its last MiB)", _T_JOBS, {"200": {"description": "The log", "content": {
                "text/plain": {"schema": {"type": "string"}}}}}, params=("job",), errors=(401, 403, 404))},
        "/api/v1/jobs/{job}/cancel": {"post": _op("cancelJob", "Stop a queued or running job", _T_JOBS, _ok(_JOB),
                                                  params=("job",), errors=(401, 403, 404, 409))},
    }


def _deployment_paths() -> Json:
    exp = _body("Experiment")
    return {
        "/api/v1/deployments/{name}/manifests": {"get": _op(
            "deploymentManifests", "Kubernetes or KServe manifests of a deployment (YAML, or JSON with format=json)",
            _T_DEPLOY, {"200": {"description": "The objects to apply", "content": {
                "application/yaml": {"schema": {"type": "string"}},
                _JSON: {"schema": {"type": "object", "properties": {"objects": {"type": "array"}}}}}}},
            params=_D, errors=(400, 401, 403, 404, 409), query=_MANIFEST_QUERY)},
        "/api/v1/deployments": {
            "get": _op("listDeployments", "List deployments with their replicas", _T_DEPLOY,
                       _ok(_list_of("deployments", "Deployment"))),
            "post": _op("deploy", "Deploy a model version under a name (or move a deployment to that version)",
                        _T_DEPLOY, _ok("Deployment", "201", "Created"), body=_body("NewDeployment"),
                        errors=(400, 401, 403, 404, 409))},
        "/api/v1/deployments/{name}": {
            "get": _op("getDeployment", "A deployment: target, policy, replicas", _T_DEPLOY, _ok("Deployment"),
                       params=_D, errors=(401, 403, 404)),
            "delete": _op("deleteDeployment", "Delete a deployment and stop its replicas", _T_DEPLOY,
                          _ok(None, "204", "Deleted"), params=_D, errors=(401, 403, 404))},
        "/api/v1/deployments/{name}/canary": {"post": _op(
            "canary", "Send a share of traffic (percent) to a candidate version", _T_DEPLOY, _ok("Deployment"),
            params=_D, body=exp, errors=(400, 401, 403, 404, 409))},
        "/api/v1/deployments/{name}/ab": {"post": _op(
            "abTest", "Split traffic between the primary and a second version, sticky by a header", _T_DEPLOY,
            _ok("Deployment"), params=_D, body=exp, errors=(400, 401, 403, 404, 409))},
        "/api/v1/deployments/{name}/shadow": {
            "post": _op("shadow", "Copy live traffic to a version whose answers are compared, never returned",
                        _T_DEPLOY, _ok("Deployment"), params=_D, body=exp, errors=(400, 401, 403, 404, 409)),
            "get": _op("shadowSummary", "The shadow comparison: agreement rate, latency, recent disagreements",
                       _T_DEPLOY, _ok("ShadowSummary"), params=_D, errors=(401, 403, 404))},
        "/api/v1/deployments/{name}/promote": {"post": _op(
            "promote", "Make the candidate version serve all traffic", _T_DEPLOY, _ok("Deployment"), params=_D,
            errors=(400, 401, 403, 404))},
        "/api/v1/deployments/{name}/rollback": {"post": _op(
            "rollback", "End the experiment, or go back to the version served before", _T_DEPLOY, _ok("Deployment"),
            params=_D, errors=(400, 401, 403, 404))},
        "/api/v1/deployments/{name}/scale": {"post": _op(
            "scale", "Change the replica policy (min, max, target in-flight per replica, scale to zero)",
            _T_DEPLOY, _ok("Deployment"), params=_D, body=_body("ScalePolicy"), errors=(400, 401, 403, 404))},
        "/api/v1/deployments/{name}/history": {"get": _op(
            "deploymentHistory", "Every change of a deployment, newest first", _T_DEPLOY,
            _ok(_list_of("history", "HistoryEntry")), params=_D, errors=(401, 403, 404))},
    }


def _observing_paths() -> Json:
    return {
        "/api/v1/deployments/{name}/logging": {
            "get": _op("getRequestLogging", "The deployment's request logging: sample, payload, sink", _T_DEPLOY,
                       _ok(_LOGGING), params=_D, errors=(401, 403, 404)),
            "put": _op("setRequestLogging", "Log the deployment's requests with their tensors (a sink other than the "
                       "hub's folder: admin); its replicas start again with the new settings", _T_DEPLOY,
                       _ok(_LOGGING), params=_D, body=_body(_LOGGING_BODY), errors=(400, 401, 403, 404)),
            "delete": _op("stopRequestLogging", "Stop logging the deployment's requests", _T_DEPLOY,
                          _ok(None, "204", "Stopped"), params=_D, errors=(401, 403))},
        "/api/v1/deployments/{name}/logs": {"get": _op(
            "deploymentLogs", "Logged requests of the deployment, oldest first, each with the version that answered",
            _T_DEPLOY, _ok({"type": "object", "properties": {"records": {"type": "array", "items": {"type": "object"}},
                                                            "cursor": {"type": "string"}}}),
            params=_D, errors=(400, 401, 403, 404, 409),
            query=tuple({"name": q, "in": "query", "required": False, "schema": {"type": t}, "description": text}
                        for q, t, text in (("since", "string", "ISO 8601 time: only records from then on"),
                                           ("limit", "integer", "the newest N records at most (default 1000)"),
                                           ("cursor", "string", "the previous answer's cursor: only newer records"))))},
        **{path: {"get": _op(
            op_id, "The drift of a deployment: each ready replica's figures per feature, and the worst status",
            _T_DEPLOY, _ok({"type": "object"}), params=_D, errors=(401, 403, 404))}
           for path, op_id in (("/api/v1/deployments/{name}/drift", "deploymentDrift"),
                               ("/deployments/{name}/drift", "gatewayDrift"))},
        "/deployments/{name}/{path}": {method: _op(
            f"gateway{method.capitalize()}", "Call a deployed model with any runtime API (OIP v2, TF Serving, "
            "describe/eval); the path after the deployment name is the runtime's", _T_GW,
            {"200": {"description": "The replica's answer; headers x-mlport-deployment and x-mlport-version "
                                    "say which version answered"}},
            params=("name", "path"), errors=(400, 401, 403, 404, 413, 503, 504)) for method in ("get", "post")},
        "/healthz": {"get": _op("health", "The hub is up", "Hub", _ok({"type": "object"}), errors=(),
                                secured=False)},
        "/metrics": {"get": _op("metrics", "Prometheus metrics of the hub and its gateway", "Hub",
                                {"200": {"description": "Prometheus text format",
                                         "content": {"text/plain": {"schema": {"type": "string"}}}}},
                                errors=(), secured=False)},
        "/sd/replicas": {"get": _op(
            "replicaTargets", "Prometheus HTTP service discovery: a scrape target per ready replica, labelled "
            "deployment, version, replica and model", "Hub",
            _ok({"type": "array", "items": {"type": "object"}}), errors=(), secured=False)},
        "/sd/replicas/{deployment}/{version}/{replica}/metrics": {"get": _op(
            "replicaMetrics", "One replica's Prometheus metrics, passed on by the hub", "Hub",
            {"200": {"description": "Prometheus text format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
            params=("deployment", "version", "replica"), errors=(404, 503), secured=False)},
    }


@cache
def build_openapi() -> Json:
    paths: Json = {**_auth_paths(), **_model_paths(), **_job_paths(), **_deployment_paths(), **_observing_paths()}
    responses = {f"E{c}": {"description": text, "content": {_JSON: {"schema": _ref("Error")}}}
                 for c, text in _ERRORS.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlport hub", "version": "1",
                 "description": "Model registry, users and tokens, deployments and their gateway."},
        "paths": {**paths, **openapi_paths()},
        "components": {"schemas": _schemas(), "responses": responses,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
    }
