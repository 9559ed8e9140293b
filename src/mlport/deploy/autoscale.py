"""How many replicas a version should run, from recent load samples.  Pure: time is passed in.

The controller samples each replica set once per interval (requests in flight, plus those waiting in the
gateway's queue of a deployment with ``max_concurrency``; replicas ready) and asks
:func:`desired_replicas` for the count.  Decisions need the load to hold for a while: a spike shorter than
``scale_up_after_s`` does not add a replica, and a replica is only removed after ``scale_down_after_s`` of
low load, one at a time.  The samples themselves are the memory: a step down waits until the window holds no
sample taken when more replicas were ready, so consecutive steps are a quiet period apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from mlport.core.bodies import Body, parse_body
from mlport.errors import InvalidInput

__all__ = ["MAX_REPLICAS", "LoadSample", "PolicyFields", "ScalePolicy", "desired_replicas"]

#: Most replicas one version may run.
MAX_REPLICAS = 64
#: Longest accepted wait before scaling up / down, in seconds.
MAX_SCALE_UP_S = 3600.0
MAX_SCALE_DOWN_S = 86400.0
MAX_TARGET_INFLIGHT = 10_000.0
#: Bounds of the gateway's admission limits (see :mod:`mlport.deploy.admission_gate`).
MAX_CONCURRENCY = 10_000
MAX_QUEUE = 100_000
MAX_QUEUE_TIMEOUT_S = 86_400.0


class PolicyFields(Body):
    """The fields of a scale policy and their bounds: the one definition the hub's API checks and documents.

    Every field is optional in a request (a change names only what it changes); the rules between fields
    are :meth:`ScalePolicy.validate`'s.
    """

    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS, description="replicas kept running (0: scale_to_zero)")
    max_replicas: int = Field(1, ge=0, le=MAX_REPLICAS, description="most replicas a version may run")
    target_inflight: float = Field(4.0, gt=0, le=MAX_TARGET_INFLIGHT, allow_inf_nan=False,
                                   description="requests in flight per ready replica above which more are wanted")
    scale_up_after_s: float = Field(2.0, ge=0, le=MAX_SCALE_UP_S, allow_inf_nan=False,
                                    description="how long the load must stay high before adding replicas")
    scale_down_after_s: float = Field(30.0, ge=0, le=MAX_SCALE_DOWN_S, allow_inf_nan=False,
                                      description="how long the load must stay low before removing one")
    scale_to_zero: bool = Field(False, description="stop every replica after scale_down_after_s without traffic")
    # the gateway's admission limits (mlport.deploy.admission_gate): queued requests count as load above
    max_concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY,
                                        description="requests forwarded at once per ready replica; more wait in "
                                                    "the deployment's queue (default: no limit, no queue)")
    max_queue: int | None = Field(None, ge=0, le=MAX_QUEUE,
                                  description="requests that may wait per version; beyond, refused at once with "
                                              "overload_status and Retry-After (default: no bound)")
    queue_timeout_s: float | None = Field(None, gt=0, le=MAX_QUEUE_TIMEOUT_S, allow_inf_nan=False,
                                          description="longest wait in the queue; then refused unsent (503/429)")
    overload_status: Literal[503, 429] = Field(503, description="HTTP status of a refusal: 503 or 429")


_KEYS = tuple(PolicyFields.model_fields)


@dataclass(frozen=True)
class ScalePolicy:
    """Replica bounds and the load each replica should carry (fields and bounds: :class:`PolicyFields`).

    ``target_inflight``: requests in flight per ready replica above which more replicas are wanted.
    ``scale_to_zero``: when nothing was in flight for ``scale_down_after_s``, a version at its minimum stops
    all replicas (the next request waits for one to start); ``min_replicas`` may be 0 only with it.
    """

    min_replicas: int = 1
    max_replicas: int = 1
    target_inflight: float = 4.0
    scale_up_after_s: float = 2.0
    scale_down_after_s: float = 30.0
    scale_to_zero: bool = False
    max_concurrency: int | None = None
    max_queue: int | None = None
    queue_timeout_s: float | None = None
    overload_status: int = 503

    @property
    def gated(self) -> bool:
        """Whether the gateway admits this deployment's requests through a queue."""
        return self.max_concurrency is not None

    def validate(self) -> ScalePolicy:
        """Raise :class:`~mlport.errors.InvalidInput` unless the policy is consistent; returns self."""
        parse_body(PolicyFields, self.to_json(), strict=True)
        if self.min_replicas == 0 and not self.scale_to_zero:
            raise InvalidInput("min_replicas may be 0 only with scale_to_zero")
        if self.max_replicas < max(self.min_replicas, 1):
            raise InvalidInput(f"max_replicas must be at least max(min_replicas, 1) = {max(self.min_replicas, 1)}")
        if self.max_concurrency is None and (self.max_queue is not None or self.queue_timeout_s is not None):
            raise InvalidInput("max_queue and queue_timeout_s need max_concurrency (requests forwarded at once per "
                               "replica; the others wait in the queue)")
        return self

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _KEYS}

    def updated(self, change: PolicyFields) -> ScalePolicy:
        """This policy with the fields ``change`` sets, validated.  Raising ``min_replicas`` above the current
        maximum without naming a maximum raises the maximum with it."""
        values = {**self.to_json(), **change.model_dump(exclude_unset=True)}
        if "min_replicas" in change.model_fields_set and "max_replicas" not in change.model_fields_set:
            values["max_replicas"] = max(self.max_replicas, change.min_replicas)
        return ScalePolicy(**values).validate()

    @classmethod
    def from_json(cls, data: Any) -> ScalePolicy:
        """A validated policy from JSON (any subset of the fields; the rest keep their defaults)."""
        if not isinstance(data, dict):
            raise InvalidInput("a scale policy must be a JSON object")
        unknown = sorted(str(k) for k in set(data) - set(_KEYS))
        if unknown:
            raise InvalidInput(f"unknown scale policy field(s): {', '.join(unknown)}")
        return cls().updated(parse_body(PolicyFields, data, strict=True))


