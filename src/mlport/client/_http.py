"""HTTP clients: Open Inference Protocol v2 REST (JSON or the binary tensor extension) and the describe/eval API.

Each call is built as a :class:`_Call` (the request, and how to read its answer) by pure functions
shared by :class:`HttpClient` and :class:`AsyncHttpClient`, which only send it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from mlport.client._errors import ClientError, code_of_http
from mlport.client._tls import ClientCert, PathLike, http_verify, tls_hint
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

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "AsyncHttpClient", "HttpClient"]

T = TypeVar("T")
Inputs = Mapping[str, Any]
Version = str | int | None

#: Largest answer read (bytes); a larger one raises RESOURCE_EXHAUSTED without being read whole.
DEFAULT_MAX_RESPONSE_BYTES = 1 << 30
_HEADER_LENGTH = "Inference-Header-Content-Length"
_MAX_ERROR_TEXT = 2000
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


@dataclass(slots=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytearray


@dataclass(slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    read: Callable[[_Answer], T]
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


def _base_url(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


# ---------------------------------------------------------------------------------- answers


def _json(answer: _Answer) -> Any:
    return orjson.loads(answer.body)


def _ok(answer: _Answer) -> bool:
    return 200 <= answer.status < 300


def _flag(key: str) -> Callable[[_Answer], bool]:
    def read(answer: _Answer) -> bool:
        if not _ok(answer):
            return False
        doc = _json(answer)
        return bool(doc.get(key, True)) if isinstance(doc, dict) else True

    return read


def _nothing(answer: _Answer) -> None:
    return None


def _error_of(answer: _Answer) -> ClientError:
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


def _infer_outputs(answer: _Answer) -> dict[str, Array]:
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


def _arrays(answer: _Answer) -> dict[str, Array]:
    doc = _json(answer)
    if not isinstance(doc, dict):
        raise ValueError("the answer is not a JSON object of outputs")
    return {str(k): np.asarray(v) for k, v in doc.items()}


def _dict(answer: _Answer) -> dict[str, Any]:
    doc = _json(answer)
    if not isinstance(doc, dict):
        raise ValueError("the answer is not a JSON object")
    return doc


def _rows(answer: _Answer) -> list[dict[str, Any]]:
    doc = _json(answer)
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise ValueError("the repository index is not a list of objects")
    return doc


# ----------------------------------------------------------------------------------- calls


def _infer_call(
    name: str,
    inputs: Inputs,
    outputs: Sequence[str] | None,
    version: Version,
    binary: bool,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
    timeout: float | None,
) -> _Call[dict[str, Array]]:
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
        return _Call("POST", path, _infer_outputs, head, {"Content-Type": "application/json"}, timeout)
    headers = {_HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}
    return _Call("POST", path, _infer_outputs, b"".join([head, *blobs]), headers, timeout)


def _eval_call(name: str, inputs: Inputs, version: Version, timeout: float | None) -> _Call[dict[str, Array]]:
    body = orjson.dumps({k: json_value(v) for k, v in inputs.items()}, default=json_default,
                        option=orjson.OPT_SERIALIZE_NUMPY)
    return _Call("POST", _model_path("/models", name, version, "/eval"), _arrays, body,
                 {"Content-Type": "application/json"}, timeout)


def _image_call(
    name: str, image: bytes, version: Version, media_type: str | None, timeout: float | None
) -> _Call[dict[str, Array]]:
    if media_type is None:
        media_type = next((m for magic, m in _IMAGE_MAGIC if image.startswith(magic)), None)
        if media_type is None:
            raise ValueError("the image is neither PNG nor JPEG; pass media_type to send it anyway")
    return _Call("POST", _model_path("/models", name, version, "/eval"), _arrays, bytes(image),
                 {"Content-Type": media_type}, timeout)


class _Calls:
    """Every call of the HTTP API, as a :class:`_Call`."""

    @staticmethod
    def live() -> _Call[bool]:
        return _Call("GET", "/v2/health/live", _flag("live"), accept=frozenset({503}))

    @staticmethod
    def ready() -> _Call[bool]:
        return _Call("GET", "/v2/health/ready", _flag("ready"), accept=frozenset({503}))

    @staticmethod
    def model_ready(name: str, version: Version) -> _Call[bool]:
        return _Call("GET", _model_path("/v2/models", name, version, "/ready"), _flag("ready"),
                     accept=frozenset({404, 503}))

    @staticmethod
    def server_metadata() -> _Call[dict[str, Any]]:
        return _Call("GET", "/v2", _dict)

    @staticmethod
    def metadata(name: str, version: Version) -> _Call[dict[str, Any]]:
        return _Call("GET", _model_path("/v2/models", name, version), _dict)

    @staticmethod
    def models() -> _Call[list[dict[str, Any]]]:
        return _Call("POST", "/v2/repository/index", _rows, b"{}", {"Content-Type": "application/json"})

    @staticmethod
    def load(name: str) -> _Call[None]:
        return _Call("POST", f"/v2/repository/models/{_seg(name)}/load", _nothing, b"{}",
                     {"Content-Type": "application/json"})

    @staticmethod
    def unload(name: str) -> _Call[None]:
        return _Call("POST", f"/v2/repository/models/{_seg(name)}/unload", _nothing, b"{}",
                     {"Content-Type": "application/json"})

    @staticmethod
    def describe(name: str, version: Version) -> _Call[dict[str, Any]]:
        return _Call("GET", _model_path("/models", name, version, "/describe"), _dict)


# -------------------------------------------------------------------------------- transport


class _Body:
    """Collects an answer's bytes up to a limit."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self.limit = limit
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(response.status_code)
        self.data = bytearray()
        self.status = response.status_code

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            raise self._too_large(self.status)

    def _too_large(self, status: int) -> ClientError:
        return ClientError(f"the answer is larger than max_response_bytes ({self.limit})", "RESOURCE_EXHAUSTED",
                           status)


