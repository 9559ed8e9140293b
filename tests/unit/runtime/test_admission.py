"""The admission gate on a real event loop: slots, the bounded queue, priority, deadlines, queue timeout."""

from __future__ import annotations

import asyncio

import pytest

from mlport.errors import ErrorCode, MlportError
from mlport.runtime import admission
from mlport.runtime.admission import (
    HIGH,
    NORMAL,
    AdmissionPolicy,
    Expired,
    Gate,
    LevelPolicy,
    Overloaded,
    QueueOrder,
    Refusals,
    parse_priority,
)
from tests.waiting import until


def test_no_limit_means_no_gate() -> None:
    assert AdmissionPolicy().gate("m", 1, None, None, None) is None
    # without max_concurrency: the next request waits at each thread, and counts against max_queue
    gate = AdmissionPolicy(max_queue=64, threads=2).gate("m", 1, None, None, None)
    assert gate is not None and gate.max_concurrency == 4 and gate.max_queue == 62
    gate = AdmissionPolicy(max_queue=20, threads=3).gate("m", 1, None, None, None, batch=4)
    assert gate is not None and gate.max_concurrency == 24 and gate.max_queue == 8
    gate = AdmissionPolicy(max_queue=8, threads=3).gate("m", 1, None, None, None, batch=4)
    assert gate is not None and gate.max_concurrency == 20 and gate.max_queue == 0
    gate = AdmissionPolicy(queue_timeout_s=1.0, threads=3).gate("m", 1, None, None, None)
    assert gate is not None and gate.max_concurrency == 6 and gate.max_queue is None
    own = AdmissionPolicy(max_queue=8).gate("m", 1, 2, 0, 1.5)
    assert own is not None and (own.max_concurrency, own.max_queue, own.queue_timeout_s) == (2, 0, 1.5)


def test_priority_values() -> None:
    assert parse_priority(None) == parse_priority(0) == parse_priority(2) == NORMAL
    assert parse_priority(1) == parse_priority("1") == HIGH
    for bad in (3, -1, "x", 1.5, True):
        with pytest.raises(Exception, match="priority"):
            parse_priority(bad)


def test_refusals_of_a_full_queue_tell_different_retry_afters() -> None:
    asyncio.run(_refusals_of_a_full_queue_tell_different_retry_afters())


async def _refusals_of_a_full_queue_tell_different_retry_afters() -> None:
    gate = Gate("m", 1, 1, 4, None)
    assert gate.try_enter()
    waiting = [gate.wait(None, NORMAL) for _ in range(4)]
    gate.pace.average = 0.4  # requests have been leaving every 0.4 s: the 4 waiting drain in 1.6 s
    hints = []
    for _ in range(300):
        with pytest.raises(Overloaded) as info:
            gate.wait(None, NORMAL)
        hints.append(info.value.retry_after_s)
    assert set(hints) == {2.0, 3.0, 4.0}
    for future in waiting:
        gate.abandon(future)


def test_refusals_at_the_start_of_an_overload_are_spread() -> None:
    asyncio.run(_refusals_at_the_start_of_an_overload_are_spread())


async def _refusals_at_the_start_of_an_overload_are_spread() -> None:
    """Clients refused in the first moments of an overload are not all told the same second."""
    gate = Gate("m", 1, 2, 64, None)
    assert gate.try_enter() and gate.try_enter()
    waiting = [gate.wait(None, NORMAL) for _ in range(64)]
    gate.pace.formed -= 0.05  # the queue formed 50 ms ago and nothing has left: its 64 drain in >= 1.6 s
    hints = set()
    for _ in range(200):
        with pytest.raises(Overloaded) as info:
            gate.wait(None, NORMAL)
        hints.add(info.value.retry_after_s)
    assert min(hints) >= 2.0 and len(hints) >= 2, hints  # not all told 1 s (2-4 s, later as time passes)
    for future in waiting:
        gate.abandon(future)


