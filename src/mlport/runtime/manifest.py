"""Manifests: flows, ensembles, routers, cascades and transformers of evaluators, served as one model.

The file format is described in :mod:`mlport.runtime.manifest_schema`. Loading builds a tree of nodes,
each with a signature derived from its children, and checks every name and datatype on the way: a
manifest that does not fit together fails at load time with a message naming the step and the field.

Steps of a flow pass numpy arrays to each other in process (nothing is re-encoded); children of an
ensemble run concurrently on a thread pool (the libraries release the GIL while they compute).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from pydantic import ValidationError

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.validate import check_inputs
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, ModelFormat, RequestContext, UntrustedModel
from mlport.formats.registry import FormatRegistry, default_registry
from mlport.runtime.adapt import adapt
from mlport.runtime.config import ModelConfig, load_model_config
from mlport.runtime.manifest_schema import (
    MAX_DEPTH,
    MAX_STEPS,
    NODE_KEYS,
    TOP_KEYS,
    CascadeSpec,
    EnsembleSpec,
    RouterSpec,
    TransformerSpec,
)

__all__ = ["ManifestError", "ManifestEvaluator", "ManifestFormat"]

MAX_MANIFEST_BYTES = 1024 * 1024
_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(InvalidInput):
    """A manifest that does not fit together; the message names the step and the field."""


# ------------------------------------------------------------------------------------------- nodes
class Node(ABC):
    name: str
    signature: Signature

    @abstractmethod
    def run(self, inputs: Arrays, ctx: RequestContext) -> Arrays:
        """Outputs for inputs that match :attr:`signature` (already checked)."""

    def children(self) -> list[Node]:
        return []

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children():
            yield from child.walk()

    def close(self) -> None:
        for child in self.children():
            child.close()


def _step_error(name: str, exc: Exception) -> MlportError:
    if isinstance(exc, MlportError):
        return MlportError(f"step '{name}': {exc.message}", exc.code)
    return MlportError(f"step '{name}' failed: {type(exc).__name__}: {exc}", ErrorCode.INVALID_ARGUMENT)


class LeafNode(Node):
    """One evaluator (a model, tokenizer or Python transform)."""

    def __init__(self, name: str, evaluator: Evaluator) -> None:
        self.name = name
        self.evaluator = evaluator
        self.signature = evaluator.signature

    def run(self, inputs: Arrays, ctx: RequestContext) -> Arrays:
        try:
            feed = check_inputs(self.signature, inputs)
            out = self.evaluator.predict_in(feed, ctx)
        except Exception as exc:
            raise _step_error(self.name, exc) from exc
        return {k: np.asarray(v) for k, v in out.items()}

    def close(self) -> None:
        self.evaluator.close()


def _compatible(have: TensorSpec, want: TensorSpec) -> bool:
    return (have.datatype is DataType.BYTES) == (want.datatype is DataType.BYTES)


class Step:
    """A node inside a flow, with its input mapping and output renames."""

    def __init__(self, node: Node, inputs: dict[str, str], outputs: dict[str, str]) -> None:
        self.node = node
        self.inputs = inputs
        self.outputs = outputs


class FlowNode(Node):
    def __init__(self, name: str, steps: list[Step], wanted: list[str] | None) -> None:
        self.name = name
        self.steps = steps
        available: dict[str, TensorSpec] = {}
        produced: set[str] = set()
        inputs: dict[str, TensorSpec] = {}
        last: list[str] = []
        for i, step in enumerate(steps):
            node = step.node
            where = f"step {i + 1} ('{node.name}')"
            for field, names, known in (("inputs", step.inputs, node.signature.input_names),
                                        ("outputs", step.outputs, node.signature.output_names)):
                unknown = [k for k in names if k not in known]
                if unknown:
                    raise ManifestError(f"{where}: {field} maps {', '.join(repr(k) for k in unknown)}, which it does "
                                        f"not have; its {field}: {', '.join(known)}")
            for spec in node.signature.inputs:
                source = step.inputs.get(spec.name, spec.name)
                have = available.get(source)
                if have is None:
                    have = TensorSpec(source, spec.datatype, spec.shape)
                    available[source] = inputs[source] = have
                elif not _compatible(have, spec):
                    raise ManifestError(
                        f"{where}: input '{spec.name}' takes {spec.datatype.value}, but '{source}' is "
                        f"{have.datatype.value}"
                    )
            last = []
            for spec in node.signature.outputs:
                target = step.outputs.get(spec.name, spec.name)
                available[target] = TensorSpec(target, spec.datatype, spec.shape)
                produced.add(target)
                last.append(target)
        out_names = wanted or last
        unknown = [n for n in out_names if n not in available]
        if unknown:
            raise ManifestError(f"flow '{name}': outputs lists {', '.join(repr(n) for n in unknown)}, which no step "
                                f"gives; known: {', '.join(sorted(available))}")
        self.signature = Signature(tuple(inputs.values()), tuple(available[n] for n in out_names))

    def children(self) -> list[Node]:
        return [s.node for s in self.steps]

    def run(self, inputs: Arrays, ctx: RequestContext) -> Arrays:
        env: dict[str, np.ndarray[Any, Any]] = dict(inputs)
        for step in self.steps:
            feed = {s.name: env[step.inputs.get(s.name, s.name)] for s in step.node.signature.inputs}
            out = step.node.run(feed, ctx)
            for k, v in out.items():
                env[step.outputs.get(k, k)] = v
        return {s.name: env[s.name] for s in self.signature.outputs}


def _union_inputs(kind: str, children: list[Node]) -> tuple[TensorSpec, ...]:
    found: dict[str, TensorSpec] = {}
    for child in children:
        for spec in child.signature.inputs:
            have = found.get(spec.name)
            if have is None:
                found[spec.name] = spec
            elif not _compatible(have, spec):
                raise ManifestError(f"{kind}: children disagree on input '{spec.name}' "
                                    f"({have.datatype.value} and {spec.datatype.value} in '{child.name}')")
    return tuple(found.values())


def _common_outputs(kind: str, children: list[Node], wanted: list[str] | None) -> list[TensorSpec]:
    first = children[0].signature
    common = [o for o in first.outputs if all(c.signature.output(o.name) is not None for c in children)]
    if wanted is not None:
        by_name = {o.name: o for o in common}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ManifestError(f"{kind}: outputs lists {', '.join(repr(n) for n in unknown)}, which not every "
                                f"child gives; common outputs: {', '.join(by_name) or 'none'}")
        common = [by_name[n] for n in wanted]
    if not common:
        raise ManifestError(f"{kind}: the children have no output name in common")
    return common


def _feed(child: Node, inputs: Arrays) -> Arrays:
    return {s.name: inputs[s.name] for s in child.signature.inputs}


class EnsembleNode(Node):
    def __init__(self, name: str, spec: EnsembleSpec, children: list[Node], combiner: Evaluator | None) -> None:
        self.name = name
        self.spec = spec
        self._children = children
        self.combiner = combiner
        outputs = _common_outputs(f"ensemble '{name}'", children, spec.outputs)
        if spec.combine in ("mean", "weighted_mean"):
            bad = [o.name for o in outputs if o.datatype is DataType.BYTES]
            if bad:
                raise ManifestError(f"ensemble '{name}': combine {spec.combine} needs numbers; "
                                    f"{', '.join(bad)} is text (use vote, or list numeric outputs)")
            outputs = [o if o.datatype in (DataType.FP32, DataType.FP64) else
                       TensorSpec(o.name, DataType.FP64, o.shape) for o in outputs]
        if combiner is not None:
            outputs = list(combiner.signature.outputs)
        self.signature = Signature(_union_inputs(f"ensemble '{name}'", children), tuple(outputs))
        weights = spec.weights if spec.combine == "weighted_mean" and spec.weights else [1.0] * len(children)
        self._weights = np.asarray(weights, dtype=np.float64) / float(sum(weights))
        self._pool = ThreadPoolExecutor(max_workers=min(len(children), 8), thread_name_prefix="mlport-ensemble")

    def children(self) -> list[Node]:
        return self._children

    def run(self, inputs: Arrays, ctx: RequestContext) -> Arrays:
        futures = [self._pool.submit(c.run, _feed(c, inputs), ctx) for c in self._children]
        results = [f.result() for f in futures]
        if self.combiner is not None:
            return self._python(results, ctx)
        out: Arrays = {}
        for spec in self.signature.outputs:
            stack = np.stack([np.asarray(r[spec.name]) for r in results])
            if self.spec.combine == "vote":
                out[spec.name] = _vote(stack)
            else:
                w = self._weights.reshape((-1,) + (1,) * (stack.ndim - 1))
                out[spec.name] = (stack.astype(np.float64) * w).sum(axis=0).astype(spec.datatype.numpy)
        return out

    def _python(self, results: list[Arrays], ctx: RequestContext) -> Arrays:
        assert self.combiner is not None
        feed: Arrays = {}
        for i, r in enumerate(results):
            for k, v in r.items():
                feed[f"{k}_{i}"] = v
        try:
            return dict(self.combiner.predict_in(feed, ctx))
        except Exception as exc:
            raise _step_error(f"{self.name} combiner", exc) from exc

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)

    def close(self) -> None:
        self.shutdown()
        super().close()
        if self.combiner is not None:
            self.combiner.close()


def _vote(stack: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The most frequent value per element across axis 0; ties go to the earliest child."""
    k = stack.shape[0]
    counts = np.stack([(stack == stack[i]).sum(axis=0) for i in range(k)])
    winner = counts.argmax(axis=0)
    chosen: np.ndarray[Any, Any] = np.take_along_axis(stack, winner[None, ...], axis=0)[0]
    return chosen