def _finish(call: _Call[T], answer: _Answer) -> T:
    if not _ok(answer) and answer.status not in call.accept:
        raise _error_of(answer)
    try:
        return call.read(answer)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ClientError(f"the server's answer is malformed: {exc}", "INTERNAL", answer.status) from None


def _transport_error(exc: httpx.HTTPError, url: str, timeout: float) -> ClientError:
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(f"no answer from {url} within {timeout:g} s", "DEADLINE_EXCEEDED", None)
    detail = str(exc) or type(exc).__name__
    return ClientError(f"cannot reach {url}: {detail}{tls_hint(_chain_text(exc), url)}", "UNAVAILABLE", None)


def _chain_text(exc: BaseException) -> str:
    """The messages of an exception and its causes (the TLS reason is often in a cause)."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 8:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " | ".join(parts)


class _HttpOptions:
    """What the sync and async clients share: the base URL, limits and defaults."""

    def __init__(self, url: str, timeout: float, binary: bool, max_response_bytes: int) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if max_response_bytes <= 0:
            raise ValueError("max_response_bytes must be positive")
        self.url = _base_url(url)
        self.timeout = timeout
        self.binary = binary
        self.max_response_bytes = max_response_bytes


class HttpClient:
    """A synchronous client of an mlport server over HTTP (numpy in and out).

    ``url`` is the server's base URL (``http://127.0.0.1:8080``; ``host:port`` means http).
    ``timeout`` bounds every call, in seconds (each call may pass its own); ``binary`` (default)
    sends and receives tensors with the binary tensor extension, ``False`` as JSON;
    ``headers`` go with every request (authorisation, say). Failures raise :class:`ClientError`.
    An ``https://`` server's certificate is verified against ``ca`` (a PEM file), else ``MLPORT_CA``, else
    the system's CAs; ``cert`` is a client certificate and its key, for mutual TLS.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        binary: bool = True,
        headers: Mapping[str, str] | None = None,
        verify: bool | ssl.SSLContext = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ca: PathLike | None = None,
        cert: ClientCert | None = None,
    ) -> None:
        self._opts = _HttpOptions(url, timeout, binary, max_response_bytes)
        self._http = httpx.Client(base_url=self._opts.url, timeout=timeout, headers=dict(headers or {}),
                                  verify=http_verify(verify, ca, cert))

    @property
    def url(self) -> str:
        return self._opts.url

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        timeout = call.timeout or self._opts.timeout
        try:
            with self._http.stream(call.method, call.path, content=call.body, headers=call.headers,
                                   timeout=timeout) as response:
                body = _Body(response, self._opts.max_response_bytes)
                chunks: Iterator[bytes] = response.iter_bytes()
                for chunk in chunks:
                    body.add(chunk)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._opts.url, timeout) from None
        return _finish(call, _Answer(response.status_code, response.headers, body.data))

    # -- health and metadata
    def live(self) -> bool:
        """True when the server process answers."""
        return self._run(_Calls.live())

    def ready(self) -> bool:
        """True when the server is ready for requests."""
        return self._run(_Calls.ready())

    def model_ready(self, name: str, version: Version = None) -> bool:
        """True when the model (version) serves; False when it is unknown or not ready."""
        return self._run(_Calls.model_ready(name, version))

    def server_metadata(self) -> dict[str, Any]:
        """``{"name", "version", "extensions"}``."""
        return self._run(_Calls.server_metadata())

    def metadata(self, name: str, version: Version = None) -> dict[str, Any]:
        """OIP model metadata: ``{"name", "versions", "platform", "inputs", "outputs"}``."""
        return self._run(_Calls.metadata(name, version))

    def models(self) -> list[dict[str, Any]]:
        """The repository index: one ``{"name", "version", "state", "reason"?}`` per model version."""
        return self._run(_Calls.models())

    def load(self, name: str) -> None:
        """Load (or reload) a model from the server's repository."""
        self._run(_Calls.load(name))

    def unload(self, name: str) -> None:
        self._run(_Calls.unload(name))

    # -- inference
    def infer(
        self,
        name: str,
        inputs: Inputs,
        outputs: Sequence[str] | None = None,
        version: Version = None,
        *,
        binary: bool | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Array]:
        """Run the model on named arrays (datatypes from their dtypes); the outputs by name.

        BYTES outputs come back as object arrays of ``bytes``.
        """
        use_binary = self._opts.binary if binary is None else binary
        return self._run(_infer_call(name, inputs, outputs, version, use_binary, request_id, parameters, timeout))

    def describe(self, name: str, version: Version = None) -> dict[str, Any]:
        """The describe API: ``{"inputs": [{"name", "type", "shape"}], "outputs": [...]}``."""
        return self._run(_Calls.describe(name, version))

    def eval(self, name: str, inputs: Inputs, version: Version = None, *, timeout: float | None = None
             ) -> dict[str, Array]:
        """The eval API: a batch, or one instance (answered without the batch axis); values as JSON gives them."""
        return self._run(_eval_call(name, inputs, version, timeout))

    def eval_image(self, name: str, image: bytes, version: Version = None, *, media_type: str | None = None,
                   timeout: float | None = None) -> dict[str, Array]:
        """Send one PNG or JPEG image to a model with one image-shaped input."""
        return self._run(_image_call(name, image, version, media_type, timeout))