@dataclass(frozen=True)
class LoadSample:
    """One observation of a replica set: when (monotonic seconds), requests in flight, replicas ready."""

    at: float
    inflight: int
    replicas: int


def desired_replicas(policy: ScalePolicy, samples: Sequence[LoadSample], current: int, now: float) -> int:
    """The replica count wanted now, given the recent ``samples`` (oldest first) and the ``current`` count.

    - Outside [min, max] (the policy changed): back inside at once (0 stays 0 with ``scale_to_zero``).
    - At 0 with ``scale_to_zero``: one replica (or ``min_replicas``) as soon as the latest sample shows a
      request waiting.
    - Up: when inflight per ready replica stayed above ``target_inflight`` for ``scale_up_after_s``, to
      ``ceil(mean inflight / target_inflight)``, capped at ``max_replicas``.
    - Down: when ``ceil(highest inflight / target_inflight)`` stayed below ``current`` for ``scale_down_after_s``,
      by one replica (never below ``max(min_replicas, 1)``).
    - To zero: with ``scale_to_zero``, at the floor, after ``scale_down_after_s`` with nothing in flight.

    "Stayed for W seconds" needs a sample taken at or before ``now - W`` (the state at the window's start) and
    holds for it and every later sample.
    """
    samples = list(samples)  # any sequence (the controller keeps a deque, which does not slice)
    floor = max(policy.min_replicas, 1)
    if current <= 0:
        if not policy.scale_to_zero:
            return floor
        latest = samples[-1] if samples else None
        return floor if latest is not None and latest.inflight > 0 else 0
    if current > policy.max_replicas:
        return policy.max_replicas
    if current < policy.min_replicas:
        return policy.min_replicas

    up = _window(samples, now, policy.scale_up_after_s)
    if up and all(s.inflight > policy.target_inflight * max(s.replicas, 1) for s in up):
        mean = sum(s.inflight for s in up) / len(up)
        need = min(policy.max_replicas, math.ceil(mean / policy.target_inflight))
        if need > current:
            return need

    down = _window(samples, now, policy.scale_down_after_s)
    if not down or any(s.replicas > current for s in down):
        return current
    if policy.scale_to_zero and current <= floor and all(s.inflight == 0 for s in down):
        return 0
    need = max(floor, math.ceil(max(s.inflight for s in down) / policy.target_inflight))
    return current - 1 if need < current else current


def _window(samples: Sequence[LoadSample], now: float, length: float) -> list[LoadSample]:
    """The samples describing [now - length, now]: the last one taken at or before the start, and all later
    ones; empty when no sample is that old (not observed long enough)."""
    start = now - length
    first = None
    for i in range(len(samples) - 1, -1, -1):
        if samples[i].at <= start:
            first = i
            break
    if first is None:
        return []
    return [samples[i] for i in range(first, len(samples)) if samples[i].at <= now]

