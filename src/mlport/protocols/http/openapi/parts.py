"""Small builders shared by the parts of the OpenAPI document: references, operations, error answers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CALL_ERRORS", "ERROR_TEXT", "JSON_TYPE", "TAGS", "TAG_NATIVE", "TAG_OIP", "TAG_REPO", "TAG_SERVER", "TAG_TF",
    "Json", "error_refs", "json_body", "op", "ref", "responses", "schema_ref",
]

TAG_NATIVE = "describe/eval"
TAG_OIP = "Open Inference Protocol v2"
TAG_REPO = "OIP model repository"
TAG_TF = "TF Serving REST"
TAG_SERVER = "Server"

JSON_TYPE = "application/json"
TAGS = (TAG_NATIVE, TAG_OIP, TAG_REPO, TAG_TF, TAG_SERVER)

Json = dict[str, Any]


def ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> Json:
    return ref("schemas", name)


def json_body(schema: str | Json, description: str = "") -> Json:
    out: Json = {"content": {JSON_TYPE: {"schema": schema_ref(schema) if isinstance(schema, str) else schema}}}
    out["description"] = description or "OK"
    return out


def error_refs(*codes: int) -> dict[str, Json]:
    return {str(c): ref("responses", f"E{c}") for c in codes}


def op(summary: str, tag: str, ok: Json, *, errors: Sequence[int] = (), params: Sequence[str] = (),
       body: Json | None = None, description: str = "", op_id: str = "") -> Json:
    out: Json = {"tags": [tag], "summary": summary, "operationId": op_id or _op_id(summary)}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = [ref("parameters", p) for p in params]
    if body is not None:
        out["requestBody"] = body
    out["responses"] = {"200": ok, **error_refs(*errors)}
    return out


def _op_id(summary: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", summary)
    first: str = words[0].lower()
    return first + "".join(w.capitalize() for w in words[1:])


ERROR_TEXT = {
    400: "The request is invalid (the message names the value)",
    404: "No such model, version or label",
    406: "The Accept header asks for a media type this endpoint cannot produce",
    413: "The body exceeds the server's limit",
    415: "The Content-Type is not one this endpoint reads",
    422: "Understood, but not answerable as the model stands (the message says what to provide)",
    500: "Internal error (the message carries a request id to find it in the log)",
    503: "The model (or server) is not ready",
    504: "The prediction took longer than the server's time limit",
}
CALL_ERRORS = (400, 404, 413, 503, 504)


def responses() -> Json:
    return {f"E{code}": {"description": text, "content": {JSON_TYPE: {"schema": schema_ref("Error")}}}
            for code, text in ERROR_TEXT.items()}

