"""gRPC clients of ``inference.GRPCInferenceService`` (the Open Inference Protocol over gRPC).

Tensors travel in ``raw_input_contents``; answers are read from ``raw_output_contents`` or, from
servers that send them, typed ``contents``. Messages are built and read by functions shared by
:class:`GrpcClient` and :class:`AsyncGrpcClient`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from mlport.client._errors import ClientError, http_of_code
from mlport.client._tls import ClientCert, PathLike, grpc_credentials, tls_hint
from mlport.client._wire import Array, as_input, parse_datatype, plain, raw_input
from mlport.core.types import DataType
from mlport.core.wire import from_contents, from_raw, set_parameter
from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.grpc.proto.inference_pb2_grpc import GRPCInferenceServiceStub

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "AsyncGrpcClient", "GrpcClient"]

T = TypeVar("T")
Inputs = Mapping[str, Any]
Version = str | int | None

#: Largest message sent or received (bytes), unless the client is given another limit.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# ---------------------------------------------------------------------------------- messages


def _set_parameters(target: Any, params: Mapping[str, Any]) -> None:
    for key, value in plain(params).items():
        if not set_parameter(target[key], value):
            raise ValueError(f"parameter '{key}': {type(value).__name__} is not a bool, int, float or str")


def _infer_request(
    name: str,
    inputs: Inputs,
    outputs: Sequence[str] | None,
    version: Version,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
) -> pb.ModelInferRequest:
    if not inputs:
        raise ValueError("infer needs at least one input")
    message = pb.ModelInferRequest(model_name=name, model_version=_version(version), id=request_id or "")
    for key, value in inputs.items():
        dt, arr = as_input(key, value)
        message.inputs.add(name=key, datatype=dt.value, shape=list(arr.shape))
        raw = raw_input(key, dt, arr)
        message.raw_input_contents.append(raw if isinstance(raw, bytes) else raw.tobytes())
    for out in outputs or ():
        message.outputs.add(name=out)
    _set_parameters(message.parameters, parameters or {})
    return message


def _infer_outputs(response: pb.ModelInferResponse) -> dict[str, Array]:
    raw = response.raw_output_contents
    if raw and len(raw) != len(response.outputs):
        raise ValueError(f"{len(raw)} raw_output_contents for {len(response.outputs)} outputs")
    found: dict[str, Array] = {}
    for i, out in enumerate(response.outputs):
        dt, shape = parse_datatype(out.datatype), tuple(int(d) for d in out.shape)
        if raw:
            # a copy the caller may write to (protobuf bytes are immutable)
            data = raw[i] if dt is DataType.BYTES else bytearray(raw[i])
            found[out.name] = from_raw("output", out.name, dt, shape, data)
        else:
            found[out.name] = from_contents("output", out.name, dt, shape, out.contents)
    return found


def _tensors(items: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]} for t in items]


def _metadata(response: pb.ModelMetadataResponse) -> dict[str, Any]:
    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": _tensors(response.inputs),
        "outputs": _tensors(response.outputs),
    }


def _server_metadata(response: pb.ServerMetadataResponse) -> dict[str, Any]:
    return {"name": response.name, "version": response.version, "extensions": list(response.extensions)}


def _rows(response: pb.RepositoryIndexResponse) -> list[dict[str, Any]]:
    rows = []
    for m in response.models:
        row = {"name": m.name, "version": m.version, "state": m.state}
        if m.reason:
            row["reason"] = m.reason
        rows.append(row)
    return rows


def _version(version: Version) -> str:
    return "" if version is None else str(version)


def _error(exc: grpc.RpcError) -> ClientError:
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    status = code_fn() if callable(code_fn) else None
    code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
    message = (details_fn() if callable(details_fn) else None) or str(exc)
    return ClientError(message + tls_hint(message, ""), code, http_of_code(code))


def _read(read: Callable[[Any], T], response: Any) -> T:
    try:
        return read(response)
    except (ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"the server's answer is malformed: {exc}", "INTERNAL", 200) from None


def _credentials(credentials: grpc.ChannelCredentials | None, tls: bool, ca: PathLike | None,
                 cert: ClientCert | None) -> grpc.ChannelCredentials | None:
    if credentials is not None:
        if tls or ca is not None or cert is not None:
            raise ValueError("give either credentials or tls/ca/cert, not both")
        return credentials
    if not tls:
        if ca is not None or cert is not None:
            raise ValueError("ca and cert are for a TLS channel: pass tls=True")
        return None
    return grpc_credentials(ca, cert)


class _GrpcBase:
    """What the sync and async clients share: their arguments, the channel's options and credentials."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Mapping[str, str] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        tls: bool = False,
        ca: PathLike | None = None,
        cert: ClientCert | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        for prefix in ("grpc://", "http://"):
            if target.startswith(prefix):
                target = target[len(prefix) :]
        self._target = target.rstrip("/")
        self._timeout = timeout
        self._metadata = tuple((k.lower(), v) for k, v in (metadata or {}).items())
        self._channel_options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            *options,
        ]
        self._credentials = _credentials(credentials, tls, ca, cert)
        self._open()

    def _open(self) -> None:
        """Make the channel now (the sync client) or leave it for the first call (the async one)."""

    @property
    def target(self) -> str:
        return self._target


