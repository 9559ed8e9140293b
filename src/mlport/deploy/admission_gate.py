"""The gateway's admission of a deployment's requests: a bounded number forwarded at once, a bounded queue,
deadlines and priority, before a replica is chosen.

A deployment whose scale policy sets ``max_concurrency`` gets one :class:`mlport.runtime.admission.Gate` per
version it routes to (the semantics of a model version's gate in ``mlport serve``): ``max_concurrency`` requests
per ready replica are forwarded at once, the next ``max_queue`` wait (high priority first, then in arrival
order), and the rest are refused at once with ``overload_status`` (503 or 429) and ``Retry-After``.  A request
leaves the queue unsent when it waited ``queue_timeout_s`` (503/429), when its own deadline passed (504: the
``X-Request-Timeout`` header, seconds, or the OIP ``timeout`` parameter, microseconds) or when its client went
away; without ``queue_timeout_s``, the gateway's own timeout bounds the wait.  What is left of its deadline
goes to the replica as ``X-Request-Timeout``.  ``priority`` (the OIP parameter or the ``X-Request-Priority``
header; 1 is high) puts it before the normal ones.

The queue depth of each version counts as load for the autoscaler (:meth:`DeploymentGates.waiting`), so queued
requests add replicas before the queue fills (up to ``max_replicas``), and each new ready replica lets
``max_concurrency`` more requests through.  A deployment without ``max_concurrency`` has no gate at all.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlport.deploy.autoscale import ScalePolicy
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.protocols.http.routes_oip import parse_timeout
from mlport.runtime.admission import Expired, Gate, Overloaded, parse_timeout_us

__all__ = ["ClientGone", "DeploymentGates", "Ticket", "retry_after_header", "with_header"]

#: Header giving a request's priority level (as the OIP ``priority`` parameter: 1 high, 0 or 2 normal).
PRIORITY_HEADER = b"x-request-priority"
TIMEOUT_HEADER = b"x-request-timeout"
#: Largest JSON body searched for the OIP ``timeout`` and ``priority`` parameters.
MAX_PARAMETER_BODY = 16 * 1024 * 1024
_QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Watch = Callable[[], Awaitable[object]]
T = TypeVar("T")


class ClientGone(MlportError):
    """The client went away while its request waited in the queue (it was not sent)."""

    code = ErrorCode.CANCELLED
    quiet = True


def with_header(headers: list[tuple[bytes, bytes]], header: tuple[bytes, bytes] | None) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``header`` set (replacing one of the same name); unchanged when it is ``None``."""
    if header is None:
        return headers
    return [*(h for h in headers if h[0] != header[0]), header]


def retry_after_header(exc: BaseException) -> bytes | None:
    """The ``Retry-After`` value of a refusal worth retrying (whole seconds, at least 1)."""
    seconds = getattr(exc, "retry_after_s", None)
    if not isinstance(seconds, int | float) or isinstance(exc, Expired):
        return None
    return str(max(1, math.ceil(seconds))).encode("ascii")


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["deployment", "version"]
        self.depth = Gauge("mlport_hub_queue_depth", "Requests waiting in a deployment version's gateway queue",
                           labels, registry=registry)
        self.refused = Counter("mlport_hub_refused_requests", "Gateway requests refused unsent: queue_full, "
                               "queue_timeout", [*labels, "reason"], registry=registry)
        self.expired = Counter("mlport_hub_expired_requests", "Gateway requests whose deadline passed in the "
                               "queue (never sent)", labels, registry=registry)
        self.cancelled = Counter("mlport_hub_cancelled_requests", "Gateway requests whose client went away in "
                                 "the queue (never sent)", labels, registry=registry)
        self.queued = Histogram("mlport_hub_queue_duration_seconds", "Time a gateway request waited for its turn",
                                labels, buckets=_QUEUE_BUCKETS, registry=registry)


