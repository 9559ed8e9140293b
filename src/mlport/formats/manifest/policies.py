"""Routing policies of a manifest router: which child answers a request.  Pure functions.

Each takes what it decides from as arguments: the cumulative weights, the routing key, the arms' statistics
and the random generator (so tests can seed it). The router owns the state and the lock around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlport.core.keyhash import key_point

__all__ = ["ArmStats", "cumulative", "epsilon_greedy", "record", "sticky", "thompson", "weighted"]


@dataclass(frozen=True)
class ArmStats:
    """What a bandit router has learnt per child: feedback count, summed reward, and rewards clipped to [0, 1]."""

    pulls: np.ndarray[Any, np.dtype[np.int64]]
    rewards: np.ndarray[Any, np.dtype[np.float64]]
    successes: np.ndarray[Any, np.dtype[np.float64]]

    @classmethod
    def empty(cls, arms: int) -> ArmStats:
        return cls(np.zeros(arms, dtype=np.int64), np.zeros(arms, dtype=np.float64), np.zeros(arms, dtype=np.float64))


def cumulative(weights: list[float] | None, arms: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The cumulative shares of ``weights`` (equal shares when ``None``), ending at 1."""
    w = np.asarray(weights or [1.0] * arms, dtype=np.float64)
    out: np.ndarray[Any, np.dtype[np.float64]] = np.cumsum(w / w.sum())
    return out


def _arm_at(cum: np.ndarray[Any, np.dtype[np.float64]], point: float) -> int:
    return int(np.searchsorted(cum, point, side="right").clip(0, len(cum) - 1))


def weighted(cum: np.ndarray[Any, np.dtype[np.float64]], rand: float) -> int:
    """The child whose share holds ``rand``, a uniform draw from [0, 1)."""
    return _arm_at(cum, rand)


def sticky(cum: np.ndarray[Any, np.dtype[np.float64]], key: str) -> int:
    """The child whose share holds the key's stable hash: one key always gets one child."""
    return _arm_at(cum, key_point(key))


def epsilon_greedy(stats: ArmStats, epsilon: float, rng: np.random.Generator) -> int:
    """Each child once first; then a random child with probability ``epsilon``, else the best mean reward."""
    untried = np.flatnonzero(stats.pulls == 0)
    if untried.size:
        return int(untried[0])
    if rng.random() < epsilon:
        return int(rng.integers(len(stats.pulls)))
    return int(np.argmax(stats.rewards / stats.pulls))


def thompson(stats: ArmStats, rng: np.random.Generator) -> int:
    """The child with the highest draw from its Beta(successes + 1, failures + 1) posterior."""
    failures = np.maximum(stats.pulls - stats.successes, 0.0)
    draws = rng.beta(stats.successes + 1.0, failures + 1.0)
    return int(np.argmax(draws))


def record(stats: ArmStats, arm: int, reward: float) -> None:
    """Count ``reward`` for ``arm`` (in place: the router holds its lock around it)."""
    stats.pulls[arm] += 1
    stats.rewards[arm] += reward
    stats.successes[arm] += min(max(reward, 0.0), 1.0)
