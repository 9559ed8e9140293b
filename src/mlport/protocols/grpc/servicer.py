"""The ``inference.GRPCInferenceService`` servicer (grpc.aio) and the standard health service.

Every handler is the REST route's twin: the same manager calls for readiness, metadata and the
repository, and :meth:`InferenceService.call` for inference, so both protocols share readiness,
limits and metrics. Errors map once, through :data:`GRPC_STATUS`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import orjson
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from mlport.core.inference import InferenceRequest
from mlport.errors import ErrorCode, InvalidInput, MlportError, RetryLater
from mlport.protocols.extensions import EXTENSIONS, model_config, model_statistics
from mlport.protocols.grpc.codec import decode_infer_request, encode_infer_response, to_parameters
from mlport.protocols.grpc.errors import GRPC_STATUS
from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.service import InferenceService
from mlport.runtime.manager import LoadedVersion, VersionState

__all__ = ["SERVICE_NAME", "HealthServicer", "InferenceServicer", "retry_trailer"]

log = logging.getLogger(__name__)

SERVER_NAME = "mlport"
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def _rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn an :class:`MlportError` into its gRPC status; never send a traceback."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except MlportError as exc:
            status = GRPC_STATUS[exc.code]
            level = logging.WARNING if exc.code in _SERVER_FAULTS else logging.INFO
            if getattr(exc, "quiet", False):  # overload refusals: counted by the metrics, not a line each
                level = logging.DEBUG
            log.log(level, "gRPC %s failed (%s): %s", method.__name__, status.name, exc.message)
            if isinstance(exc, RetryLater):
                await context.abort(status, exc.message, retry_trailer(exc.retry_after_s))
            await context.abort(status, exc.message)
        except Exception as exc:
            log.error("gRPC %s failed", method.__name__, exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: abort raises")

    return wrapper


def _explaining(request: pb.ModelInferRequest) -> bool:
    """Whether a ModelInfer request asks for an explanation (parameter ``explain``, a true bool)."""
    found = request.parameters.get("explain") if "explain" in request.parameters else None
    return found is not None and found.WhichOneof("parameter_choice") == "bool_param" and found.bool_param


def retry_trailer(seconds: float) -> tuple[tuple[str, str], ...]:
    """When to try again, as trailing metadata: ``retry-after`` (whole seconds, as HTTP's header) and gRPC's
    own retry pushback (milliseconds), which gRPC clients with a retry policy honour."""
    return (("retry-after", str(max(1, math.ceil(seconds)))), ("grpc-retry-pushback-ms", str(round(seconds * 1000))))


_SERVER_FAULTS = {ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED}


class InferenceServicer:
    """Handlers for every RPC of ``inference.GRPCInferenceService``."""

    def __init__(self, service: InferenceService, strict_readiness: bool, server_version: str) -> None:
        self._service = service
        self._manager = service.manager
        self._strict = strict_readiness
        self._version = server_version

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._manager.ready(self._strict))

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self._manager.serving_version(request.name, request.version or None)
        except MlportError as exc:
            if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE):
                return pb.ModelReadyResponse(ready=False)
            raise
        return pb.ModelReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=EXTENSIONS)

    @_rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        name = request.name
        known = await self._manager.describe(name, request.version or None)
        versions = self._manager.status(name).requestable
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=name,
            versions=versions,
            platform=known.platform,
            inputs=[tensor(**s.oip()) for s in known.signature.inputs],
            outputs=[tensor(**s.oip()) for s in known.signature.outputs],
        )

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        limits = self._service.limits
        if _explaining(request):
            return await self._explain(request)
        remaining = context.time_remaining()  # the client's deadline, if it gave one
        async with self._service.call(request.model_name, request.model_version or None, "grpc",
                                      timeout_s=remaining) as call:
            inference = decode_infer_request(request, limits)
            response = await call.infer(inference)
            return encode_infer_response(response)

    async def _explain(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """A ModelInfer request with the parameter ``explain: true``: its explanation (the JSON the REST route
        answers) in the response parameter ``explanation``, and no output tensors."""
        limits = self._service.limits

        def decode(lv: LoadedVersion) -> InferenceRequest:
            inference = decode_infer_request(request, limits)
            inference.parameters.pop("explain", None)
            return inference

        answer = await self._service.explain.explain(request.model_name, request.model_version or None, decode)
        response = pb.ModelInferResponse(model_name=answer.model, model_version=answer.version, id=request.id)
        to_parameters(response.parameters, {"explanation": orjson.dumps(answer.to_json()).decode()})
        return response

    @_rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=await model_config(self._manager, request.name, request.version or None))

    @_rpc
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        return model_statistics(self._service, request.name or None, request.version or None)

    @_rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        answer = pb.RepositoryIndexResponse()
        for status in self._manager.all_status():
            for v in status.versions:
                if request.ready and v.state is not VersionState.READY:
                    continue
                answer.models.add(name=status.name, version=str(v.version), state=v.state.value, reason=v.reason)
        return answer

    @_rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        unsupported = sorted(k for k in request.parameters if k == "config" or k.startswith("file:"))
        if unsupported:
            raise InvalidInput(f"loading with {', '.join(repr(k) for k in unsupported)} is not supported: "
                               "mlport loads models from its repository only")
        await self._manager.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        # 'unload_dependents' (sent by Triton's client) has no meaning here: models have no dependents.
        await self._service.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()


ServingStatus = int


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    """``grpc.health.v1.Health``: the server (``""`` or the inference service name) is SERVING once
    the manager is ready; a model's name asks after that model."""

    def __init__(self, service: InferenceService, strict_readiness: bool) -> None:
        super().__init__()
        self._manager = service.manager
        self._strict = strict_readiness
        self._watched: set[str] = {"", SERVICE_NAME}

    def current(self, service: str) -> ServingStatus | None:
        """The status of ``service`` now, or ``None`` for a name this server does not know."""
        if service in ("", SERVICE_NAME):
            ready = self._manager.ready(self._strict)
        elif service in self._manager.names():
            ready = self._manager.status(service).ready
        else:
            return None
        return int(health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def refresh(self) -> None:
        """Bring the statuses that clients watch up to date (called periodically)."""
        for service in list(self._watched):
            status = self.current(service)
            await self.set(service, status if status is not None else health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)

    async def Check(self, request: Any, context: Any) -> Any:
        status = self.current(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        await self.set(request.service, status)
        return await super().Check(request, context)

    async def Watch(self, request: Any, context: Any) -> None:
        if self.current(request.service) is not None:
            self._watched.add(request.service)
        await self.refresh()
        await super().Watch(request, context)
