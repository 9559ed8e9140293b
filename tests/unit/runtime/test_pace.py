"""How fast a queue drains, and the Retry-After its refused clients are told."""

from __future__ import annotations

import pytest

from mlport.runtime.pace import Pace, spread_retry_after


def test_retry_after_is_spread_from_the_drain_time_to_twice_it() -> None:
    seen = [spread_retry_after(1.6) for _ in range(600)]
    assert set(seen) == {2, 3, 4}  # whole seconds from 1.6 to 3.2, rounded up; each drawn (miss: (2/3)**600)
    asked: list[tuple[int, int]] = []
    assert spread_retry_after(7.2, lambda low, high: asked.append((low, high)) or high) == 15
    assert asked == [(8, 15)]
    # a queue that drains within half a second says 1 s (the least), one that drains in minutes at most 60 s
    assert {spread_retry_after(d) for d in (0.0, 0.2, 0.5) for _ in range(50)} == {1}
    assert set(spread_retry_after(0.8) for _ in range(200)) == {1, 2}
    assert {spread_retry_after(d) for d in (60.0, 500.0) for _ in range(50)} == {60}
    assert all(40 <= spread_retry_after(40.0) <= 60 for _ in range(200))


def test_the_pace_of_a_queue_is_known_from_its_first_moments() -> None:
    """Two slots of 50 ms each in step: a request leaves every 25 ms on average.  Before any has left, the time
    since the queue formed shared by the slots; then the mean gap; after the warm-up, a moving average of the
    gaps that starts from that mean.  A queue that empties ends the measurement."""
    pace = Pace()
    assert pace.gap(5.0, 2) == 0.0  # nobody ever waited
    pace.waits(10.0)
    pace.waits(10.001)  # the queue formed at 10.0
    assert pace.gap(10.03, 2) == pytest.approx(0.015)  # nothing left yet: each slot took >= 30 ms
    asked: list[tuple[int, int]] = []
    spread_retry_after(64 * pace.gap(10.03, 2), lambda low, high: asked.append((low, high)) or low)
    assert asked == [(1, 2)]  # 64 waiting drain in >= 0.96 s: told 1 or 2 s
    pace.left(10.05, True)
    pace.left(10.0501, True)
    assert pace.gap(10.05, 2) == pytest.approx(0.025)
    assert spread_retry_after(64 * pace.gap(10.05, 2), lambda low, high: high) == 4  # 1.6 s to drain: 2 to 4 s
    now = 10.05
    for _ in range(7):  # up to 16 leaves, in pairs 50 ms apart
        now += 0.05
        pace.left(now, True)
        pace.left(now + 0.0001, True)
    assert pace.leaves == 16 and pace.average == pytest.approx(0.025, rel=0.01)
    pace.left(now + 0.05, True)  # the moving average goes on from the mean
    assert 0.025 < pace.average < 0.03
    pace.left(now + 0.06, False)  # nobody waits any more
    assert not pace.formed and pace.average > 0.025
    pace.waits(100.0)  # the next queue: the known average, not the idle time since
    assert pace.gap(101.0, 2) == pace.average
