"""Loading a manifest: the file read, its node tree validated (:mod:`.schema`), and the nodes built.

Leaves load through :func:`mlport.formats.adapt.load_adapted`, the same path as a served model, with the
``<stem>.model.yaml`` beside the leaf and the ``config:`` given inline. Manifests may include each other
(``manifest:`` steps) and may be the model of a step (``model: other.yaml``); a cycle through either is
reported with the chain of files.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlport.core.yamlfile import problems, read_yaml
from mlport.errors import MlportError
from mlport.formats.adapt import load_adapted
from mlport.formats.base import LoadOptions, ModelFormat, UntrustedModel
from mlport.formats.config import ModelConfig, load_model_config
from mlport.formats.manifest.nodes import CascadeNode, EnsembleNode, FlowNode, LeafNode, Node, RouterNode, Step
from mlport.formats.manifest.schema import (
    MAX_DEPTH,
    TOP_KEYS,
    CascadeNodeSpec,
    EnsembleNodeSpec,
    FlowNodeSpec,
    LeafSpec,
    ManifestError,
    ManifestRefSpec,
    NodeSpec,
    RouterNodeSpec,
    TransformerNodeSpec,
    TransformSpec,
    parse_node,
)
from mlport.formats.registry import FormatRegistry

__all__ = ["MAX_MANIFEST_BYTES", "Loader", "config_beside", "parse_top", "read_manifest"]

MAX_MANIFEST_BYTES = 1024 * 1024

#: The manifest files being loaded in this thread, outermost first: through ``manifest:`` steps and through
#: ``model:`` steps that name a manifest (each loads with a loader of its own).
_CHAIN: ContextVar[tuple[Path, ...]] = ContextVar("mlport_manifest_chain", default=())


@contextmanager
def _entered(path: Path, where: str) -> Iterator[None]:
    chain = _CHAIN.get()
    if path in chain:
        names = " -> ".join(p.name for p in [*chain, path])
        raise ManifestError(f"{where}: manifests include each other in a cycle: {names}")
    if len(chain) >= MAX_DEPTH:
        raise ManifestError(f"{where}: manifests nest deeper than {MAX_DEPTH}")
    token = _CHAIN.set((*chain, path))
    try:
        yield
    finally:
        _CHAIN.reset(token)


class Loader:
    """Builds the nodes of one manifest file (and those it includes); remembers what it opened, to close it
    when loading fails."""

    def __init__(self, root: Path, options: LoadOptions, formats: FormatRegistry) -> None:
        self.root = root.resolve()
        self.options = options
        self.formats = formats
        self.opened: list[Node] = []
        self.composites: list[Node] = []
        self._names = itertools.count(1)

    def close(self) -> None:
        """Release what was opened so far (after a failed load)."""
        for node in self.opened:
            node.close()
        for node in self.composites:
            if isinstance(node, EnsembleNode):
                node.shutdown()

    def path(self, value: str, where: str, field: str) -> Path:
        target = (self.root / value).resolve()
        try:
            target.relative_to(self.root)
        except ValueError:
            raise ManifestError(f"{where}: '{field}: {value}' is outside the manifest's folder") from None
        if not target.exists():
            raise ManifestError(f"{where}: '{field}: {value}' does not exist")
        return target

    def manifest(self, path: Path, where: str) -> Node:
        with _entered(path, where):
            return self.top(read_manifest(path), path.stem)

    def top(self, doc: dict[str, Any], default_name: str) -> Node:
        return self.node(parse_top(doc, default_name), "manifest", 0)

    def node(self, spec: NodeSpec, where: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ManifestError(f"{where}: nodes nest deeper than {MAX_DEPTH}")
        path = spec.path
        label = spec.name or (Path(path).stem if path is not None else f"{spec.kind}{next(self._names)}")
        here = f"{where} '{label}'" if where != "manifest" else f"{spec.kind} '{label}'"
        if isinstance(spec, ManifestRefSpec):
            node = self.manifest(self.path(spec.manifest, here, "manifest"), here)
            node.name = label
            return node
        if isinstance(spec, FlowNodeSpec):
            steps = [self.step(s, f"{here} step {i + 1}", depth) for i, s in enumerate(spec.flow)]
            return FlowNode(label, steps, spec.outputs if isinstance(spec.outputs, list) else None)
        if isinstance(spec, EnsembleNodeSpec):
            ens = spec.ensemble
            children = self.children(ens.children, here, depth)
            combiner = None
            if ens.combine == "python":
                combiner = self.leaf(TransformSpec(transform=ens.combiner or ""), f"{label} combiner", here).evaluator
            return self.own(EnsembleNode(label, ens, children, combiner))
        if isinstance(spec, RouterNodeSpec):
            return self.own(RouterNode(label, spec.router, self.children(spec.router.children, here, depth)))
        if isinstance(spec, CascadeNodeSpec):
            first = self.node(spec.cascade.first, f"{here} first", depth + 1)
            fallback = self.node(spec.cascade.fallback, f"{here} fallback", depth + 1)
            return self.own(CascadeNode(label, spec.cascade, first, fallback))
        if isinstance(spec, TransformerNodeSpec):
            parts = [(p, getattr(spec.transformer, p)) for p in ("pre", "node", "post")]
            return FlowNode(label, [self.step(s, f"{here} {p}", depth) for p, s in parts if s is not None], None)
        return self.leaf(spec, label, here)

    def step(self, spec: NodeSpec, where: str, depth: int) -> Step:
        """A node inside a flow, with its input mapping and output renames."""
        if isinstance(spec.outputs, list):
            raise ManifestError(f"{where}: 'outputs' maps names to names ({{its_name: other_name}})")
        return Step(self.node(spec, where, depth + 1), dict(spec.inputs or {}), dict(spec.outputs or {}))

    def children(self, specs: list[NodeSpec], here: str, depth: int) -> list[Node]:
        nodes = [self.node(c, f"{here} child {i + 1}", depth + 1) for i, c in enumerate(specs)]
        names = [n.name for n in nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ManifestError(f"{here}: children share the name {', '.join(dup)}; give each a 'name'")
        return nodes

    def own(self, node: Node) -> Node:
        self.composites.append(node)
        return node

    def leaf(self, spec: LeafSpec, label: str, here: str) -> LeafNode:
        path = self.path(spec.path, here, spec.kind)
        config = self.config(path, spec.config, here)
        fmt = self.leaf_format(spec.kind, config, path, here)
        if fmt.runs_code and not (self.options.trusted or config.trusted):
            raise UntrustedModel(f"{here}: a {fmt.name} step runs code from {path.name}; mark the manifest trusted "
                                 "(--trusted or 'trusted: true' in its config) if you trust its source")
        try:
            evaluator = load_adapted(fmt, path, config, trusted=self.options.trusted,
                                     intra_op_threads=self.options.intra_op_threads)
        except MlportError as exc:
            raise type(exc)(f"{here}: {exc.message}", exc.code) from exc
        node = LeafNode(label, evaluator)
        self.opened.append(node)
        return node

    def leaf_format(self, kind: str, config: ModelConfig, path: Path, here: str) -> ModelFormat:
        if config.format:
            return self.formats.get(config.format)
        if kind == "tokenizer":
            return self.formats.get("tokenizer")
        if kind == "transform":
            return self.formats.get("python")
        fmt = self.formats.detect(path)
        if fmt is None:
            raise ManifestError(f"{here}: no installed format recognises {path.name}")
        return fmt

    def config(self, path: Path, inline: dict[str, Any] | None, here: str) -> ModelConfig:
        try:
            config = load_model_config(config_beside(path))
        except MlportError as exc:
            raise ManifestError(f"{here}: {exc.message}") from exc
        if inline is None:
            return config
        try:
            return ModelConfig.model_validate({**config.model_dump(exclude_unset=True), **inline})
        except ValidationError as exc:
            raise ManifestError(f"{here}: config: {problems(exc)}") from None


def config_beside(path: Path) -> Path:
    """The ``model.yaml`` that configures a leaf: ``<stem>.model.yaml`` beside a file, ``model.yaml`` in a folder."""
    if not path.is_file():
        return path / "model.yaml"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.model.yaml")


def parse_top(doc: dict[str, Any], default_name: str) -> NodeSpec:
    """The typed node tree of a manifest file's mapping (nothing is loaded)."""
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
    name = str(doc.get("name") or default_name)
    raw = {keys[0]: doc[keys[0]], "name": name,
           **({"outputs": wanted} if wanted is not None and keys[0] == "flow" else {})}
    return parse_node(raw, f"{keys[0]} '{name}'")


def read_manifest(path: Path) -> dict[str, Any]:
    doc = read_yaml(path, path.name, max_bytes=MAX_MANIFEST_BYTES, error=ManifestError)
    if not isinstance(doc, dict):
        raise ManifestError(f"{path.name}: a manifest is a mapping")
    return doc