def test_slots_pass_in_priority_then_arrival_order() -> None:
    asyncio.run(_slots_pass_in_priority_then_arrival_order())


async def _slots_pass_in_priority_then_arrival_order() -> None:
    depths: list[int] = []
    gate = Gate("m", 1, 1, 3, None, on_depth=lambda m, v, d: depths.append(d))
    assert gate.try_enter() and not gate.try_enter()
    first, second = gate.wait(None, NORMAL), gate.wait(None, NORMAL)
    high = gate.wait(None, HIGH)
    with pytest.raises(Overloaded, match="queue is full") as info:
        gate.wait(None, NORMAL)
    assert info.value.reason == "queue_full" and info.value.code is ErrorCode.UNAVAILABLE
    bumper = gate.wait(None, HIGH)  # full: the newest normal request makes room
    assert isinstance(second.exception(), Overloaded)
    gate.leave()
    assert high.done() and not first.done()
    gate.leave()
    assert bumper.done() and not first.done()
    gate.leave()
    assert first.done() and gate.running == 1
    gate.leave()
    assert gate.running == 0 and gate.depth == 0 and depths[-1] == 0


def test_deadline_and_queue_timeout_end_a_wait_unrun() -> None:
    asyncio.run(_deadline_and_queue_timeout_end_a_wait_unrun())


async def _deadline_and_queue_timeout_end_a_wait_unrun() -> None:
    loop = asyncio.get_running_loop()
    gate = Gate("m", 1, 1, None, 0.05, refuse_code=ErrorCode.RESOURCE_EXHAUSTED)
    assert gate.try_enter()
    expiring = gate.wait(loop.time() + 0.01, NORMAL)
    timing_out = gate.wait(None, NORMAL)
    with pytest.raises(Expired):
        await expiring
    with pytest.raises(Overloaded) as info:
        await timing_out
    assert info.value.reason == "queue_timeout" and info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert gate.depth == 0
    gate.leave()
    assert gate.running == 0


def test_an_abandoned_wait_gives_back_its_place_or_its_slot() -> None:
    asyncio.run(_an_abandoned_wait_gives_back_its_place_or_its_slot())


async def _an_abandoned_wait_gives_back_its_place_or_its_slot() -> None:
    gate = Gate("m", 1, 1, None, None)
    assert gate.try_enter()
    left = gate.wait(None, NORMAL)
    gate.abandon(left)
    assert left.cancelled() and gate.depth == 0
    granted = gate.wait(None, NORMAL)
    gate.leave()  # the slot passes to it...
    assert granted.done()
    gate.abandon(granted)  # ...and its client left at that moment: the slot is given back
    assert gate.running == 0


def test_a_gate_that_grows_lets_waiting_requests_in_and_one_that_shrinks_waits() -> None:
    asyncio.run(_resize())


async def _resize() -> None:
    gate = Gate("m", 1, 1, None, None)
    assert gate.try_enter()
    waiting = [gate.wait(None, NORMAL) for _ in range(3)]
    gate.resize(3)  # two more slots: the two oldest take them at once
    assert [w.done() for w in waiting] == [True, True, False] and gate.running == 3 and gate.depth == 1
    gate.resize(1)
    gate.leave()  # above the new size: the slot is given up, not handed on
    assert not waiting[2].done() and gate.running == 2
    gate.leave()
    assert not waiting[2].done() and gate.running == 1
    gate.leave()
    assert waiting[2].done() and gate.running == 1


def test_more_priority_levels_and_the_default_level() -> None:
    asyncio.run(_levels())


