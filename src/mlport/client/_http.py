"""HTTP clients: Open Inference Protocol v2 REST (JSON or the binary tensor extension) and the describe/eval API.

Each call is built as a :class:`Call` (the request, and how to read its answer) by pure functions
shared by :class:`HttpClient` and :class:`AsyncHttpClient`, which only send it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx

from mlport.client._calls import (
    Answer,
    Call,
    Calls,
    Inputs,
    Version,
    base_url,
    eval_call,
    finish,
    image_call,
    infer_call,
)
from mlport.client._errors import ClientError
from mlport.client._tls import ClientCert, PathLike, http_verify, tls_hint
from mlport.client._wire import Array

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "AsyncHttpClient", "HttpClient"]

T = TypeVar("T")
C = TypeVar("C", httpx.Client, httpx.AsyncClient)

#: Largest answer read (bytes); a larger one raises RESOURCE_EXHAUSTED without being read whole.
DEFAULT_MAX_RESPONSE_BYTES = 1 << 30


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


class _HttpBase(Generic[C]):
    """What the sync and async clients share: their arguments, the base URL, limits and defaults."""

    _transport: type[C]

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
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if max_response_bytes <= 0:
            raise ValueError("max_response_bytes must be positive")
        self._url = base_url(url)
        self._timeout = timeout
        self._binary = binary
        self._max_response_bytes = max_response_bytes
        self._http: C = self._transport(base_url=self._url, timeout=timeout, headers=dict(headers or {}),
                                        verify=http_verify(verify, ca, cert))

    @property
    def url(self) -> str:
        return self._url


class HttpClient(_HttpBase[httpx.Client]):
    """A synchronous client of an mlport server over HTTP (numpy in and out).

    ``url`` is the server's base URL (``http://127.0.0.1:8080``; ``host:port`` means http).
    ``timeout`` bounds every call, in seconds (each call may pass its own); ``binary`` (default)
    sends and receives tensors with the binary tensor extension, ``False`` as JSON;
    ``headers`` go with every request (authorisation, say). Failures raise :class:`ClientError`.
    An ``https://`` server's certificate is verified against ``ca`` (a PEM file), else ``MLPORT_CA``, else
    the system's CAs; ``cert`` is a client certificate and its key, for mutual TLS.
    """

    _transport = httpx.Client

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        timeout = call.timeout or self._timeout
        try:
            with self._http.stream(call.method, call.path, content=call.body, headers=call.headers,
                                   timeout=timeout) as response:
                body = _Body(response, self._max_response_bytes)
                chunks: Iterator[bytes] = response.iter_bytes()
                for chunk in chunks:
                    body.add(chunk)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._url, timeout) from None
        return finish(call, Answer(response.status_code, response.headers, body.data))

    # -- health and metadata
    def live(self) -> bool:
        """True when the server process answers."""
        return self._run(Calls.live())

    def ready(self) -> bool:
        """True when the server is ready for requests."""
        return self._run(Calls.ready())

    def model_ready(self, name: str, version: Version = None) -> bool:
        """True when the model (version) serves; False when it is unknown or not ready."""
        return self._run(Calls.model_ready(name, version))

    def server_metadata(self) -> dict[str, Any]:
        """``{"name", "version", "extensions"}``."""
        return self._run(Calls.server_metadata())

    def metadata(self, name: str, version: Version = None) -> dict[str, Any]:
        """OIP model metadata: ``{"name", "versions", "platform", "inputs", "outputs"}``."""
        return self._run(Calls.metadata(name, version))

    def models(self) -> list[dict[str, Any]]:
        """The repository index: one ``{"name", "version", "state", "reason"?}`` per model version."""
        return self._run(Calls.models())

    def load(self, name: str) -> None:
        """Load (or reload) a model from the server's repository."""
        self._run(Calls.load(name))

    def unload(self, name: str) -> None:
        self._run(Calls.unload(name))

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
        use_binary = self._binary if binary is None else binary
        return self._run(infer_call(name, inputs, outputs, version, use_binary, request_id, parameters, timeout))

    def describe(self, name: str, version: Version = None) -> dict[str, Any]:
        """The describe API: ``{"inputs": [{"name", "type", "shape"}], "outputs": [...]}``."""
        return self._run(Calls.describe(name, version))

    def eval(self, name: str, inputs: Inputs, version: Version = None, *, timeout: float | None = None
             ) -> dict[str, Array]:
        """The eval API: a batch, or one instance (answered without the batch axis); values as JSON gives them."""
        return self._run(eval_call(name, inputs, version, timeout))

    def eval_image(self, name: str, image: bytes, version: Version = None, *, media_type: str | None = None,
                   timeout: float | None = None) -> dict[str, Array]:
        """Send one PNG or JPEG image to a model with one image-shaped input."""
        return self._run(image_call(name, image, version, media_type, timeout))


class AsyncHttpClient(_HttpBase[httpx.AsyncClient]):
    """The asynchronous twin of :class:`HttpClient` (same arguments; every call is awaited)."""

    _transport = httpx.AsyncClient

    async def __aenter__(self) -> AsyncHttpClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        timeout = call.timeout or self._timeout
        try:
            async with self._http.stream(call.method, call.path, content=call.body, headers=call.headers,
                                         timeout=timeout) as response:
                body = _Body(response, self._max_response_bytes)
                chunks: AsyncIterator[bytes] = response.aiter_bytes()
                async for chunk in chunks:
                    body.add(chunk)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._url, timeout) from None
        return finish(call, Answer(response.status_code, response.headers, body.data))

    async def live(self) -> bool:
        return await self._run(Calls.live())

    async def ready(self) -> bool:
        return await self._run(Calls.ready())

    async def model_ready(self, name: str, version: Version = None) -> bool:
        return await self._run(Calls.model_ready(name, version))

    async def server_metadata(self) -> dict[str, Any]:
        return await self._run(Calls.server_metadata())

    async def metadata(self, name: str, version: Version = None) -> dict[str, Any]:
        return await self._run(Calls.metadata(name, version))

    async def models(self) -> list[dict[str, Any]]:
        return await self._run(Calls.models())

    async def load(self, name: str) -> None:
        await self._run(Calls.load(name))

    async def unload(self, name: str) -> None:
        await self._run(Calls.unload(name))

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
        use_binary = self._binary if binary is None else binary
        return await self._run(infer_call(name, inputs, outputs, version, use_binary, request_id, parameters,
                                           timeout))

    async def describe(self, name: str, version: Version = None) -> dict[str, Any]:
        return await self._run(Calls.describe(name, version))

    async def eval(self, name: str, inputs: Inputs, version: Version = None, *, timeout: float | None = None
                   ) -> dict[str, Array]:
        return await self._run(eval_call(name, inputs, version, timeout))

    async def eval_image(self, name: str, image: bytes, version: Version = None, *, media_type: str | None = None,
                         timeout: float | None = None) -> dict[str, Array]:
        return await self._run(image_call(name, image, version, media_type, timeout))
