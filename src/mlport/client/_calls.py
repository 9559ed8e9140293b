"""The calls of the HTTP API, built by pure functions shared by the sync and async clients.

Each call is a :class:`Call`: the request to send, and how to read its answer (:func:`finish`). The
OIP v2 REST infer call carries tensors as JSON or with the binary tensor extension.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from mlport.client._errors import ClientError, code_of_http
from mlport.client._wire import (
    Array,
    as_input,
    from_json_data,
    json_default,
    json_value,
    parse_datatype,
    parse_shape,
    plain,
    raw_input,
    to_json_data,
)
from mlport.core.wire import from_raw

__all__ = ["Answer", "Call", "Calls", "Inputs", "Version", "base_url", "eval_call", "finish", "image_call",
           "infer_call"]

T = TypeVar("T")
Inputs = Mapping[str, Any]
Version = str | int | None

_HEADER_LENGTH = "Inference-Header-Content-Length"
_MAX_ERROR_TEXT = 2000
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


@dataclass(slots=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytearray


@dataclass(slots=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Answer], T]
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    #: Error statuses answered by ``read`` rather than raised (readiness probes).
    accept: frozenset[int] = frozenset()


# ------------------------------------------------------------------------------------ paths


def _seg(value: str | int) -> str:
    return quote(str(value), safe="")


def _model_path(prefix: str, name: str, version: Version, suffix: str = "") -> str:
    path = f"{prefix}/{_seg(name)}"
    if version is not None and str(version) != "":
        path += f"/versions/{_seg(version)}"
    return path + suffix


def base_url(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


# ---------------------------------------------------------------------------------- answers


def _json(answer: Answer) -> Any:
    return orjson.loads(answer.body)


def _ok(answer: Answer) -> bool:
    return 200 <= answer.status < 300


def _flag(key: str) -> Callable[[Answer], bool]:
    def read(answer: Answer) -> bool:
        if not _ok(answer):
            return False
        doc = _json(answer)
        return bool(doc.get(key, True)) if isinstance(doc, dict) else True

    return read


def _nothing(answer: Answer) -> None:
    return None


def _error_of(answer: Answer) -> ClientError:
    message = ""
    try:
        doc = orjson.loads(answer.body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            message = doc["error"]
    except orjson.JSONDecodeError:
        pass
    if not message:
        message = bytes(answer.body[:_MAX_ERROR_TEXT]).decode("utf-8", errors="replace").strip()
    if not message:
        message = httpx.codes.get_reason_phrase(answer.status) or f"HTTP {answer.status}"
    return ClientError(message, code_of_http(answer.status), answer.status)


def _infer_outputs(answer: Answer) -> dict[str, Array]:
    raw_length = answer.headers.get(_HEADER_LENGTH)
    body = memoryview(answer.body)
    if raw_length is None:
        doc, binary = orjson.loads(body), body[len(body) :]
    else:
        length = int(raw_length)
        if not 0 <= length <= len(body):
            raise ValueError(f"{_HEADER_LENGTH} {length} does not fit the {len(body)}-byte answer")
        doc, binary = orjson.loads(body[:length]), body[length:]
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise ValueError("the answer has no 'outputs' list")
    found: dict[str, Array] = {}
    offset = 0
    for item in doc["outputs"]:
        name = str(item["name"])
        dt, shape = parse_datatype(item["datatype"]), parse_shape(item["shape"])
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            found[name] = from_json_data(name, dt, shape, item.get("data"))
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise ValueError(f"output '{name}': binary_data_size {size!r} does not fit the answer")
        found[name] = from_raw("output", name, dt, shape, binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise ValueError(f"{len(binary) - offset} bytes follow the binary outputs")
    return found


def _arrays(answer: Answer) -> dict[str, Array]:
    doc = _json(answer)
    if not isinstance(doc, dict):
        raise ValueError("the answer is not a JSON object of outputs")
    return {str(k): np.asarray(v) for k, v in doc.items()}


def _dict(answer: Answer) -> dict[str, Any]:
    doc = _json(answer)
    if not isinstance(doc, dict):
        raise ValueError("the answer is not a JSON object")
    return doc


def _rows(answer: Answer) -> list[dict[str, Any]]:
    doc = _json(answer)
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise ValueError("the repository index is not a list of objects")
    return doc


# ----------------------------------------------------------------------------------- calls


def infer_call(
    name: str,
    inputs: Inputs,
    outputs: Sequence[str] | None,
    version: Version,
    binary: bool,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
    timeout: float | None,
) -> Call[dict[str, Array]]:
    if not inputs:
        raise ValueError("infer needs at least one input")
    header: dict[str, Any] = {}
    if request_id is not None:
        header["id"] = request_id
    entries: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for key, value in inputs.items():
        dt, arr = as_input(key, value)
        entry: dict[str, Any] = {"name": key, "datatype": dt.value, "shape": list(arr.shape)}
        if binary:
            raw = raw_input(key, dt, arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = to_json_data(key, dt, arr)
        entries.append(entry)
    header["inputs"] = entries
    params = plain(parameters)
    if outputs is not None:
        header["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    elif binary:
        params["binary_data_output"] = True
    if params:
        header["parameters"] = params
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    path = _model_path("/v2/models", name, version, "/infer")
    if not binary:
        return Call("POST", path, _infer_outputs, head, {"Content-Type": "application/json"}, timeout)
    headers = {_HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}
    return Call("POST", path, _infer_outputs, b"".join([head, *blobs]), headers, timeout)


def eval_call(name: str, inputs: Inputs, version: Version, timeout: float | None) -> Call[dict[str, Array]]:
    body = orjson.dumps({k: json_value(v) for k, v in inputs.items()}, default=json_default,
                        option=orjson.OPT_SERIALIZE_NUMPY)
    return Call("POST", _model_path("/models", name, version, "/eval"), _arrays, body,
                 {"Content-Type": "application/json"}, timeout)


def image_call(
    name: str, image: bytes, version: Version, media_type: str | None, timeout: float | None
) -> Call[dict[str, Array]]:
    if media_type is None:
        media_type = next((m for magic, m in _IMAGE_MAGIC if image.startswith(magic)), None)
        if media_type is None:
            raise ValueError("the image is neither PNG nor JPEG; pass media_type to send it anyway")
    return Call("POST", _model_path("/models", name, version, "/eval"), _arrays, bytes(image),
                 {"Content-Type": media_type}, timeout)


class Calls:
    """Every call of the HTTP API, as a :class:`Call`."""

    @staticmethod
    def live() -> Call[bool]:
        return Call("GET", "/v2/health/live", _flag("live"), accept=frozenset({503}))

    @staticmethod
    def ready() -> Call[bool]:
        return Call("GET", "/v2/health/ready", _flag("ready"), accept=frozenset({503}))

    @staticmethod
    def model_ready(name: str, version: Version) -> Call[bool]:
        return Call("GET", _model_path("/v2/models", name, version, "/ready"), _flag("ready"),
                     accept=frozenset({404, 503}))

    @staticmethod
    def server_metadata() -> Call[dict[str, Any]]:
        return Call("GET", "/v2", _dict)

    @staticmethod
    def metadata(name: str, version: Version) -> Call[dict[str, Any]]:
        return Call("GET", _model_path("/v2/models", name, version), _dict)

    @staticmethod
    def models() -> Call[list[dict[str, Any]]]:
        return Call("POST", "/v2/repository/index", _rows, b"{}", {"Content-Type": "application/json"})

    @staticmethod
    def load(name: str) -> Call[None]:
        return Call("POST", f"/v2/repository/models/{_seg(name)}/load", _nothing, b"{}",
                     {"Content-Type": "application/json"})

    @staticmethod
    def unload(name: str) -> Call[None]:
        return Call("POST", f"/v2/repository/models/{_seg(name)}/unload", _nothing, b"{}",
                     {"Content-Type": "application/json"})

    @staticmethod
    def describe(name: str, version: Version) -> Call[dict[str, Any]]:
        return Call("GET", _model_path("/models", name, version, "/describe"), _dict)


def finish(call: Call[T], answer: Answer) -> T:
    if not _ok(answer) and answer.status not in call.accept:
        raise _error_of(answer)
    try:
        return call.read(answer)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ClientError(f"the server's answer is malformed: {exc}", "INTERNAL", answer.status) from None
