"""The hub's gRPC gateway: the Open Inference Protocol's ``inference.GRPCInferenceService`` on the hub's own
gRPC port (``mlport hub --grpc-port``), forwarded to the deployments' replicas over their loopback gRPC ports.

``ModelInfer``, ``ModelMetadata`` and ``ModelReady`` go to the deployment named by the request's model name (or by
an ``x-mlport-deployment`` metadata entry; the model name may then also be the deployment's registry model, and is
replaced by the deployment's name, under which its replicas serve).  The rules are the HTTP gateway's, with its
pieces: the ``authorization: Bearer`` token through :class:`mlport.hub.tokencache.TokenCache` and the ``predict``
right on the deployment; the version by the deployment's strategy (:meth:`mlport.deploy.gateway.Gateway.route`;
a shadow's candidate gets no copy of gRPC requests); the least-loaded ready replica
(:meth:`~mlport.deploy.gateway.Gateway.pick`), and another one only when the connection failed before the call was
sent.  Requests are passed as their bytes (never decoded); only ``x-request-id`` goes on with them (never the
token), with the client's deadline (at most the gateway's timeout).  The answer's trailing metadata names
``x-mlport-deployment`` and ``x-mlport-version``.  ``ServerLive`` and ``ServerReady`` answer for the hub itself;
the other methods of the service (repository, statistics, streaming) are UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from mlport.auth import Action, authorize
from mlport.deploy.admission_gate import TIMEOUT_HEADER, Ticket, retry_after_header
from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.endpoint import Endpoint
from mlport.errors import ErrorCode, MlportError, ModelNotReady
from mlport.hub.grpcwire import model_name, with_model_name
from mlport.hub.service import Hub
from mlport.hub.tokencache import TokenCache
from mlport.protocols.grpc.errors import GRPC_STATUS
from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.tls import server_tls

__all__ = ["GRACE_S", "GatewayGRPC", "start_grpc_gateway"]

log = logging.getLogger("mlport.hub")

SERVICE = "inference.GRPCInferenceService"
FORWARDED = ("ModelInfer", "ModelMetadata", "ModelReady")
#: Metadata sent on to replicas (nothing else is: no authorization).
FORWARD_METADATA = frozenset({"x-request-id"})
#: Trailing metadata of a replica's error passed back (an overloaded replica's back-off hints).
RETURN_METADATA = frozenset({"retry-after", "grpc-retry-pushback-ms"})
#: Longest wait for a replica's channel to connect, seconds.
CONNECT_S = 5.0
#: How long a call's UNAVAILABLE error waits for its channel to say the connection was lost, seconds.
DROP_WAIT_S = 0.1
#: Seconds between two passes closing the channels of replicas that are gone.
SWEEP_S = 2.0
#: How long calls in flight may finish when the hub stops, seconds.
GRACE_S = 10.0
#: Longest answer passed back, bytes.
MAX_ANSWER_BYTES = 256 * 1024**2

#: ``count(deployment or "-", version or "", status, started)``: the gateway's metrics (the hub's app).
Count = Callable[[str, str, str, float], None]


class _Channels:
    """One ``grpc.aio`` channel per replica gRPC address, reused by every request; a channel whose replica is
    gone (not listed by the controller) and that carries no call is closed by :meth:`sweep`."""

    def __init__(self, credentials: grpc.ChannelCredentials | None) -> None:
        self._credentials = credentials
        self._channels: dict[str, tuple[grpc.aio.Channel, dict[str, Any]]] = {}
        self._busy: dict[str, int] = {}

    def call(self, target: str, method: str) -> Any:
        """The unary call object of ``method`` on the channel to ``target`` (opened on first use)."""
        entry = self._channels.get(target)
        if entry is None:
            # no retry policy: gRPC's own transparent retry only resends a call that never left this process
            options = [("grpc.max_receive_message_length", MAX_ANSWER_BYTES), ("grpc.max_send_message_length", -1)]
            channel = (grpc.aio.insecure_channel(target, options=options) if self._credentials is None
                       else grpc.aio.secure_channel(target, self._credentials, options=options))
            entry = self._channels[target] = (channel, {})
        calls = entry[1]
        if method not in calls:
            calls[method] = entry[0].unary_unary(f"/{SERVICE}/{method}")
        return calls[method]

    def channel(self, target: str) -> grpc.aio.Channel:
        return self._channels[target][0]

    @contextlib.contextmanager
    def using(self, target: str) -> Iterator[None]:
        self._busy[target] = self._busy.get(target, 0) + 1
        try:
            yield
        finally:
            self._busy[target] -= 1

    async def sweep(self, live: set[str]) -> None:
        for target in [t for t in self._channels if t not in live and not self._busy.get(t)]:
            channel, _ = self._channels.pop(target)
            self._busy.pop(target, None)
            await channel.close()

    async def aclose(self) -> None:
        channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            await channel.close()

    def __len__(self) -> int:
        return len(self._channels)


async def _connected(channel: grpc.aio.Channel, timeout_s: float) -> bool:
    """Whether the channel is (or gets, within ``timeout_s``) connected; False at once on a failed connection."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout_s
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        left = until - loop.time()
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE or state is grpc.ChannelConnectivity.SHUTDOWN \
                or left <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), left)
        except TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True


