"""desired_replicas(): table-driven, time passed in (no clocks, no sleeps)."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import pytest

from mlport.deploy.autoscale import LoadSample, PolicyFields, ScalePolicy, desired_replicas
from mlport.errors import InvalidInput

BASE = ScalePolicy(min_replicas=1, max_replicas=4, target_inflight=4.0, scale_up_after_s=2.0, scale_down_after_s=10.0)
TO_ZERO = ScalePolicy(min_replicas=0, max_replicas=3, target_inflight=4.0, scale_up_after_s=2.0,
                      scale_down_after_s=10.0, scale_to_zero=True)
TO_ZERO_MIN2 = ScalePolicy(min_replicas=2, max_replicas=4, target_inflight=4.0, scale_up_after_s=2.0,
                           scale_down_after_s=10.0, scale_to_zero=True)


def steady(t0: float, t1: float, inflight: int, replicas: int, step: float = 1.0) -> list[LoadSample]:
    """One sample every ``step`` seconds from t0 to t1 (inclusive) with the same load."""
    out, t = [], t0
    while t <= t1 + 1e-9:
        out.append(LoadSample(at=t, inflight=inflight, replicas=replicas))
        t += step
    return out


CASES: list[tuple[str, ScalePolicy, list[LoadSample], int, float, int]] = [
    # (what, policy, samples, current, now, expected)
    ("idle stays at min", BASE, steady(0, 60, 0, 1), 1, 60, 1),
    ("no samples: no change", BASE, [], 2, 10, 2),
    ("light load stays", BASE, steady(0, 20, 3, 1), 1, 20, 1),
    ("sustained load scales up to ceil(mean/target)", BASE, steady(0, 3, 10, 1), 1, 3, 3),
    ("sustained load from 2 replicas", BASE, steady(0, 3, 13, 2), 2, 3, 4),
    ("load exactly at target is not above it", BASE, steady(0, 10, 4, 1), 1, 10, 1),
    ("a spike shorter than scale_up_after_s does nothing", BASE,
     [*steady(0, 9, 0, 1), LoadSample(9.5, 40, 1), LoadSample(10, 40, 1)], 1, 10, 1),
    ("load not observed for the whole window yet", BASE, steady(8.5, 10, 40, 1), 1, 10, 1),
    ("a dip inside the window blocks scale up", BASE,
     [*steady(0, 1, 20, 1), LoadSample(1.5, 2, 1), *steady(2, 3, 20, 1)], 1, 3, 1),
    ("caps at max", BASE, steady(0, 5, 500, 1), 1, 5, 4),
    ("at max stays at max under load", BASE, steady(0, 5, 500, 4), 4, 5, 4),
    ("scales down after the quiet period", BASE, steady(0, 12, 1, 3), 3, 12, 2),
    ("one step at a time even when idle", BASE, steady(0, 12, 0, 4), 4, 12, 3),
    ("not before the quiet period passed", BASE, steady(5, 12, 0, 3), 3, 12, 3),
    ("load inside the quiet window blocks scale down", BASE,
     [*steady(0, 5, 0, 3), LoadSample(6, 9, 3), *steady(7, 12, 0, 3)], 3, 12, 3),
    ("the next step waits for another quiet period", BASE,
     [*steady(0, 8, 0, 3), *steady(9, 12, 0, 2)], 2, 12, 2),
    ("next step after a full window at the new size", BASE,
     [*steady(0, 8, 0, 3), *steady(9, 20, 0, 2)], 2, 20, 1),
    ("need still covers current: no scale down", BASE, steady(0, 12, 8, 2), 2, 12, 2),
    ("never below min", BASE, steady(0, 60, 0, 1), 1, 60, 1),
    ("above max after a policy change: back to max at once", BASE, steady(0, 1, 0, 6), 6, 1, 4),
    ("below min after a policy change: up to min at once",
     ScalePolicy(min_replicas=2, max_replicas=4), steady(0, 1, 0, 1), 1, 1, 2),
    ("zero without the flag: back to min", BASE, [], 0, 5, 1),
    ("scale to zero after the quiet period", TO_ZERO, steady(0, 12, 0, 1), 1, 12, 0),
    ("scale to zero waits for the quiet period", TO_ZERO, steady(5, 12, 0, 1), 1, 12, 1),
    ("any request in the window keeps one replica", TO_ZERO,
     [*steady(0, 6, 0, 1), LoadSample(7, 1, 1), *steady(8, 12, 0, 1)], 1, 12, 1),
    ("no zero without the flag", ScalePolicy(min_replicas=1, max_replicas=3, scale_down_after_s=10.0),
     steady(0, 60, 0, 1), 1, 60, 1),
    ("from zero to one when requests wait", TO_ZERO, [*steady(0, 5, 0, 0), LoadSample(5.5, 1, 0)], 0, 5.5, 1),
    ("zero stays zero when nothing waits", TO_ZERO, steady(0, 30, 0, 0), 0, 30, 0),
    ("zero stays zero without samples", TO_ZERO, [], 0, 30, 0),
    ("min 2 with scale to zero: steps down to min first", TO_ZERO_MIN2, steady(0, 12, 0, 3), 3, 12, 2),
    ("min 2 with scale to zero: idle at min goes to zero", TO_ZERO_MIN2, steady(0, 12, 0, 2), 2, 12, 0),
    ("min 2 with scale to zero: wakes to min", TO_ZERO_MIN2, [LoadSample(1, 2, 0)], 0, 1, 2),
]


@pytest.mark.parametrize(("what", "policy", "samples", "current", "now", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_desired_replicas(what: str, policy: ScalePolicy, samples: list[LoadSample], current: int, now: float,
                          expected: int) -> None:
    assert policy.validate() is policy
    assert desired_replicas(policy, samples, current, now) == expected


def test_scale_down_sequence_is_one_step_per_quiet_period() -> None:
    """Replaying the controller's loop (a sample per second, history restarted after each change)."""
    policy = BASE
    samples: list[LoadSample] = []
    current, changes = 4, []
    for t in range(0, 60):
        samples.append(LoadSample(float(t), 0, current))
        want = desired_replicas(policy, samples, current, float(t))
        if want != current:
            changes.append((t, current, want))
            current = want
            samples = samples[-1:]
    assert [c[1:] for c in changes] == [(4, 3), (3, 2), (2, 1)]
    times = [c[0] for c in changes]
    assert all(b - a >= policy.scale_down_after_s for a, b in itertools.pairwise(times))


