"""The gRPC server: the inference service, health and reflection on one grpc.aio server.

It runs on the event loop of the HTTP server (started and stopped by the app's lifespan), so both
front ends share one :class:`InferenceService`, one model manager and one set of metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from mlport.errors import MlportError
from mlport.protocols.grpc.proto import inference_pb2, inference_pb2_grpc, tf_serving_pb2, tf_serving_pb2_grpc
from mlport.protocols.grpc.servicer import SERVICE_NAME, HealthServicer, InferenceServicer
from mlport.protocols.grpc.tfs_servicer import MODEL_SERVICE, PREDICTION_SERVICE, ModelServicer, PredictionServicer
from mlport.protocols.service import InferenceService
from mlport.protocols.tls import ServerTls

__all__ = ["GrpcServer"]

log = logging.getLogger(__name__)

#: Seconds between refreshes of the health statuses that clients watch.
HEALTH_REFRESH_S = 1.0


def _reflection_pool() -> Any:
    """The descriptor pool of the inference messages (their own, see scripts/gen_grpc.sh), with TF Serving's,
    the health and reflection protocols added so that reflection describes every service served."""
    pool = inference_pb2.DESCRIPTOR.pool
    tf_serving = tf_serving_pb2.DESCRIPTOR
    for file in (*tf_serving.dependencies, tf_serving, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.AddSerializedFile(file.serialized_pb)
    return pool


class GrpcServer:
    def __init__(
        self,
        service: InferenceService,
        *,
        host: str,
        port: int,
        strict_readiness: bool = False,
        server_version: str = "",
        reuse_port: bool = False,
        tls: ServerTls | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        self.port = port
        limit = service.limits.max_body_bytes
        self._server = grpc.aio.server(options=[
            # a request over the body limit is refused with RESOURCE_EXHAUSTED before it is decoded
            ("grpc.max_receive_message_length", limit),
            # answers are not limited, as on HTTP
            ("grpc.max_send_message_length", -1),
            # a port already taken is an error, not a second listener sharing it; the worker processes of
            # one server (--workers) share theirs on purpose
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ])
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(service, strict_readiness, server_version), self._server
        )
        # TF Serving's gRPC API beside it, on the same port
        tf_serving_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(service), self._server)
        tf_serving_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), self._server)
        self.health = HealthServicer(service, strict_readiness)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        served = [SERVICE_NAME, PREDICTION_SERVICE, MODEL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(served, self._server, pool=_reflection_pool())
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen and serve; returns the port (chosen by the system when ``port`` is 0)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        try:
            address = f"{host}:{self.port}"
            if self.tls is None:
                bound = int(self._server.add_insecure_port(address))
            else:
                bound = int(self._server.add_secure_port(address, self.tls.grpc_credentials()))
        except RuntimeError:
            bound = 0
        if not bound:
            raise MlportError(f"cannot listen for gRPC on {host}:{self.port}: the port is taken or the address "
                              "is not this machine's")
        self.port = bound
        await self._server.start()
        await self.health.refresh()
        self._refresher = asyncio.create_task(self._refresh_health(), name="mlport-grpc-health")
        log.info("gRPC (Open Inference Protocol, TF Serving)%s listening on %s:%d",
                 " over TLS" if self.tls is not None else "", host, bound)
        return bound

    async def _refresh_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_REFRESH_S)
            try:
                await self.health.refresh()
            except Exception:
                log.exception("gRPC health refresh failed")

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish for up to ``grace`` seconds, then cancel them."""
        await self.health.enter_graceful_shutdown()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self._server.stop(grace)
