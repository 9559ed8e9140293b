"""What a deployment should serve: a model, its main version and an optional second version with a strategy.

A :class:`Target` is a plain value: the hub stores it as JSON (:meth:`Target.to_json`), reads it back
(:meth:`Target.from_json`, which also validates) and hands it to the controller (which runs replicas for
:meth:`Target.versions`) and to the gateway (which routes each request with :func:`mlport.deploy.strategy.choose`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from mlport.errors import InvalidInput, valid_name

__all__ = ["MAX_VERSION", "STRATEGIES", "Target"]

#: The known routing strategies.
STRATEGIES = ("single", "canary", "ab", "shadow")
#: Strategies that need a second version.
_TWO_VERSIONS = frozenset({"canary", "ab", "shadow"})
#: Largest version number accepted (versions are numbered 1, 2, ... per model).
MAX_VERSION = 1_000_000_000
#: An HTTP header name (RFC 9110 token characters), at most 64 of them.
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_KEYS = frozenset({"model", "primary", "strategy", "candidate", "percent", "sticky_header"})


@dataclass(frozen=True)
class Target:
    """A deployment's wanted state.

    ``primary`` serves the main traffic.  ``candidate`` is the second version: for ``canary`` it receives
    ``percent`` % of the requests, for ``ab`` the requests whose routing key hashes below ``percent`` (or
    ``percent`` % of keyless requests), for ``shadow`` a copy of every request whose answer is only compared.
    ``sticky_header`` names the request header whose value pins a caller to one version (``ab``, and
    ``canary`` when set).
    """

    model: str
    primary: int
    strategy: str = "single"
    candidate: int | None = None
    percent: float = 0.0
    sticky_header: str | None = None

    def versions(self) -> list[int]:
        """The versions this target needs running: primary first, then the candidate (if any)."""
        if self.candidate is None or self.candidate == self.primary:
            return [self.primary]
        return [self.primary, self.candidate]

    def validate(self) -> Target:
        """Raise :class:`~mlport.errors.InvalidInput` unless this target is complete and consistent; returns self."""
        valid_name(self.model, "model")
        _version(self.primary, "primary")
        if self.strategy not in STRATEGIES:
            raise InvalidInput(f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.strategy in _TWO_VERSIONS:
            if self.candidate is None:
                raise InvalidInput(f"strategy {self.strategy!r} needs a candidate version")
            _version(self.candidate, "candidate")
            if self.candidate == self.primary:
                raise InvalidInput(f"the candidate version must differ from the primary version ({self.primary})")
        elif self.candidate is not None:
            raise InvalidInput("strategy 'single' serves one version: leave the candidate empty")
        if isinstance(self.percent, bool) or not isinstance(self.percent, int | float):
            raise InvalidInput("percent must be a number from 0 to 100")
        if not math.isfinite(self.percent) or not 0.0 <= self.percent <= 100.0:
            raise InvalidInput(f"percent must be from 0 to 100, not {self.percent}")
        if self.sticky_header is not None and (
            not isinstance(self.sticky_header, str) or not _HEADER.fullmatch(self.sticky_header)
        ):
            raise InvalidInput("sticky_header must be an HTTP header name (1-64 letters, digits, '-', ...)")
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "primary": self.primary,
            "strategy": self.strategy,
            "candidate": self.candidate,
            "percent": self.percent,
            "sticky_header": self.sticky_header,
        }

    @classmethod
    def from_json(cls, data: Any) -> Target:
        """A validated target from its JSON form (the keys of :meth:`to_json`; only model and primary required)."""
        if not isinstance(data, dict):
            raise InvalidInput("a target must be a JSON object")
        unknown = sorted(str(k) for k in set(data) - _KEYS)
        if unknown:
            raise InvalidInput(f"unknown target field(s): {', '.join(unknown)}")
        for key in ("model", "primary"):
            if data.get(key) is None:
                raise InvalidInput(f"the target needs '{key}'")
        model = data["model"]
        if not isinstance(model, str):
            raise InvalidInput("model must be a string")
        strategy = data.get("strategy", "single")
        if not isinstance(strategy, str):
            raise InvalidInput("strategy must be a string")
        percent = data.get("percent", 0.0)
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise InvalidInput("percent must be a number from 0 to 100")
        sticky = data.get("sticky_header")
        if sticky is not None and not isinstance(sticky, str):
            raise InvalidInput("sticky_header must be a string")
        candidate = data.get("candidate")
        target = cls(
            model=model,
            primary=_version(data["primary"], "primary"),
            strategy=strategy,
            candidate=None if candidate is None else _version(candidate, "candidate"),
            percent=float(percent),
            sticky_header=sticky or None,
        )
        return target.validate()


def _version(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise InvalidInput(f"{what} must be a version number (an integer from 1 to {MAX_VERSION}), not {value!r}")
    return value
