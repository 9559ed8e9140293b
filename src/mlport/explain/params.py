"""The bounds of explanations (server defaults) and what a request's parameters may ask within them.

The server's bounds (:class:`ExplainLimits`, from ``mlport serve --explain-*``) are the most a request gets;
its parameters may only lower them (a larger value is refused with 400, naming the bound):

- ``max_rows``: rows explained in one request (more rows: 413);
- ``max_evaluations``: rows the model is run on, over the whole explanation (background rows times coalitions
  for SHAP, occluded images for occlusion);
- ``timeout_s``: seconds the explanation may run (beyond: 504).

Other parameters: ``method`` (``tree_shap``, ``kernel_shap`` or ``occlusion``; left out, the model decides),
``background`` (rows of feature values; JSON text over gRPC), ``background_rows``, ``nsamples`` (coalitions per
row for Kernel SHAP), ``patch``, ``stride``, ``baseline`` (``mean`` or ``zeros``) and ``element`` (which element of
a wide output to explain).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from mlport.errors import InvalidInput

__all__ = ["ExplainLimits", "ExplainParams", "parse_params"]


@dataclass(frozen=True, slots=True)
class ExplainLimits:
    """What one explanation may take at most, and the threads explanations run on."""

    #: Threads running explanations (apart from the prediction threads).
    threads: int = 1
    #: Explanations waiting for a thread, at most; beyond, 503 with Retry-After.
    max_queue: int = 8
    #: Rows one request may ask to explain.
    max_rows: int = 16
    #: Rows the model may be run on for one explanation.
    max_evaluations: int = 500_000
    #: Seconds one explanation may run.
    timeout_s: float = 30.0
    #: Background rows a request may send or ask for.
    max_background_rows: int = 200
    #: Background rows taken from the reference profile when the request does not say.
    background_rows: int = 50
    #: Rows per model call (background-expanded rows, occluded images).
    chunk_rows: int = 4096


@dataclass(frozen=True, slots=True)
class ExplainParams:
    """One request's bounds and choices, checked."""

    max_rows: int
    max_evaluations: int
    timeout_s: float
    method: str | None = None
    background: Any = None
    background_rows: int = 50
    nsamples: int | None = None
    patch: int | None = None
    stride: int | None = None
    baseline: str = "mean"
    element: int | None = None


METHODS = ("tree_shap", "kernel_shap", "occlusion")


def _int(params: dict[str, Any], key: str, low: int, high: int, default: int | None) -> int | None:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"parameter '{key}' is {value!r}; give a whole number from {low} to {high}")
    return value


def _bounded(params: dict[str, Any], key: str, limit: int) -> int:
    found = _int(params, key, 1, limit, limit)
    assert found is not None
    return found


def parse_params(params: dict[str, Any] | None, limits: ExplainLimits) -> ExplainParams:
    """The request's parameters, checked against the server's bounds (400 naming the parameter)."""
    p = params or {}
    timeout = p.get("timeout_s", limits.timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= limits.timeout_s \
            or not math.isfinite(timeout):
        raise InvalidInput(f"parameter 'timeout_s' is {timeout!r}; give seconds, more than 0 and at most "
                           f"{limits.timeout_s:g} (the server's bound)")
    method = p.get("method")
    if method is not None and method not in METHODS:
        raise InvalidInput(f"parameter 'method' is {method!r}; give one of {', '.join(METHODS)} (or leave it out)")
    baseline = p.get("baseline", "mean")
    if baseline not in ("mean", "zeros"):
        raise InvalidInput(f"parameter 'baseline' is {baseline!r}; give 'mean' or 'zeros'")
    background = p.get("background")
    if isinstance(background, str):  # gRPC parameters carry it as JSON text
        try:
            background = json.loads(background)
        except ValueError:
            raise InvalidInput("parameter 'background' is not JSON: give a list of rows") from None
    if background is not None and not isinstance(background, list):
        raise InvalidInput("parameter 'background' must be a list of rows, each a list of feature values")
    return ExplainParams(
        max_rows=_bounded(p, "max_rows", limits.max_rows),
        max_evaluations=_bounded(p, "max_evaluations", limits.max_evaluations),
        timeout_s=float(timeout),
        method=method,
        background=background,
        background_rows=_int(p, "background_rows", 1, limits.max_background_rows,
                             min(limits.background_rows, limits.max_background_rows)) or 1,
        nsamples=_int(p, "nsamples", 1, 100_000, None),
        patch=_int(p, "patch", 1, 4096, None),
        stride=_int(p, "stride", 1, 4096, None),
        baseline=str(baseline),
        element=_int(p, "element", 0, 1_000_000, None),
    )
