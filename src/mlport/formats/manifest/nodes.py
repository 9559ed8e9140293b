"""The nodes of a manifest: leaves (a model, tokenizer or transform), flows, ensembles, routers and cascades.

Each node has a signature derived from its children, checked when it is built: a manifest that does not fit
together fails at load time with a message naming the step and the field. Steps of a flow pass numpy arrays
to each other in process (nothing is re-encoded); children of an ensemble run concurrently on a thread pool
(the libraries release the GIL while they compute).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.validate import check_inputs
from mlport.errors import ErrorCode, MlportError
from mlport.formats.base import Arrays, ContextEvaluator, Evaluator, RequestContext
from mlport.formats.manifest import policies
from mlport.formats.manifest.schema import CascadeSpec, EnsembleSpec, ManifestError, RouterSpec

__all__ = ["CascadeNode", "EnsembleNode", "FlowNode", "LeafNode", "Node", "RouterNode", "Step"]


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
            ev = self.evaluator
            out = ev.predict_in(feed, ctx) if isinstance(ev, ContextEvaluator) else ev.predict(feed)
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
            return dict(self.combiner.predict(feed))
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
        self._cum = policies.cumulative(spec.weights, len(children))
        self._rng = np.random.default_rng(spec.seed)
        self._lock = threading.Lock()
        self.stats = policies.ArmStats.empty(len(children))
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
        if strategy == "sticky":
            key = self._key(inputs, ctx)
            if key is not None:
                return policies.sticky(self._cum, key)
        with self._lock:
            if strategy == "epsilon_greedy":
                return policies.epsilon_greedy(self.stats, self.spec.epsilon, self._rng)
            if strategy == "thompson":
                return policies.thompson(self.stats, self._rng)
            return policies.weighted(self._cum, float(self._rng.random()))

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
            policies.record(self.stats, arm, reward)
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


