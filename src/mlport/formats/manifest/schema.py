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

The node tree is a discriminated union of typed models, told apart by the one node key each mapping has.
:func:`parse_node` validates a whole tree and names the step of every problem it finds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from mlport.errors import InvalidInput

__all__ = [
    "MAX_CHILDREN",
    "MAX_DEPTH",
    "MAX_STEPS",
    "NODE_KEYS",
    "TOP_KEYS",
    "CascadeSpec",
    "ConfidenceSpec",
    "EnsembleSpec",
    "FlowNodeSpec",
    "LeafSpec",
    "ManifestError",
    "ManifestRefSpec",
    "NodeSpec",
    "RouterSpec",
    "TransformerSpec",
    "parse_node",
]

#: Keys that make a mapping a node, and those that may stand at a manifest's top level.
NODE_KEYS = ("model", "tokenizer", "transform", "manifest", "flow", "ensemble", "router", "cascade", "transformer")
TOP_KEYS = ("flow", "ensemble", "router", "cascade", "transformer")
MAX_CHILDREN = 64
MAX_STEPS = 64
MAX_DEPTH = 16


class ManifestError(InvalidInput):
    """A manifest that does not fit together; the message names the step and the field."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------- nodes
class _NodeBase(_Spec):
    #: The node key that selects this model in the union.
    kind: ClassVar[str]
    name: str | None = None
    #: In a flow: the node's inputs mapped onto tensors of the flow, ``{its_input: source_tensor}``.
    inputs: dict[str, str] | None = None
    #: In a flow: renames of the node's outputs, ``{its_output: new}``; on a flow of its own: the outputs to give.
    outputs: dict[str, str] | list[str] | None = None

    @property
    def path(self) -> str | None:
        """The file a leaf or an included manifest names."""
        return None


class _FileSpec(_NodeBase):
    """A node that names a file: its node key holds the path."""

    @property
    def path(self) -> str:
        value: str = getattr(self, self.kind)
        return value


class _LeafSpec(_FileSpec):
    #: ``model.yaml`` keys given inline, over those of the file's own config.
    config: dict[str, Any] | None = None


class ModelSpec(_LeafSpec):
    kind: ClassVar[str] = "model"
    model: str = Field(min_length=1)


class TokenizerSpec(_LeafSpec):
    kind: ClassVar[str] = "tokenizer"
    tokenizer: str = Field(min_length=1)


class TransformSpec(_LeafSpec):
    kind: ClassVar[str] = "transform"
    transform: str = Field(min_length=1)


LeafSpec = ModelSpec | TokenizerSpec | TransformSpec


class ManifestRefSpec(_FileSpec):
    kind: ClassVar[str] = "manifest"
    manifest: str = Field(min_length=1)


class FlowNodeSpec(_NodeBase):
    kind: ClassVar[str] = "flow"
    flow: list[NodeSpec] = Field(min_length=1, max_length=MAX_STEPS)


def _check_weights(weights: list[float] | None, children: int, count_error: str) -> None:
    if weights is None or len(weights) != children:
        raise ValueError(count_error)
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights: each >= 0, with a positive sum")


class EnsembleSpec(_Spec):
    children: list[NodeSpec] = Field(min_length=1, max_length=MAX_CHILDREN)
    combine: Literal["mean", "weighted_mean", "vote", "python"] = "mean"
    weights: list[float] | None = None
    #: A Python file with ``combine(outputs: list[dict[str, ndarray]]) -> dict[str, ndarray]`` (trusted only).
    combiner: str | None = None
    #: The outputs to give (default: those every child gives).
    outputs: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> EnsembleSpec:
        if self.combine == "weighted_mean":
            _check_weights(self.weights, len(self.children), "weights: weighted_mean needs one weight per child")
        if self.combine == "python" and not self.combiner:
            raise ValueError("combiner: combine: python needs 'combiner: file.py'")
        return self


class EnsembleNodeSpec(_NodeBase):
    kind: ClassVar[str] = "ensemble"
    ensemble: EnsembleSpec


class RouterSpec(_Spec):
    children: list[NodeSpec] = Field(min_length=1, max_length=MAX_CHILDREN)
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
            _check_weights(self.weights, len(self.children), "weights: give one weight per child")
        if not (self.key == "header" or self.key.startswith("input:")):
            raise ValueError("key: 'header' or 'input:NAME'")
        return self


class RouterNodeSpec(_NodeBase):
    kind: ClassVar[str] = "router"
    router: RouterSpec


class ConfidenceSpec(_Spec):
    #: The output of the first model that holds its confidence: per row, the largest value over the other axes.
    output: str
    threshold: float


class CascadeSpec(_Spec):
    first: NodeSpec
    fallback: NodeSpec
    confidence: ConfidenceSpec


class CascadeNodeSpec(_NodeBase):
    kind: ClassVar[str] = "cascade"
    cascade: CascadeSpec


class TransformerSpec(_Spec):
    pre: NodeSpec | None = None
    node: NodeSpec
    post: NodeSpec | None = None


class TransformerNodeSpec(_NodeBase):
    kind: ClassVar[str] = "transformer"
    transformer: TransformerSpec


_MODELS: tuple[type[_NodeBase], ...] = (
    ModelSpec, TokenizerSpec, TransformSpec, ManifestRefSpec, FlowNodeSpec,
    EnsembleNodeSpec, RouterNodeSpec, CascadeNodeSpec, TransformerNodeSpec,
)


def _kinds(raw: dict[Any, Any]) -> list[str]:
    return [k for k in NODE_KEYS if k in raw]


def node_kind(raw: Any) -> str | None:
    """The node key of a mapping (or of a validated node); ``None`` when it has not exactly one."""
    if isinstance(raw, _NodeBase):
        return raw.kind
    if isinstance(raw, dict):
        kinds = _kinds(raw)
        return kinds[0] if len(kinds) == 1 else None
    return None


def _one_node_key(raw: Any) -> Any:
    if isinstance(raw, _NodeBase):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping with one of {', '.join(NODE_KEYS)}")
    if len(_kinds(raw)) != 1:
        unknown = [k for k in raw if k not in (*NODE_KEYS, "name", "inputs", "outputs", "config")]
        hint = f" (unknown step type {', '.join(repr(k) for k in unknown)})" if unknown else ""
        raise ValueError(f"a step has exactly one of {', '.join(NODE_KEYS)}{hint}")
    return raw


NodeSpec = Annotated[
    Annotated[ModelSpec, Tag("model")]
    | Annotated[TokenizerSpec, Tag("tokenizer")]
    | Annotated[TransformSpec, Tag("transform")]
    | Annotated[ManifestRefSpec, Tag("manifest")]
    | Annotated[FlowNodeSpec, Tag("flow")]
    | Annotated[EnsembleNodeSpec, Tag("ensemble")]
    | Annotated[RouterNodeSpec, Tag("router")]
    | Annotated[CascadeNodeSpec, Tag("cascade")]
    | Annotated[TransformerNodeSpec, Tag("transformer")],
    Discriminator(node_kind),
    BeforeValidator(_one_node_key),
]

_SPECS: tuple[type[BaseModel], ...] = (*_MODELS, EnsembleSpec, RouterSpec, CascadeSpec, TransformerSpec)
for _model in _SPECS:
    _model.model_rebuild()
_NODE: TypeAdapter[NodeSpec] = TypeAdapter(NodeSpec)


# ------------------------------------------------------------------------------------------- errors
def step_label(raw: Any, where: str) -> str:
    """``where`` with the step's name (or the stem of the file it names) quoted after it."""
    if isinstance(raw, dict):
        name = raw.get("name")
        if isinstance(name, str) and name:
            return f"{where} '{name}'"
        kind = node_kind(raw)
        value = raw.get(kind) if kind else None
        if isinstance(value, str) and value:
            return f"{where} '{Path(value).stem}'"
    return where