class RouterNode(Node):
    """Sends each request to one child; bandit strategies learn from feedback rewards."""

    def __init__(self, name: str, spec: RouterSpec, children: list[Node]) -> None:
        self.name = name
        self.spec = spec
        self._children = children
        outputs = _common_outputs(f"router '{name}'", children, None)
        self.signature = Signature(_union_inputs(f"router '{name}'", children), tuple(outputs))
        weights = np.asarray(spec.weights or [1.0] * len(children), dtype=np.float64)
        self._cum = np.cumsum(weights / weights.sum())
        self._rng = np.random.default_rng(spec.seed)
        self._lock = threading.Lock()
        n = len(children)
        self.pulls = np.zeros(n, dtype=np.int64)
        self.rewards = np.zeros(n, dtype=np.float64)
        self.successes = np.zeros(n, dtype=np.float64)
        self._pending: OrderedDict[str, int] = OrderedDict()
        if spec.key.startswith("input:"):
            key_input = spec.key.split(":", 1)[1]
            if self.signature.input(key_input) is None:
                raise ManifestError(f"router '{name}': key input '{key_input}' is not an input of its children")

    def children(self) -> list[Node]:
        return self._children

    def _key(self, inputs: Arrays, ctx: RequestContext) -> str | None:
        if self.spec.key == "header":
            return ctx.routing_key
        arr = inputs.get(self.spec.key.split(":", 1)[1])
        if arr is None or arr.size == 0:
            return None
        value = arr.reshape(-1)[0]
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def choose(self, inputs: Arrays, ctx: RequestContext) -> int:
        strategy = self.spec.strategy
        with self._lock:
            if strategy == "sticky":
                key = self._key(inputs, ctx)
                if key is not None:
                    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
                    point = int.from_bytes(digest, "big") / 2.0**64
                    return int(np.searchsorted(self._cum, point, side="right").clip(0, len(self._children) - 1))
            if strategy == "epsilon_greedy":
                untried = np.flatnonzero(self.pulls == 0)
                if untried.size:
                    return int(untried[0])
                if self._rng.random() < self.spec.epsilon:
                    return int(self._rng.integers(len(self._children)))
                return int(np.argmax(self.rewards / self.pulls))
            if strategy == "thompson":
                failures = self.pulls - self.successes
                draws = self._rng.beta(self.successes + 1.0, np.maximum(failures, 0.0) + 1.0)
                return int(np.argmax(draws))
            point = self._rng.random()
            return int(np.searchsorted(self._cum, point, side="right").clip(0, len(self._children) - 1))

    def run(self, inputs: Arrays, ctx: RequestContext) -> Arrays:
        arm = self.choose(inputs, ctx)
        child = self._children[arm]
        if self.spec.strategy in ("epsilon_greedy", "thompson") and ctx.request_id:
            with self._lock:
                self._pending[ctx.request_id] = arm
                while len(self._pending) > self.spec.remember:
                    self._pending.popitem(last=False)
        routes = ctx.parameters.setdefault("routed_to", [])
        if isinstance(routes, list):
            routes.append(child.name)
        out = child.run(_feed(child, inputs), ctx)
        return {s.name: out[s.name] for s in self.signature.outputs}

    def feedback(self, request_id: str, reward: float) -> bool:
        """Record ``reward`` for the arm that answered ``request_id``; False when this router did not."""
        with self._lock:
            arm = self._pending.pop(request_id, None)
            if arm is None:
                return False
            self.pulls[arm] += 1
            self.rewards[arm] += reward
            self.successes[arm] += min(max(reward, 0.0), 1.0)
        return True


