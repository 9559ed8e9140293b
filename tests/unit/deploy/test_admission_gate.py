"""The gateway's deployment queues on a real event loop: capacity per ready replica, deadlines and priority from
headers and OIP parameters, what the autoscaler reads, and the metrics of each case."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from mlport.deploy.admission_gate import DeploymentGates, retry_after_header
from mlport.deploy.autoscale import ScalePolicy
from mlport.errors import ErrorCode, MlportError
from mlport.runtime.admission import Expired, Overloaded
from tests.waiting import until

POLICY = ScalePolicy(max_concurrency=1, max_queue=2)
INFER = "/v2/models/d/infer"


def sample(gates: DeploymentGates, name: str, **labels: str) -> float:
    value = gates.registry.get_sample_value(name, {"deployment": "d", "version": "1", **labels})
    return 0.0 if value is None else value


def oip(**params: object) -> bytes:
    return orjson.dumps({"inputs": [], "parameters": params})


def test_capacity_follows_the_ready_replicas_and_the_queue_is_load() -> None:
    asyncio.run(_capacity())


async def _capacity() -> None:
    gates, ready = DeploymentGates(), [1]
    first = await gates.admit("d", 1, POLICY, lambda: ready[0], INFER, [], b"", None)
    queued = asyncio.ensure_future(gates.admit("d", 1, POLICY, lambda: ready[0], INFER, [], b"", None))
    await until(lambda: gates.waiting("d", 1) == 1, what="the request queued")
    assert not queued.done() and gates.waiting("d", 1) == 1 and sample(gates, "mlport_hub_queue_depth") == 1
    ready[0] = 2  # a second replica: the controller's next look lets the queued request through
    assert gates.waiting("d", 1) == 0
    second = await queued
    assert first.gate.running == 2
    second.leave()
    first.leave()
    assert first.gate.running == 0 and gates.waiting("d", 2) == 0
    assert sample(gates, "mlport_hub_queue_duration_seconds_count") == 2


def test_a_full_queue_refuses_with_retry_after_and_counts_it() -> None:
    asyncio.run(_full())


async def _full() -> None:
    gates = DeploymentGates()
    policy = ScalePolicy(max_concurrency=1, max_queue=0, overload_status=429)
    held = await gates.admit("d", 1, policy, lambda: 1, INFER, [], b"", None)
    with pytest.raises(Overloaded, match="queue is full") as info:
        await gates.admit("d", 1, policy, lambda: 1, INFER, [], b"", None)
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED and retry_after_header(info.value) == b"1"
    assert sample(gates, "mlport_hub_refused_requests_total", reason="queue_full") == 1
    held.leave()


def test_deadlines_from_the_header_and_the_oip_parameter() -> None:
    asyncio.run(_deadlines())


async def _deadlines() -> None:
    gates = DeploymentGates()
    held = await gates.admit("d", 1, POLICY, lambda: 1, INFER, [], b"", None)
    head = oip(timeout=50_000)  # the JSON head of a binary request is read too
    binary = [(b"inference-header-content-length", str(len(head)).encode())]
    for headers, body in (([(b"x-request-timeout", b"0.05")], b""), ([], oip(timeout=50_000)),
                          (binary, head + b"\x00" * 8)):
        with pytest.raises(Expired):
            await gates.admit("d", 1, POLICY, lambda: 1, INFER, headers, body, None)
    assert sample(gates, "mlport_hub_expired_requests_total") == 3
    held.leave()
    # the earlier of the two deadlines is what is left for the replica
    limit = [(b"x-request-timeout", b"30")]
    ticket = await gates.admit("d", 1, POLICY, lambda: 1, INFER, limit, oip(timeout=2_000_000), None)
    header = ticket.timeout_header()
    assert header is not None and header[0] == b"x-request-timeout" and 1.0 < float(header[1]) <= 2.0
    ticket.leave()


@pytest.mark.parametrize(("headers", "body", "message"), [
    ([(b"x-request-timeout", b"soon")], b"", "X-Request-Timeout"),
    ([(b"x-request-priority", b"7")], b"", "X-Request-Priority"),
    ([], oip(timeout=-1), "parameter 'timeout'"),
    ([], oip(priority="x"), "parameter 'priority'"),
])
def test_bad_deadlines_and_priorities_are_400(headers: list[tuple[bytes, bytes]], body: bytes, message: str) -> None:
    async def main() -> None:
        with pytest.raises(MlportError, match=message) as info:
            await DeploymentGates().admit("d", 1, POLICY, lambda: 1, INFER, headers, body, None)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT

    asyncio.run(main())


def test_priority_goes_first_and_a_client_that_leaves_is_dropped() -> None:
    asyncio.run(_priority())


async def _priority() -> None:
    gates, policy = DeploymentGates(), ScalePolicy(max_concurrency=1, max_queue=8)
    held = await gates.admit("d", 1, policy, lambda: 1, INFER, [], b"", None)
    gone = asyncio.Event()

    async def watch() -> None:
        await gone.wait()

    leaving = asyncio.ensure_future(gates.admit("d", 1, policy, lambda: 1, INFER, [], b"", watch))
    normal = asyncio.ensure_future(gates.admit("d", 1, policy, lambda: 1, INFER, [], b"", None))
    await until(lambda: gates.waiting("d", 1) == 2, what="two requests queued")
    high = asyncio.ensure_future(gates.admit("d", 1, policy, lambda: 1, INFER, [], oip(priority=1), None))
    await until(lambda: gates.waiting("d", 1) == 3, what="the high-priority request queued")
    gone.set()
    with pytest.raises(Exception, match="went away"):
        await leaving
    assert sample(gates, "mlport_hub_cancelled_requests_total") == 1 and gates.waiting("d", 1) == 2
    held.leave()
    (await high).leave()
    (await normal).leave()  # after the high-priority one, which arrived later


def test_policy_changes_apply_in_place_and_forget_drops_the_gate() -> None:
    asyncio.run(_changes())


async def _changes() -> None:
    gates = DeploymentGates(max_wait_s=30.0)
    ticket = await gates.admit("d", 1, POLICY, lambda: 1, INFER, [], b"", None)
    gate = ticket.gate
    assert gate.queue_timeout_s == 30.0  # no queue timeout set: no wait is longer than the gateway's timeout
    ticket.leave()
    again = await gates.admit("d", 1, ScalePolicy(max_concurrency=3, max_queue=5, queue_timeout_s=2.0), lambda: 2,
                              INFER, [], b"", None)
    assert again.gate is gate and (gate.max_queue, gate.queue_timeout_s) == (5, 2.0)
    again.leave()
    assert gates.waiting("d", 1) == 0 and gate.max_concurrency == 6  # fitted when it matters, or by the controller
    gates.forget(["other"])
    assert gates.waiting("d", 1) == 0 and ("d", 1) not in gates._gates