#: Per node key: the fields that hold child nodes, a list of them when True.
_CHILDREN: dict[str, dict[str, bool]] = {
    "flow": {},
    "ensemble": {"children": True},
    "router": {"children": True},
    "cascade": {"first": False, "fallback": False},
    "transformer": {"pre": False, "node": False, "post": False},
}


def _locate(raw: Any, here: str, loc: tuple[int | str, ...]) -> tuple[str, tuple[int | str, ...]]:
    """The step a validation error's location points into (named as the loader names it), and the rest."""
    i = 0
    while True:
        kind = node_kind(raw)
        if kind is None:
            return here, loc[i:]
        i += 1 if loc[i:i + 1] == (kind,) else 0  # the union's tag
        rest = loc[i:]
        if kind == "flow" and len(rest) >= 2 and rest[0] == "flow" and isinstance(rest[1], int):
            raw, here, i = raw["flow"][rest[1]], f"{here} step {rest[1] + 1}", i + 2
        elif (kind in _CHILDREN and len(rest) >= 2 and rest[0] == kind
              and isinstance(rest[1], str) and rest[1] in _CHILDREN[kind]):
            if _CHILDREN[kind][rest[1]]:
                if len(rest) < 3 or not isinstance(rest[2], int):
                    return here, rest
                raw, here, i = raw[kind][rest[1]][rest[2]], f"{here} child {rest[2] + 1}", i + 3
            else:
                raw, here, i = raw[kind][rest[1]], f"{here} {rest[1]}", i + 2
        else:
            # a composite's settings sit under its node key: name them as in its own mapping
            return here, rest[1:] if kind in _CHILDREN and kind != "flow" and rest[:1] == (kind,) else rest
        here = step_label(raw, here)


def _problem(raw: Any, here: str, error: Any) -> str:
    where, rest = _locate(raw, here, tuple(error["loc"]))
    field = ".".join(str(p) for p in rest)
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key {field}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"


def parse_node(raw: Any, here: str) -> NodeSpec:
    """``raw`` as a typed node tree; a :class:`ManifestError` naming the step of each problem otherwise."""
    try:
        return _NODE.validate_python(raw)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_problem(raw, here, e) for e in exc.errors()[:8]))
        raise ManifestError("; ".join(problems)) from None
