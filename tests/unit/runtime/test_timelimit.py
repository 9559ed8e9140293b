from __future__ import annotations

import asyncio

import pytest

from mlport.errors import ErrorCode, MlportError
from mlport.runtime.timelimit import TimeLimit


def test_each_future_fails_once_past_the_limit_and_in_the_order_watched() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        limit = TimeLimit(0.2, "too slow")
        watched: dict[str, float] = {}
        failed: dict[str, float] = {}
        futures = {}
        for name in ("first", "second"):
            futures[name] = future = loop.create_future()
            future.add_done_callback(lambda _f, n=name: failed.setdefault(n, loop.time()))
            watched[name] = loop.time()
            assert limit.watch(future, loop)
            await asyncio.sleep(0.1)
        for name, future in futures.items():
            with pytest.raises(MlportError) as info:
                await asyncio.wait_for(future, 5)
            assert info.value.code is ErrorCode.DEADLINE_EXCEEDED and info.value.message == "too slow"
            assert failed[name] - watched[name] >= 0.2  # never before its own limit
        assert failed["first"] <= failed["second"]
        assert len(limit) == 0
        limit.close()

    asyncio.run(scenario())


def test_a_future_that_ended_or_was_forgotten_is_left_alone() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        limit = TimeLimit(0.05, "too slow")
        answered, forgotten, late = loop.create_future(), loop.create_future(), loop.create_future()
        for f in (answered, forgotten, late):
            assert limit.watch(f, loop)
        answered.set_result("ok")
        limit.forget(answered)
        limit.forget(forgotten)
        assert len(limit) == 1
        with pytest.raises(MlportError):
            await asyncio.wait_for(late, 5)
        assert answered.result() == "ok"
        assert not forgotten.done()  # no longer watched: whoever forgot it times it
        limit.close()

    asyncio.run(scenario())


def test_the_timer_is_set_again_for_futures_watched_after_the_oldest_ended() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        limit = TimeLimit(0.1, "too slow")
        quick = loop.create_future()
        limit.watch(quick, loop)  # the timer waits for this one
        limit.forget(quick)
        await asyncio.sleep(0.05)
        slow = loop.create_future()
        limit.watch(slow, loop)  # reaches its limit 0.05 s after the timer first fires
        started = loop.time()
        with pytest.raises(MlportError):
            await asyncio.wait_for(slow, 5)
        assert loop.time() - started >= 0.09  # not failed early, when the first timer fired
        limit.close()

    asyncio.run(scenario())


def test_another_event_loop_times_its_futures_itself_until_the_first_one_closes() -> None:
    limit = TimeLimit(0.05, "too slow")
    first = asyncio.new_event_loop()
    second = asyncio.new_event_loop()
    try:
        assert limit.watch(first.create_future(), first)
        assert not limit.watch(second.create_future(), second)
        first.close()
        future = second.create_future()
        assert limit.watch(future, second)  # the first loop is gone: the limit serves this one now
        with pytest.raises(MlportError):
            second.run_until_complete(asyncio.wait_for(future, 5))
    finally:
        first.close()
        second.close()
