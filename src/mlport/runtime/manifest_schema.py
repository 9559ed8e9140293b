"""The manifest file: a YAML or JSON graph of evaluators served as one model.

A manifest is a mapping with exactly one node key at the top (``flow``, ``ensemble``, ``router``,
``cascade`` or ``transformer``), plus an optional ``name`` and ``outputs``. Nodes nest: wherever a node
is expected, a mapping with one of these keys may stand:

- ``model: PATH``: a model file or folder of any format, relative to the manifest's folder (its
  ``<stem>.model.yaml`` applies; ``config:`` may give the same keys inline);
- ``tokenizer: PATH``: a ``tokenizer.json`` (the tokenizer format);
- ``transform: PATH``: a Python file (the Python evaluator format; trusted manifests only);
- ``manifest: PATH``: another manifest file;
- ``flow: [step, ...]``: steps run in order, each feeding later ones by tensor name; a step may map
  its inputs (``inputs: {its_input: source_tensor}``) and rename its outputs (``outputs: {its_output: new}``);
- ``ensemble: {children: [...], combine: mean | weighted_mean | vote | python, weights, combiner}``;
- ``router: {children: [...], strategy: weighted | sticky | epsilon_greedy | thompson, weights, key,
  epsilon, seed}``;
- ``cascade: {first: node, fallback: node, confidence: {output, threshold}}``;
- ``transformer: {pre: node, node: node, post: node}``.

Every child may carry a ``name`` (used in errors, response parameters and metrics).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["NODE_KEYS", "TOP_KEYS", "CascadeSpec", "ConfidenceSpec", "EnsembleSpec", "RouterSpec", "TransformerSpec"]

#: Keys that make a mapping a node, and those that may stand at a manifest's top level.
NODE_KEYS = ("model", "tokenizer", "transform", "manifest", "flow", "ensemble", "router", "cascade", "transformer")
TOP_KEYS = ("flow", "ensemble", "router", "cascade", "transformer")
MAX_CHILDREN = 64
MAX_STEPS = 64
MAX_DEPTH = 16


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnsembleSpec(_Spec):
    children: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_CHILDREN)
    combine: Literal["mean", "weighted_mean", "vote", "python"] = "mean"
    weights: list[float] | None = None
    #: A Python file with ``combine(outputs: list[dict[str, ndarray]]) -> dict[str, ndarray]`` (trusted only).
    combiner: str | None = None
    #: The outputs to give (default: those every child gives).
    outputs: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> EnsembleSpec:
        if self.combine == "weighted_mean":
            if self.weights is None or len(self.weights) != len(self.children):
                raise ValueError("weights: weighted_mean needs one weight per child")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights: each >= 0, with a positive sum")
        if self.combine == "python" and not self.combiner:
            raise ValueError("combiner: combine: python needs 'combiner: file.py'")
        return self


class RouterSpec(_Spec):
    children: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_CHILDREN)
    strategy: Literal["weighted", "sticky", "epsilon_greedy", "thompson"] = "weighted"
    weights: list[float] | None = None
    #: For ``sticky``: where the key comes from: ``header`` (X-Routing-Key / the routing_key parameter),
    #: or ``input:NAME`` (the first value of that input).
    key: str = "header"
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)
    seed: int | None = None
    #: Feedback is kept for this many recent requests.
    remember: int = Field(default=100_000, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _check(self) -> RouterSpec:
        if self.weights is not None:
            if len(self.weights) != len(self.children):
                raise ValueError("weights: give one weight per child")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights: each >= 0, with a positive sum")
        if not (self.key == "header" or self.key.startswith("input:")):
            raise ValueError("key: 'header' or 'input:NAME'")
        return self


class ConfidenceSpec(_Spec):
    #: The output of the first model that holds its confidence: per row, the largest value over the other axes.
    output: str
    threshold: float


class CascadeSpec(_Spec):
    first: dict[str, Any]
    fallback: dict[str, Any]
    confidence: ConfidenceSpec


class TransformerSpec(_Spec):
    pre: dict[str, Any] | None = None
    node: dict[str, Any]
    post: dict[str, Any] | None = None