class GrpcClient(_GrpcBase):
    """A synchronous client of ``inference.GRPCInferenceService`` (numpy in and out).

    ``target`` is ``host:port`` (mlport's gRPC port, 8081 by default). ``timeout`` bounds every call,
    in seconds; ``max_message_bytes`` bounds messages both ways; ``metadata`` goes with every call.
    ``tls=True`` makes a TLS channel that verifies the server against ``ca`` (a PEM file), else
    ``MLPORT_CA``, else the system's CAs, with ``cert`` (certificate, key) for mutual TLS; ``credentials``
    give grpc's own instead. Failures raise :class:`ClientError`.
    """

    def _open(self) -> None:
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self._target, options=self._channel_options)
        else:
            self._channel = grpc.secure_channel(self._target, self._credentials, options=self._channel_options)
        self._stub = GRPCInferenceServiceStub(self._channel)

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def live(self) -> bool:
        return bool(self._call("ServerLive", pb.ServerLiveRequest()).live)

    def ready(self) -> bool:
        return bool(self._call("ServerReady", pb.ServerReadyRequest()).ready)

    def model_ready(self, name: str, version: Version = None) -> bool:
        """True when the model (version) serves; False when it is unknown or not ready."""
        return bool(self._call("ModelReady", pb.ModelReadyRequest(name=name, version=_version(version))).ready)

    def server_metadata(self) -> dict[str, Any]:
        return _server_metadata(self._call("ServerMetadata", pb.ServerMetadataRequest()))

    def metadata(self, name: str, version: Version = None) -> dict[str, Any]:
        """OIP model metadata, as :meth:`HttpClient.metadata` gives it."""
        return _metadata(self._call("ModelMetadata", pb.ModelMetadataRequest(name=name, version=_version(version))))

    def models(self) -> list[dict[str, Any]]:
        """The repository index: one ``{"name", "version", "state", "reason"?}`` per model version."""
        return _rows(self._call("RepositoryIndex", pb.RepositoryIndexRequest()))

    def load(self, name: str) -> None:
        self._call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name))

    def unload(self, name: str) -> None:
        self._call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name))

    def infer(
        self,
        name: str,
        inputs: Inputs,
        outputs: Sequence[str] | None = None,
        version: Version = None,
        *,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Array]:
        """Run the model on named arrays (datatypes from their dtypes); the outputs by name."""
        request = _infer_request(name, inputs, outputs, version, request_id, parameters)
        return _read(_infer_outputs, self._call("ModelInfer", request, timeout))


class AsyncGrpcClient(_GrpcBase):
    """The asynchronous twin of :class:`GrpcClient` (grpc.aio; use it inside one event loop)."""

    _channel: Any = None
    _stub: Any = None

    async def __aenter__(self) -> AsyncGrpcClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    def _connect(self) -> Any:
        # grpc.aio channels belong to the event loop they are made in: made at the first call.
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self._target, options=self._channel_options)
            else:
                self._channel = grpc.aio.secure_channel(self._target, self._credentials,
                                                        options=self._channel_options)
            self._stub = GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        stub = self._connect()
        try:
            return await getattr(stub, method)(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def live(self) -> bool:
        return bool((await self._call("ServerLive", pb.ServerLiveRequest())).live)

    async def ready(self) -> bool:
        return bool((await self._call("ServerReady", pb.ServerReadyRequest())).ready)

    async def model_ready(self, name: str, version: Version = None) -> bool:
        request = pb.ModelReadyRequest(name=name, version=_version(version))
        return bool((await self._call("ModelReady", request)).ready)

    async def server_metadata(self) -> dict[str, Any]:
        return _server_metadata(await self._call("ServerMetadata", pb.ServerMetadataRequest()))

    async def metadata(self, name: str, version: Version = None) -> dict[str, Any]:
        request = pb.ModelMetadataRequest(name=name, version=_version(version))
        return _metadata(await self._call("ModelMetadata", request))

    async def models(self) -> list[dict[str, Any]]:
        return _rows(await self._call("RepositoryIndex", pb.RepositoryIndexRequest()))

    async def load(self, name: str) -> None:
        await self._call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name))

    async def unload(self, name: str) -> None:
        await self._call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name))

    async def infer(
        self,
        name: str,
        inputs: Inputs,
        outputs: Sequence[str] | None = None,
        version: Version = None,
        *,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Array]:
        request = _infer_request(name, inputs, outputs, version, request_id, parameters)
        return _read(_infer_outputs, await self._call("ModelInfer", request, timeout))