async def _levels() -> None:
    gate = Gate("m", 1, 1, 3, None, order=QueueOrder(levels=4, default_level=3))
    assert gate.priority(None) == gate.priority(0) == 3 and gate.priority("4") == 4
    with pytest.raises(Exception, match="1 \\(the highest\\) to 4"):
        gate.priority(5)
    assert gate.try_enter()
    low, default, top = gate.wait(None, 4), gate.wait(None, 0), gate.wait(None, 1)
    second = gate.wait(None, 2)  # full: the lowest level below 2 (4) makes room
    assert isinstance(low.exception(), Overloaded)
    with pytest.raises(Overloaded):
        gate.wait(None, 3)  # nothing below level 3 waits any more
    order = []
    for _ in range(3):
        gate.leave()
        order += [name for name, w in (("top", top), ("second", second), ("default", default))
                  if w.done() and name not in order]
    assert order == ["top", "second", "default"]


def test_delay_on_timeout_moves_a_request_behind_the_others() -> None:
    asyncio.run(_delay())


async def _delay() -> None:
    loop = asyncio.get_running_loop()
    gate = Gate("m", 1, 1, None, 0.05, order=QueueOrder(delay_on_timeout=True))
    assert gate.try_enter()
    early = gate.wait(loop.time() + 0.2, NORMAL)
    await asyncio.sleep(0.1)  # past its queue timeout: delayed, not refused
    assert not early.done() and gate.depth == 1
    late = gate.wait(None, NORMAL)
    gate.leave()
    assert late.done() and not early.done()
    with pytest.raises(Expired):  # its own deadline still holds
        await early
    assert gate.depth == 0


def test_a_level_with_a_policy_of_its_own() -> None:
    asyncio.run(_level_policies())


async def _level_policies() -> None:
    """Level 1 may have 2 waiting and waits up to 30 s; level 2 has the queue's 50 ms; level 3 no timeout."""
    order = QueueOrder(levels=3, default_level=2, policies=((1, LevelPolicy(max_queue=2, queue_timeout_s=30.0)),
                                                            (3, LevelPolicy(queue_timeout_s=0.0))))
    gate = Gate("m", 1, 1, 10, 0.05, order=order)
    assert gate.try_enter()
    top = [gate.wait(None, 1) for _ in range(2)]
    assert gate.refuses(1) and not gate.refuses(2) and not gate.refuses(3)
    with pytest.raises(Overloaded) as info:
        gate.wait(None, 1)  # its level is full, though the queue as a whole has room
    assert info.value.reason == "queue_full"
    assert "queue for priority level 1 is full (2 requests of that level waiting)" in info.value.message
    assert gate.refusal(1) is not None and gate.depth == 2
    normal, low = gate.wait(None, 0), gate.wait(None, 3)
    with pytest.raises(Overloaded) as info:
        await asyncio.wait_for(normal, 10)  # the queue's own timeout
    assert info.value.reason == "queue_timeout" and "waited 0.05 s" in info.value.message
    assert not low.done() and not any(w.done() for w in top)  # their levels' timeouts are longer, or none
    for expected in (top[0], top[1], low):
        gate.leave()
        assert expected.done() and expected.exception() is None
    gate.leave()
    assert gate.running == 0 and gate.depth == 0


def test_a_level_may_delay_where_the_queue_rejects() -> None:
    asyncio.run(_level_delay())


async def _level_delay() -> None:
    order = QueueOrder(policies=((NORMAL, LevelPolicy(delay_on_timeout=True)),))
    gate = Gate("m", 1, 1, None, 0.05, order=order)
    assert gate.try_enter()
    normal = gate.wait(None, NORMAL)
    high = gate.wait(None, HIGH)  # its timer comes after the normal one's
    with pytest.raises(Overloaded):
        await asyncio.wait_for(high, 10)  # rejected after the queue timeout...
    assert not normal.done() and gate.depth == 1  # ...where the normal one, older, was moved behind the others
    fresh = gate.wait(None, NORMAL)
    gate.leave()
    assert fresh.done() and not normal.done()
    gate.leave()
    assert normal.done() and normal.exception() is None


