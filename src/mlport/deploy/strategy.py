"""Routing: which version answers a request (and which one gets a shadow copy).  Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from mlport.core.keyhash import key_point
from mlport.deploy.target import Target

__all__ = ["Choice", "bucket", "choose"]


@dataclass(frozen=True)
class Choice:
    """``serve`` answers the request; ``shadow`` (when set) gets a copy whose answer is only recorded."""

    serve: int
    shadow: int | None = None


def bucket(key: str) -> float:
    """A stable position in [0, 100) for a routing key (:func:`mlport.core.keyhash.key_point`)."""
    return key_point(key, 100.0)


def choose(target: Target, *, key: str | None, rand: float) -> Choice:
    """The versions that serve one request.

    ``rand`` is a uniform draw from [0, 1) made by the caller (so tests can seed it); ``key`` is the value of the
    routing header when the request had one.

    - single: the primary version.
    - canary: the candidate for ``percent`` % of the requests, drawn with ``rand``; when the target has a
      ``sticky_header`` and a key was given, the key's hash decides instead, so one caller always gets one version.
    - ab: the key's hash decides (below ``percent`` -> candidate); requests without a key are drawn with ``rand``.
    - shadow: the primary answers, the candidate gets a copy.
    """
    candidate = target.candidate
    if candidate is None or target.strategy == "single":
        return Choice(target.primary)
    if target.strategy == "shadow":
        return Choice(target.primary, shadow=candidate)
    if target.strategy == "ab" or (target.strategy == "canary" and target.sticky_header):
        point = bucket(key) if key is not None else _point(rand)
    else:
        point = _point(rand)
    return Choice(candidate if point < target.percent else target.primary)


def _point(rand: float) -> float:
    return min(max(rand, 0.0), 1.0) * 100.0