async def _dropped(exc: grpc.aio.AioRpcError, channel: grpc.aio.Channel) -> bool:
    """Whether a failed call lost its connection before any answer: UNAVAILABLE, with the channel no longer
    connected (or leaving that state within :data:`DROP_WAIT_S`, as the transport may tell the channel a moment
    after the call).  A replica's own UNAVAILABLE answer (not ready, overloaded) leaves its channel connected."""
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    if channel.get_state(try_to_connect=False) is not grpc.ChannelConnectivity.READY:
        return True
    try:
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), DROP_WAIT_S)
    except TimeoutError:
        return False
    return True


class GatewayGRPC:
    """The gRPC server of the hub's gateway (see the module's description): :meth:`start`, then :meth:`stop`."""

    def __init__(self, hub: Hub, count: Count, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.hub = hub
        self.tokens = TokenCache(hub.tokens, hub.users)
        self._count = count
        self.channels = _Channels(credentials)
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, server_credentials: grpc.ServerCredentials | None = None) -> int:
        """Listen on ``host:port`` (0: a free port) and serve; returns the port."""
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", self.hub.gateway.max_body_bytes),
                                          ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
        handlers: dict[str, grpc.RpcMethodHandler] = {m: grpc.unary_unary_rpc_method_handler(self._forwarder(m))
                                                      for m in FORWARDED}
        handlers["ServerLive"] = grpc.unary_unary_rpc_method_handler(
            self._live, request_deserializer=pb.ServerLiveRequest.FromString,
            response_serializer=pb.ServerLiveResponse.SerializeToString)
        handlers["ServerReady"] = grpc.unary_unary_rpc_method_handler(
            self._ready, request_deserializer=pb.ServerReadyRequest.FromString,
            response_serializer=pb.ServerReadyResponse.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        try:
            bound = int(server.add_insecure_port(address) if server_credentials is None
                        else server.add_secure_port(address, server_credentials))
        except RuntimeError:
            bound = 0
        if not bound:
            raise MlportError(f"cannot listen for gRPC on {address}: the port is taken or the address is not "
                              "this machine's")
        await server.start()
        self._server = server
        self._sweeper = asyncio.create_task(self._sweep_often(), name="mlport-hub-grpc-channels")
        log.info("gRPC gateway%s listening on %s", " over TLS" if server_credentials else "", address)
        return bound

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let running ones finish for up to ``grace_s`` seconds, then close the channels."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.stop(grace_s)
        await self.channels.aclose()

    # -- the hub itself ------------------------------------------------------------------------------------

    async def _live(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def _ready(self, request: pb.ServerReadyRequest,
                     context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    # -- forwarding ----------------------------------------------------------------------------------------

    def _forwarder(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._answer(method, request, context)
        return forward

    async def _answer(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        name, version, status = "-", "", grpc.StatusCode.OK
        trailing: tuple[tuple[str, str], ...] = ()
        metadata = {m.key: m.value for m in context.invocation_metadata() or () if isinstance(m.value, str)}
        try:
            model = model_name(request)
            name = deployment = metadata.get("x-mlport-deployment") or model
            authorization = metadata.get("authorization")
            principal = self.tokens.principal(authorization.encode("latin-1") if authorization else None)
            authorize(principal, Action.PREDICT, deployment=deployment)
            request, policy = self._named(request, model, deployment)
            chosen = self.hub.gateway.route(deployment, metadata.get)
            version = str(chosen)
            trailing = (("x-mlport-deployment", deployment), ("x-mlport-version", version))
            context.set_trailing_metadata(trailing)
            forwarded = tuple((k, v) for k, v in metadata.items() if k in FORWARD_METADATA)
            if not policy.gated:
                return await self._forward(method, deployment, chosen, request, forwarded, context)
            ticket = await self._admit(deployment, chosen, policy, context)
            try:
                return await self._forward(method, deployment, chosen, request, forwarded, context)
            finally:
                ticket.leave()
        except MlportError as exc:
            status = GRPC_STATUS.get(exc.code, grpc.StatusCode.INTERNAL)
            retry = retry_after_header(exc)
            extra = (("retry-after", retry.decode("ascii")),) if retry is not None else ()
            await context.abort(status, exc.message, (*trailing, *extra))
        except grpc.aio.AioRpcError as exc:
            status = exc.code()
            kept = tuple((m.key, m.value) for m in exc.trailing_metadata() or () if m.key in RETURN_METADATA)
            await context.abort(status, exc.details() or "", (*trailing, *kept))
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            status = grpc.StatusCode.INTERNAL
            log.exception("gRPC gateway request %s to %r failed", method, name)
            await context.abort(status, "internal error in the gateway", trailing)
        finally:
            # only deployments that exist are labels (as for HTTP): unknown names must not grow the label set
            if not any(d.name == name for d in self.hub.deployments.deployments()):
                name = "-"
            self._count(name, version, status.name, started)
        raise AssertionError("unreachable")  # abort() raises

    def _named(self, request: bytes, model: str, deployment: str) -> tuple[bytes, ScalePolicy]:
        """The request as sent on to ``deployment``'s replicas, and the deployment's policy (NOT_FOUND when there
        is no such deployment)."""
        record = next((d for d in self.hub.deployments.deployments() if d.name == deployment), None)
        if record is None:
            raise MlportError(f"deployment {deployment!r} not found", ErrorCode.NOT_FOUND)
        if model != deployment and model == record.model:
            return with_model_name(request, deployment), record.policy
        return request, record.policy

    async def _admit(self, deployment: str, version: int, policy: ScalePolicy,
                     context: grpc.aio.ServicerContext) -> Ticket:
        """A slot in the deployment's queue (:mod:`mlport.deploy.admission_gate`, as for HTTP requests), which
        the call's deadline bounds."""
        remaining = context.time_remaining()
        headers = [] if remaining is None else [(TIMEOUT_HEADER, f"{max(remaining, 0.001):.3f}".encode("ascii"))]

        def ready() -> int:
            replicas = self.hub.controller.replicas(deployment, version)
            return len(replicas.endpoints()) if replicas is not None else 0

        return await self.hub.gateway.admission.admit(deployment, version, policy, ready, "", headers, b"", None)

    async def _forward(self, method: str, deployment: str, version: int, request: bytes,
                       metadata: tuple[tuple[str, str], ...], context: grpc.aio.ServicerContext) -> bytes:
        gateway = self.hub.gateway
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        deadline = loop.time() + (gateway.timeout_s if remaining is None else min(remaining, gateway.timeout_s))
        failed: set[str] = set()
        for _ in range(gateway.retries + 1):
            endpoint = await gateway.pick(deployment, version, failed, deadline)
            target = endpoint.grpc_target if isinstance(endpoint, Endpoint) else ""
            if not target:
                raise ModelNotReady(f"the replica of deployment '{deployment}' version {version} opens no gRPC port")
            call = self.channels.call(target, method)
            with endpoint.track(), self.channels.using(target):
                left = deadline - loop.time()
                if not await _connected(self.channels.channel(target), min(CONNECT_S, max(left, 0.0))):
                    failed.add(endpoint.url)
                    gateway.connection_failed(endpoint.url)
                    log.info("deployment %r version %s: gRPC connection to %s failed", deployment, version, target)
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    answer: bytes = await call(request, timeout=left, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    if not await _dropped(exc, self.channels.channel(target)):
                        raise
                    failed.add(endpoint.url)
                    gateway.connection_failed(endpoint.url)
                    log.info("deployment %r version %s: gRPC connection to %s lost before an answer (%s)",
                             deployment, version, target, exc.details())
                    continue
                return answer
        if loop.time() >= deadline:
            raise MlportError(f"deployment '{deployment}' version {version} did not answer in time",
                              ErrorCode.DEADLINE_EXCEEDED)
        raise ModelNotReady(f"no replica of deployment '{deployment}' version {version} could be reached over gRPC "
                            f"({gateway.retries + 1} attempts)")

    # -- channels of replicas that are gone ------------------------------------------------------------------

    def _live_targets(self) -> set[str]:
        live: set[str] = set()
        for record in self.hub.deployments.deployments():
            for version in (record.target.primary, record.target.candidate):
                replicas = self.hub.controller.replicas(record.name, version) if version is not None else None
                for endpoint in replicas.endpoints() if replicas is not None else ():
                    if isinstance(endpoint, Endpoint) and endpoint.grpc_target:
                        live.add(endpoint.grpc_target)
        return live

    async def _sweep_often(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.channels.sweep(self._live_targets())
            except Exception:
                log.exception("closing the gRPC channels of replicas that are gone failed")


async def start_grpc_gateway(hub: Hub, count: Count) -> GatewayGRPC | None:
    """The hub's gRPC gateway listening on ``--grpc-port`` (None when that is unset).  With the hub's TLS on, its
    port serves TLS with the hub's certificate, and the replicas' gRPC ports are trusted with that certificate."""
    settings = hub.settings
    if settings.grpc_port is None:
        return None
    tls = server_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    channel_credentials = None
    if tls is not None:
        channel_credentials = grpc.ssl_channel_credentials(root_certificates=tls.cert.read_bytes())
    gateway = GatewayGRPC(hub, count, channel_credentials)
    port = await gateway.start(settings.host, settings.grpc_port,
                               tls.grpc_credentials() if tls is not None else None)
    print(f"gRPC gateway on {settings.host}:{port}", flush=True)
    return gateway