class CascadeNode(Node):
    """The first model answers where it is confident; the fallback answers the other rows."""

    def __init__(self, name: str, spec: CascadeSpec, first: Node, fallback: Node) -> None:
        self.name = name
        self.spec = spec
        self.first = first
        self.fallback = fallback
        conf = first.signature.output(spec.confidence.output)
        if conf is None:
            raise ManifestError(f"cascade '{name}': confidence.output '{spec.confidence.output}' is not an output of "
                                f"'{first.name}'; it gives: {', '.join(first.signature.output_names)}")
        if conf.datatype is DataType.BYTES:
            raise ManifestError(f"cascade '{name}': confidence.output '{conf.name}' must be numeric")
        outputs = _common_outputs(f"cascade '{name}'", [first, fallback], None)
        inputs = _union_inputs(f"cascade '{name}'", [first, fallback])
        unbatched = [s.name for s in inputs if not s.batched]
        if unbatched:
            raise ManifestError(f"cascade '{name}': input {', '.join(unbatched)} has no batch axis; "
                                "a cascade answers row by row")
        self.signature = Signature(inputs, tuple(outputs))

    def children(self) -> list[Node]:
        return [self.first, self.fallback]

    def run(self, inputs: Arrays, ctx: RequestContext) -> Arrays:
        out = self.first.run(_feed(self.first, inputs), ctx)
        conf = np.asarray(out[self.spec.confidence.output], dtype=np.float64)
        rows = conf.reshape(conf.shape[0], -1).max(axis=1) if conf.ndim > 1 else conf.reshape(-1)
        low = np.flatnonzero(rows < self.spec.confidence.threshold)
        result = {s.name: np.array(out[s.name], copy=True) for s in self.signature.outputs}
        if low.size:
            part = {k: v[low] for k, v in _feed(self.fallback, inputs).items()}
            back = self.fallback.run(part, ctx)
            for spec in self.signature.outputs:
                got = np.asarray(back[spec.name])
                target = result[spec.name]
                if target.shape[1:] != got.shape[1:]:
                    raise MlportError(
                        f"cascade '{self.name}': '{self.fallback.name}' gave '{spec.name}' with shape "
                        f"{list(got.shape)}, '{self.first.name}' {list(target.shape)}",
                        ErrorCode.INTERNAL,
                    )
                if target.dtype != got.dtype:
                    target = result[spec.name] = target.astype(np.result_type(target.dtype, got.dtype))
                target[low] = got
        answered = np.full(rows.shape[0], self.first.name, dtype=object)
        answered[low] = self.fallback.name
        ctx.parameters["answered_by"] = answered.tolist()
        return result