class Ticket:
    """One admitted request's slot: :meth:`leave` once its answer is in."""

    __slots__ = ("_gates", "deadline", "gate", "key")

    def __init__(self, gates: DeploymentGates, key: tuple[str, int], gate: Gate, deadline: float | None) -> None:
        self._gates = gates
        self.key = key
        self.gate = gate
        #: When the request's deadline passes (the event loop's clock), if it has one.
        self.deadline = deadline

    def timeout_header(self) -> tuple[bytes, bytes] | None:
        """``X-Request-Timeout`` with what is left of the deadline, for the replica; ``None`` without one.
        Raises :class:`Expired` when nothing is left."""
        if self.deadline is None:
            return None
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            self._gates.count(self.key, Expired(""))
            raise Expired(f"the request's deadline passed before deployment '{self.key[0]}' could send it; "
                          "it was not sent")
        return TIMEOUT_HEADER, f"{max(left, 0.001):.3f}".encode("ascii")

    def leave(self) -> None:
        if self.gate.depth:  # a replica that became ready lets more of the waiting ones through
            self._gates.resize(self.key, self.gate)
        self.gate.leave()


class DeploymentGates:
    """The gates of every limited deployment version, and their metrics (see the module's description)."""

    def __init__(self, registry: CollectorRegistry | None = None, max_wait_s: float = 60.0) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        #: The queue timeout of a deployment that sets none (the gateway's timeout): no wait is unbounded.
        self.max_wait_s = max_wait_s
        self._metrics = _Metrics(self.registry)
        self._gates: dict[tuple[str, int], tuple[Gate, int]] = {}
        #: how to count the ready replicas of each version (the gateway tells)
        self._ready: dict[tuple[str, int], Callable[[], int]] = {}
        #: the queue-duration histogram of each version (its labels looked up once)
        self._queued: dict[tuple[str, int], Any] = {}

    # -- the gateway's side ------------------------------------------------------------------------------
    async def run(self, deployment: str, version: int, policy: ScalePolicy, ready: Callable[[], int], path: str,
                  headers: Sequence[tuple[bytes, bytes]], body: bytes, watch: Watch | None,
                  forward: Callable[[tuple[bytes, bytes] | None], Awaitable[T]]) -> T:
        """``forward(timeout_header)`` once the request holds a slot (see :meth:`admit`), which it keeps until
        the answer is in; ``timeout_header`` is what is left of the request's deadline, if it has one."""
        ticket = await self.admit(deployment, version, policy, ready, path, headers, body, watch)
        try:
            return await forward(ticket.timeout_header())
        finally:
            ticket.leave()

    async def admit(self, deployment: str, version: int, policy: ScalePolicy, ready: Callable[[], int],
                    path: str, headers: Sequence[tuple[bytes, bytes]], body: bytes, watch: Watch | None) -> Ticket:
        """Wait for a slot of ``version``; raises :class:`Overloaded`, :class:`Expired` or :class:`ClientGone`
        (counted) instead.  ``ready`` counts the version's ready replicas now."""
        key = (deployment, version)
        gate = self._gate(key, policy, ready)
        deadline, level = _schedule(path, headers, body, gate)
        labels = (deployment, str(version))
        if deadline is not None and deadline <= asyncio.get_running_loop().time():
            self._metrics.expired.labels(*labels).inc()
            raise Expired(f"the request's deadline passed before deployment '{deployment}' could send it; "
                          "it was not sent")
        if gate.try_enter():
            self._queued[key].observe(0.0)
            return Ticket(self, key, gate, deadline)
        self.resize(key, gate)
        if gate.try_enter():
            self._queued[key].observe(0.0)
            return Ticket(self, key, gate, deadline)
        await self._wait(gate, labels, deadline, level, watch)
        return Ticket(self, key, gate, deadline)

    async def _wait(self, gate: Gate, labels: tuple[str, str], deadline: float | None, level: int,
                    watch: Watch | None) -> None:
        loop = asyncio.get_running_loop()
        since = loop.time()
        try:
            slot = gate.wait(deadline, level)
        except Overloaded as exc:
            self._metrics.refused.labels(*labels, exc.reason).inc()
            raise
        watcher = None if watch is None else asyncio.ensure_future(watch())
        try:
            waits: list[asyncio.Future[Any]] = [slot] if watcher is None else [slot, watcher]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not slot.done():
                raise ClientGone("the client went away while its request waited in the queue; it was not sent")
            slot.result()
        except BaseException as exc:
            gate.abandon(slot)
            self.count((labels[0], int(labels[1])), exc)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            self._metrics.queued.labels(*labels).observe(loop.time() - since)

    def count(self, key: tuple[str, int], exc: BaseException) -> None:
        """Count a request the gate did not let through, by why."""
        labels = (key[0], str(key[1]))
        if isinstance(exc, Overloaded):
            self._metrics.refused.labels(*labels, exc.reason).inc()
        elif isinstance(exc, Expired):
            self._metrics.expired.labels(*labels).inc()
        elif isinstance(exc, ClientGone | asyncio.CancelledError):
            self._metrics.cancelled.labels(*labels).inc()

    def _gate(self, key: tuple[str, int], policy: ScalePolicy, ready: Callable[[], int]) -> Gate:
        """The version's gate, made or brought up to date with ``policy``."""
        per_replica = policy.max_concurrency or 1
        code = ErrorCode.RESOURCE_EXHAUSTED if policy.overload_status == 429 else ErrorCode.UNAVAILABLE
        timeout = policy.queue_timeout_s if policy.queue_timeout_s is not None else self.max_wait_s
        found = self._gates.get(key)
        if found is None:
            gate = Gate(key[0], key[1], per_replica * max(1, ready()), policy.max_queue, timeout, code, self._depth)
            gate.kind = "deployment"  # the messages name the deployment
            self._queued[key] = self._metrics.queued.labels(key[0], str(key[1]))
            self._gates[key] = (gate, per_replica)
        else:
            gate = found[0]
            gate.max_queue, gate.queue_timeout_s, gate.refuse_code = policy.max_queue, timeout, code
            if found[1] != per_replica:
                self._gates[key] = (gate, per_replica)
        self._ready[key] = ready
        return gate

    def resize(self, key: tuple[str, int], gate: Gate) -> None:
        """Fit the gate to the version's ready replicas now."""
        found = self._gates.get(key)
        ready = self._ready.get(key)
        if found is None or found[0] is not gate or ready is None:
            return
        want = found[1] * max(1, ready())
        if want != gate.max_concurrency:
            gate.resize(want)

    def _depth(self, deployment: str, version: str, depth: int) -> None:
        self._metrics.depth.labels(deployment, version).set(depth)

    # -- the controller's side ---------------------------------------------------------------------------
    def waiting(self, deployment: str, version: int) -> int:
        """Requests waiting for ``version`` of ``deployment`` now (load for the autoscaler); the gate is fitted
        to the version's ready replicas on the way, so a replica that just became ready takes its share."""
        found = self._gates.get((deployment, version))
        if found is None:
            return 0
        self.resize((deployment, version), found[0])
        return found[0].depth

    def forget(self, gated: Sequence[str]) -> None:
        """Drop the gates of deployments that are gone or have no limits any more (``gated``: those that have)."""
        keep = set(gated)
        for key in [k for k in self._gates if k[0] not in keep]:
            gate = self._gates.pop(key)[0]
            self._ready.pop(key, None)
            self._queued.pop(key, None)
            if not gate.depth:
                self._metrics.depth.remove(key[0], str(key[1]))