class AsyncHttpClient:
    """The asynchronous twin of :class:`HttpClient` (same arguments; every call is awaited)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        binary: bool = True,
        headers: Mapping[str, str] | None = None,
        verify: bool | ssl.SSLContext = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ca: PathLike | None = None,
        cert: ClientCert | None = None,
    ) -> None:
        self._opts = _HttpOptions(url, timeout, binary, max_response_bytes)
        self._http = httpx.AsyncClient(base_url=self._opts.url, timeout=timeout, headers=dict(headers or {}),
                                       verify=http_verify(verify, ca, cert))

    @property
    def url(self) -> str:
        return self._opts.url

    async def __aenter__(self) -> AsyncHttpClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        timeout = call.timeout or self._opts.timeout
        try:
            async with self._http.stream(call.method, call.path, content=call.body, headers=call.headers,
                                         timeout=timeout) as response:
                body = _Body(response, self._opts.max_response_bytes)
                chunks: AsyncIterator[bytes] = response.aiter_bytes()
                async for chunk in chunks:
                    body.add(chunk)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._opts.url, timeout) from None
        return _finish(call, _Answer(response.status_code, response.headers, body.data))

    async def live(self) -> bool:
        return await self._run(_Calls.live())

    async def ready(self) -> bool:
        return await self._run(_Calls.ready())

    async def model_ready(self, name: str, version: Version = None) -> bool:
        return await self._run(_Calls.model_ready(name, version))

    async def server_metadata(self) -> dict[str, Any]:
        return await self._run(_Calls.server_metadata())

    async def metadata(self, name: str, version: Version = None) -> dict[str, Any]:
        return await self._run(_Calls.metadata(name, version))

    async def models(self) -> list[dict[str, Any]]:
        return await self._run(_Calls.models())

    async def load(self, name: str) -> None:
        await self._run(_Calls.load(name))

    async def unload(self, name: str) -> None:
        await self._run(_Calls.unload(name))

    async def infer(
        self,
        name: str,
        inputs: Inputs,
        outputs: Sequence[str] | None = None,
        version: Version = None,
        *,
        binary: bool | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Array]:
        use_binary = self._opts.binary if binary is None else binary
        return await self._run(_infer_call(name, inputs, outputs, version, use_binary, request_id, parameters,
                                           timeout))

    async def describe(self, name: str, version: Version = None) -> dict[str, Any]:
        return await self._run(_Calls.describe(name, version))

    async def eval(self, name: str, inputs: Inputs, version: Version = None, *, timeout: float | None = None
                   ) -> dict[str, Array]:
        return await self._run(_eval_call(name, inputs, version, timeout))

    async def eval_image(self, name: str, image: bytes, version: Version = None, *, media_type: str | None = None,
                         timeout: float | None = None) -> dict[str, Array]:
        return await self._run(_image_call(name, image, version, media_type, timeout))