def test_level_policies_need_a_gate_of_their_own() -> None:
    bounded = QueueOrder(policies=((HIGH, LevelPolicy(max_queue=1)),))
    assert AdmissionPolicy().gate("m", 1, None, None, None, order=bounded) is not None
    timed = QueueOrder.of(2, 2, False, ((2, None, 0.5, None),))
    assert timed.by_level() == [None, LevelPolicy(queue_timeout_s=0.5)]
    assert AdmissionPolicy().gate("m", 1, None, None, None, order=timed) is not None
    only_action = QueueOrder(policies=((HIGH, LevelPolicy(delay_on_timeout=True)),))
    assert AdmissionPolicy().gate("m", 1, None, None, None, order=only_action) is None  # nothing bounds a wait
    with pytest.raises(ValueError, match="one of the 2 levels"):
        QueueOrder(policies=((3, LevelPolicy(max_queue=1)),))


def test_refuses_tells_what_wait_would_do_without_changing_anything() -> None:
    asyncio.run(_refuses())


async def _refuses() -> None:
    gate = Gate("m", 1, 1, 1, None)
    assert not gate.refuses() and gate.refusal() is None  # a slot is free
    assert gate.try_enter()
    assert not gate.refuses()  # the queue has room
    normal = gate.wait(None, NORMAL)
    assert gate.refuses() and gate.refuses(NORMAL)
    assert not gate.refuses(HIGH)  # it would take the normal one's place
    refusal = gate.refusal()
    assert isinstance(refusal, Overloaded) and refusal.reason == "queue_full" and "queue is full" in refusal.message
    assert gate.depth == 1 and not normal.done()  # nothing changed
    high = gate.wait(None, HIGH)  # takes the normal one's place
    assert gate.refuses(HIGH) and normal.done()
    normal.exception()
    gate.abandon(high)
    empty = Gate("m", 1, 1, 0, None)
    assert not empty.refuses()  # no queue at all, but the slot is free
    assert empty.try_enter() and empty.refuses()
    unbounded = Gate("m", 1, 1, None, 1.0)
    assert unbounded.try_enter() and not unbounded.refuses()  # no queue bound: nothing is refused at once


def test_refusals_count_as_lately_until_a_quiet_period_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission, "LATELY_S", 0.05)
    asyncio.run(_lately())


async def _lately() -> None:
    refusals = Refusals()
    gate = Gate("m", 1, 1, 0, None, refusals=refusals)
    assert gate.try_enter() and not refusals.lately
    assert gate.refusal() is not None and refusals.lately
    loop = asyncio.get_running_loop()
    past = loop.time() + 2 * admission.LATELY_S

    async def refuse() -> None:
        with pytest.raises(Overloaded):
            gate.wait(None, 0)

    # refusals keep coming: still lately two periods on
    await until(lambda: loop.time() > past and refusals.lately, refuse, timeout=10, what="two periods of refusals",
                every=0.01)
    await until(lambda: not refusals.lately, timeout=10, what="a quiet period to end 'lately'")  # no more refusals
    assert not refusals.lately


@pytest.mark.parametrize("value", [None, 0, False])
def test_no_timeout_parameter_gives_no_deadline(value: object) -> None:
    assert admission.parse_timeout_us(value) is None


def test_the_timeout_parameter_is_microseconds() -> None:
    assert admission.parse_timeout_us(250_000) == 0.25
    assert admission.parse_timeout_us(admission.MAX_TIMEOUT_US) == 86_400.0


@pytest.mark.parametrize("value", [-1, True, 1.5, "100", admission.MAX_TIMEOUT_US + 1, [1]])
def test_a_timeout_parameter_that_is_not_a_time_limit_is_refused(value: object) -> None:
    with pytest.raises(MlportError) as info:
        admission.parse_timeout_us(value)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert info.value.message.startswith(f"parameter 'timeout' is {value!r}; give the request's time limit in "
                                          "microseconds, 1 to 86400000000")