def _schedule(path: str, headers: Sequence[tuple[bytes, bytes]], body: bytes, gate: Gate) -> tuple[float | None, int]:
    """The deadline (event loop clock) and priority level of a request: its headers, then the OIP parameters
    of an infer call's JSON body (the earlier deadline and the parameter's priority win)."""
    seconds: float | None = None
    level = 0  # the default level
    binary: int | None = None
    for name, value in headers:
        if name == TIMEOUT_HEADER:
            seconds = parse_timeout(value)
        elif name == PRIORITY_HEADER:
            level = _priority(gate, value.decode("latin-1"), "header X-Request-Priority")
        elif name == b"inference-header-content-length":
            binary = int(value) if value.isdigit() else None
    params = _parameters(path, body, binary)
    if params:
        if params.get("priority") is not None:
            level = gate.priority(params["priority"])
        own = parse_timeout_us(params.get("timeout"))
        if own is not None:
            seconds = own if seconds is None else min(seconds, own)
    return (None if seconds is None else asyncio.get_running_loop().time() + seconds), level


def _priority(gate: Gate, value: str, what: str) -> int:
    try:
        return gate.priority(value)
    except MlportError as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None


def _parameters(path: str, body: bytes, binary: int | None) -> dict[str, Any] | None:
    """The ``parameters`` of an OIP infer request's JSON (the JSON head of a binary one), if any."""
    if not path.endswith("/infer") or "/v2/models/" not in path or not body or len(body) > MAX_PARAMETER_BODY:
        return None
    head = body[:binary] if binary is not None else body
    if b'"parameters"' not in head:  # the common case: nothing to parse
        return None
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError:
        return None  # the replica answers what is wrong with it
    params = doc.get("parameters") if isinstance(doc, dict) else None
    return params if isinstance(params, dict) else None