# ------------------------------------------------------------------------------------------- loading
class _Loader:
    def __init__(self, root: Path, options: LoadOptions, formats: FormatRegistry) -> None:
        self.root = root.resolve()
        self.options = options
        self.formats = formats
        self.opened: list[Node] = []
        self.composites: list[Node] = []
        self._stack: list[Path] = []
        self._names = itertools.count(1)

    def path(self, value: Any, where: str, field: str) -> Path:
        if not isinstance(value, str) or not value:
            raise ManifestError(f"{where}: '{field}' must be a path")
        target = (self.root / value).resolve()
        try:
            target.relative_to(self.root)
        except ValueError:
            raise ManifestError(f"{where}: '{field}: {value}' is outside the manifest's folder") from None
        if not target.exists():
            raise ManifestError(f"{where}: '{field}: {value}' does not exist")
        return target

    def manifest(self, path: Path, where: str) -> Node:
        if path in self._stack:
            chain = " -> ".join(p.name for p in [*self._stack, path])
            raise ManifestError(f"{where}: manifests include each other in a cycle: {chain}")
        if len(self._stack) >= MAX_DEPTH:
            raise ManifestError(f"{where}: manifests nest deeper than {MAX_DEPTH}")
        doc = read_manifest(path)
        self._stack.append(path)
        try:
            return self.top(doc, path.stem)
        finally:
            self._stack.pop()

    def top(self, doc: dict[str, Any], default_name: str) -> Node:
        keys = [k for k in TOP_KEYS if k in doc]
        if len(keys) != 1:
            raise ManifestError(f"a manifest has exactly one of {', '.join(TOP_KEYS)} at the top; found "
                                f"{', '.join(keys) or 'none'}")
        extra = set(doc) - {keys[0], "name", "outputs", "description"}
        if extra:
            raise ManifestError(f"unknown manifest key {', '.join(sorted(extra))}")
        wanted = doc.get("outputs")
        if wanted is not None and not (isinstance(wanted, list) and all(isinstance(w, str) for w in wanted)):
            raise ManifestError("'outputs' must be a list of output names")
        return self.node({keys[0]: doc[keys[0]], "name": str(doc.get("name") or default_name),
                          **({"outputs": wanted} if wanted is not None and keys[0] == "flow" else {})}, "manifest", 0)

    def node(self, raw: Any, where: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ManifestError(f"{where}: nodes nest deeper than {MAX_DEPTH}")
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected a mapping with one of {', '.join(NODE_KEYS)}")
        kinds = [k for k in NODE_KEYS if k in raw]
        if len(kinds) != 1:
            unknown = [k for k in raw if k not in (*NODE_KEYS, "name", "inputs", "outputs", "config")]
            hint = f" (unknown step type {', '.join(repr(k) for k in unknown)})" if unknown else ""
            raise ManifestError(f"{where}: a step has exactly one of {', '.join(NODE_KEYS)}{hint}")
        kind = kinds[0]
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            raise ManifestError(f"{where}: 'name' must be a string")
        value = raw[kind]
        label = name or (Path(value).stem if isinstance(value, str) else f"{kind}{next(self._names)}")
        here = f"{where} '{label}'" if where != "manifest" else f"{kind} '{label}'"
        try:
            return self._build(kind, value, raw, label, here, depth)
        except ValidationError as exc:
            problems = "; ".join(_problem(e) for e in exc.errors())
            raise ManifestError(f"{here}: {problems}") from None

    def _build(self, kind: str, value: Any, raw: dict[str, Any], label: str, here: str, depth: int) -> Node:
        allowed = {kind, "name", "inputs", "outputs", "config"}
        extra = set(raw) - allowed
        if extra:
            raise ManifestError(f"{here}: unknown key {', '.join(sorted(extra))}")
        if kind in ("model", "tokenizer", "transform"):
            return self.leaf(kind, value, raw.get("config"), label, here)
        if kind == "manifest":
            node = self.manifest(self.path(value, here, "manifest"), here)
            node.name = label
            return node
        if kind == "flow":
            if not isinstance(value, list) or not value:
                raise ManifestError(f"{here}: 'flow' is a list of steps")
            if len(value) > MAX_STEPS:
                raise ManifestError(f"{here}: more than {MAX_STEPS} steps")
            steps = []
            for i, step in enumerate(value):
                node = self.node(step, f"{here} step {i + 1}", depth + 1)
                steps.append(Step(node, _mapping(step.get("inputs"), f"{here} step {i + 1}", "inputs"),
                                  _mapping(step.get("outputs"), f"{here} step {i + 1}", "outputs")))
            wanted = raw.get("outputs") if isinstance(raw.get("outputs"), list) else None
            return FlowNode(label, steps, wanted)
        if kind == "ensemble":
            spec = EnsembleSpec.model_validate(value)
            children = self.children(spec.children, here, depth)
            combiner = None
            if spec.combine == "python":
                combiner = self.leaf("transform", spec.combiner, None, f"{label} combiner", here).evaluator
            return self.own(EnsembleNode(label, spec, children, combiner))
        if kind == "router":
            rspec = RouterSpec.model_validate(value)
            return self.own(RouterNode(label, rspec, self.children(rspec.children, here, depth)))
        if kind == "cascade":
            cspec = CascadeSpec.model_validate(value)
            first = self.node(cspec.first, f"{here} first", depth + 1)
            fallback = self.node(cspec.fallback, f"{here} fallback", depth + 1)
            return self.own(CascadeNode(label, cspec, first, fallback))
        tspec = TransformerSpec.model_validate(value)
        steps = []
        for part in ("pre", "node", "post"):
            sub = getattr(tspec, part)
            if sub is not None:
                node = self.node(sub, f"{here} {part}", depth + 1)
                steps.append(Step(node, _mapping(sub.get("inputs"), f"{here} {part}", "inputs"),
                                  _mapping(sub.get("outputs"), f"{here} {part}", "outputs")))
        return FlowNode(label, steps, None)

    def children(self, raws: list[dict[str, Any]], here: str, depth: int) -> list[Node]:
        nodes = [self.node(c, f"{here} child {i + 1}", depth + 1) for i, c in enumerate(raws)]
        names = [n.name for n in nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ManifestError(f"{here}: children share the name {', '.join(dup)}; give each a 'name'")
        return nodes

    def own(self, node: Node) -> Node:
        self.composites.append(node)
        return node

    def leaf(self, kind: str, value: Any, inline: Any, label: str, here: str) -> LeafNode:
        path = self.path(value, here, kind)
        config = self.config(path, inline, here)
        fmt: ModelFormat | None
        if config.format:
            fmt = self.formats.get(config.format)
        elif kind == "tokenizer":
            fmt = self.formats.get("tokenizer")
        elif kind == "transform":
            fmt = self.formats.get("python")
        else:
            fmt = self.formats.detect(path)
        if fmt is None:
            raise ManifestError(f"{here}: no installed format recognises {path.name}")
        if fmt.runs_code and not (self.options.trusted or config.trusted):
            raise UntrustedModel(f"{here}: a {fmt.name} step runs code from {path.name}; mark the manifest trusted "
                                 "(--trusted or 'trusted: true' in its config) if you trust its source")
        opts = replace(
            self.options,
            trusted=self.options.trusted or config.trusted,
            options={**config.options},
            signature=config.signature.complete() if config.signature is not None else None,
        )
        try:
            evaluator = adapt(fmt.load(path, opts), config)
        except MlportError as exc:
            raise type(exc)(f"{here}: {exc.message}", exc.code) from exc
        node = LeafNode(label, evaluator)
        self.opened.append(node)
        return node

    def config(self, path: Path, inline: Any, here: str) -> ModelConfig:
        stem = path.name[: -len(path.suffix)] if path.suffix and path.is_file() else path.name
        beside = path.with_name(f"{stem}.model.yaml") if path.is_file() else path / "model.yaml"
        try:
            config = load_model_config(beside)
        except MlportError as exc:
            raise ManifestError(f"{here}: {exc.message}") from exc
        if inline is None:
            return config
        if not isinstance(inline, dict):
            raise ManifestError(f"{here}: 'config' must be a mapping of model.yaml keys")
        try:
            return ModelConfig.model_validate({**config.model_dump(exclude_unset=True), **inline})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ManifestError(f"{here}: config: {problems}") from None


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _mapping(raw: Any, where: str, field: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ManifestError(f"{where}: '{field}' maps names to names ({{its_name: other_name}})")
    return dict(raw)


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path.name} is larger than {MAX_MANIFEST_BYTES // 1024} KiB")
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path.name}: not a readable manifest: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"{path.name}: a manifest is a mapping")
    return doc


# ------------------------------------------------------------------------------------------- format
class ManifestEvaluator(Evaluator):
    platform = "mlport-manifest"
    uses_context = True

    def __init__(self, root: Node) -> None:
        self.root = root
        self.signature = root.signature
        self._routers = [n for n in root.walk() if isinstance(n, RouterNode)]

    def predict(self, inputs: Arrays) -> Arrays:
        return self.root.run(inputs, RequestContext())

    def predict_in(self, inputs: Arrays, context: RequestContext) -> Arrays:
        return self.root.run(inputs, context)

    def feedback(self, request_id: str, reward: float) -> None:
        bandits = [r for r in self._routers if r.spec.strategy in ("epsilon_greedy", "thompson")]
        if not bandits:
            super().feedback(request_id, reward)
        if not any([r.feedback(request_id, reward) for r in bandits]):
            raise MlportError(f"no routed request with id '{request_id}' is waiting for feedback "
                              "(unknown, already rewarded, or forgotten)", ErrorCode.NOT_FOUND)

    def arms(self) -> dict[str, dict[str, Any]]:
        """Per bandit router: pulls and mean reward of each child."""
        out: dict[str, dict[str, Any]] = {}
        for r in self._routers:
            out[r.name] = {c.name: {"pulls": int(p), "reward": float(w)}
                           for c, p, w in zip(r.children(), r.pulls, r.rewards, strict=True)}
        return out

    def close(self) -> None:
        self.root.close()


class ManifestFormat(ModelFormat):
    """``*.yaml``/``*.yml``/``*.json`` files with a flow, ensemble, router, cascade or transformer at the top."""

    name: ClassVar[str] = "manifest"

    def __init__(self, formats: FormatRegistry | None = None) -> None:
        self._formats = formats

    def detect(self, path: Path) -> bool:
        if not path.is_file() or path.suffix.lower() not in _SUFFIXES:
            return False
        if path.name == "model.yaml" or path.name.endswith(".model.yaml") or path.name == "tokenizer.json":
            return False
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return False
        with path.open("rb") as f:
            head = f.read(4096)
        if not any(k.encode() in head for k in TOP_KEYS):
            return False
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False
        return isinstance(doc, dict) and any(k in doc for k in TOP_KEYS)

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        loader = _Loader(path.parent, options, self._formats or default_registry())
        try:
            root = loader.manifest(path.resolve(), path.name)
        except BaseException:
            for node in loader.opened:
                node.close()
            for node in loader.composites:
                if isinstance(node, EnsembleNode):
                    node.shutdown()
            raise
        return ManifestEvaluator(root)