def test_samples_in_a_deque() -> None:
    assert desired_replicas(BASE, deque(steady(0, 12, 1, 3)), 3, 12) == 2
    assert desired_replicas(BASE, deque(steady(0, 3, 10, 1)), 1, 3) == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_replicas": 0}, "only with scale_to_zero"),
    ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
    ({"min_replicas": 0, "max_replicas": 0, "scale_to_zero": True}, "max_replicas"),
    ({"max_replicas": 65}, "max_replicas"),
    ({"min_replicas": -1}, "min_replicas"),
    ({"min_replicas": 1.5}, "min_replicas"),
    ({"target_inflight": 0}, "target_inflight"),
    ({"target_inflight": float("nan")}, "target_inflight"),
    ({"scale_up_after_s": -1}, "scale_up_after_s"),
    ({"scale_down_after_s": 10**9}, "scale_down_after_s"),
    ({"scale_to_zero": "yes"}, "scale_to_zero"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"max_queue": 4}, "need max_concurrency"),
    ({"max_concurrency": 1, "queue_timeout_s": 0}, "queue_timeout_s"),
    ({"max_concurrency": 1, "overload_status": 500}, "overload_status"),
])
def test_policy_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ScalePolicy(**kwargs).validate()


def test_policy_json() -> None:
    assert ScalePolicy.from_json(TO_ZERO.to_json()) == TO_ZERO
    assert ScalePolicy.from_json({"max_replicas": 3}) == ScalePolicy(max_replicas=3)
    assert ScalePolicy.from_json({"target_inflight": 2}).target_inflight == 2.0
    with pytest.raises(InvalidInput, match="unknown"):
        ScalePolicy.from_json({"replicas": 3})
    with pytest.raises(InvalidInput, match="only with scale_to_zero"):
        ScalePolicy.from_json({"min_replicas": 0})
    with pytest.raises(InvalidInput, match="JSON object"):
        ScalePolicy.from_json([1])
    # the gateway's limits: stored beside the scaling fields, removed again with null
    limited = ScalePolicy.from_json({"max_concurrency": 2, "max_queue": 8, "queue_timeout_s": 1.5,
                                     "overload_status": 429})
    assert limited.gated and ScalePolicy.from_json(limited.to_json()) == limited and not ScalePolicy().gated
    cleared = limited.updated(PolicyFields(max_concurrency=None, max_queue=None, queue_timeout_s=None))
    assert not cleared.gated and cleared.overload_status == 429


def test_samples_may_come_in_a_deque() -> None:
    """The controller keeps its samples in a bounded deque, which cannot be sliced."""
    policy = ScalePolicy(min_replicas=1, max_replicas=4, target_inflight=1.0, scale_up_after_s=1.0)
    samples = deque(LoadSample(at=t / 2, inflight=3, replicas=1) for t in range(10))
    assert desired_replicas(policy, samples, 1, now=4.5) == 3
