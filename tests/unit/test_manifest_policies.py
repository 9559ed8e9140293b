"""The manifest router's routing policies: pure functions of weights, keys, statistics and a seeded generator."""

from __future__ import annotations

import numpy as np
import pytest

from mlport.core.keyhash import key_hash, key_point
from mlport.deploy.strategy import bucket
from mlport.formats.manifest import policies
from mlport.formats.manifest.policies import ArmStats


def _stats(pulls: list[int], rewards: list[float], successes: list[float] | None = None) -> ArmStats:
    return ArmStats(np.asarray(pulls, dtype=np.int64), np.asarray(rewards, dtype=np.float64),
                    np.asarray(successes if successes is not None else rewards, dtype=np.float64))


@pytest.mark.parametrize(("weights", "rand", "arm"), [
    (None, 0.0, 0),
    (None, 0.49, 0),
    (None, 0.5, 1),
    (None, 0.999, 1),
    ([0.8, 0.2], 0.79, 0),
    ([0.8, 0.2], 0.8, 1),
    ([1, 0, 3], 0.25, 2),  # a zero weight is never chosen
    ([1, 1, 1, 1], 0.74, 2),
])
def test_weighted_takes_the_child_whose_share_holds_the_draw(weights: list[float] | None, rand: float,
                                                              arm: int) -> None:
    cum = policies.cumulative(weights, 2 if weights is None else len(weights))
    assert cum[-1] == pytest.approx(1.0)
    assert policies.weighted(cum, rand) == arm


@pytest.mark.parametrize(("weights", "key"), [
    ([0.5, 0.5], "alice"),
    ([0.3, 0.7], "bob"),
    ([0.1, 0.2, 0.7], "carol"),
    ([0.25, 0.25, 0.25, 0.25], ""),
])
def test_sticky_uses_the_shared_key_hash(weights: list[float], key: str) -> None:
    cum = policies.cumulative(weights, len(weights))
    arm = policies.sticky(cum, key)
    assert arm == policies.weighted(cum, key_point(key))  # the key's point stands in for the draw
    assert arm == policies.sticky(cum, key)  # the same key, the same child


def test_one_key_hash_for_the_hub_and_manifests() -> None:
    # SHA-256's first 8 bytes, as the hub's A/B split has always used
    assert key_hash("alice") == int("2bd806c97f0e00af", 16)
    for key in ("alice", "bob", "user-7", "\ud800"):
        assert bucket(key) == key_point(key, 100.0)
        assert 0.0 <= key_point(key) < 1.0


@pytest.mark.parametrize(("pulls", "rewards", "epsilon", "arm"), [
    ([0, 0, 0], [0, 0, 0], 0.0, 0),  # each child once first, in order
    ([3, 0, 2], [1, 0, 2], 0.0, 1),
    ([4, 4, 4], [1, 3, 2], 0.0, 1),  # then the best mean reward
    ([10, 2], [5, 2], 0.0, 1),  # the mean, not the sum
])
def test_epsilon_greedy_without_exploration(pulls: list[int], rewards: list[float], epsilon: float, arm: int) -> None:
    assert policies.epsilon_greedy(_stats(pulls, rewards), epsilon, np.random.default_rng(0)) == arm


def test_epsilon_greedy_explores_with_probability_epsilon() -> None:
    stats = _stats([10, 10], [9, 1])
    rng = np.random.default_rng(5)
    n = 4000
    worse = sum(policies.epsilon_greedy(stats, 0.4, rng) == 1 for _ in range(n))
    # exploring picks either child: the worse one gets epsilon / 2 of the requests
    assert abs(worse / n - 0.2) < 4 * (0.2 * 0.8 / n) ** 0.5


@pytest.mark.parametrize(("pulls", "successes", "favourite", "share"), [
    ([200, 200], [190, 10], 0, 0.99),  # a clear winner is nearly always drawn
    ([200, 200], [10, 190], 1, 0.99),
    ([0, 0], [0, 0], None, 0.5),  # no evidence: a fair coin
])
def test_thompson_draws_from_the_posteriors(pulls: list[int], successes: list[float], favourite: int | None,
                                            share: float) -> None:
    stats = _stats(pulls, successes)
    rng = np.random.default_rng(1)
    n = 2000
    picks = [policies.thompson(stats, rng) for _ in range(n)]
    if favourite is None:
        assert abs(picks.count(0) / n - share) < 4 * (0.25 / n) ** 0.5
    else:
        assert picks.count(favourite) / n >= share


def test_policies_are_repeatable_with_a_seeded_generator() -> None:
    stats = _stats([5, 5, 5], [2, 3, 1])
    for policy in (lambda rng: policies.thompson(stats, rng), lambda rng: policies.epsilon_greedy(stats, 0.5, rng)):
        a, b = np.random.default_rng(9), np.random.default_rng(9)
        assert [policy(a) for _ in range(50)] == [policy(b) for _ in range(50)]


@pytest.mark.parametrize(("reward", "pulls", "total", "successes"), [
    (1.0, 1, 1.0, 1.0),
    (0.25, 1, 0.25, 0.25),
    (3.0, 1, 3.0, 1.0),  # successes are clipped to [0, 1]; the reward's sum is not
    (-2.0, 1, -2.0, 0.0),
])
def test_record_counts_a_reward(reward: float, pulls: int, total: float, successes: float) -> None:
    stats = ArmStats.empty(2)
    policies.record(stats, 1, reward)
    assert stats.pulls.tolist() == [0, pulls]
    assert stats.rewards.tolist() == [0.0, total]
    assert stats.successes.tolist() == [0.0, successes]
