"""The manifest format: a YAML or JSON file of flows, ensembles, routers, cascades and transformers of
other models, served as one model (see :mod:`mlport.formats.manifest.schema` for the file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml

from mlport.errors import ErrorCode, MlportError
from mlport.formats.base import Arrays, ContextEvaluator, Evaluator, LoadOptions, ModelFormat, RequestContext
from mlport.formats.manifest.loader import MAX_MANIFEST_BYTES, Loader
from mlport.formats.manifest.nodes import Node, RouterNode
from mlport.formats.manifest.schema import TOP_KEYS
from mlport.formats.registry import FormatRegistry, default_registry

__all__ = ["ManifestEvaluator", "ManifestFormat"]

_SUFFIXES = (".yaml", ".yml", ".json")
_BANDITS = ("epsilon_greedy", "thompson")


class ManifestEvaluator(ContextEvaluator):
    """A manifest's node tree as one model; it reads the request's context (routing key, request id)."""

    platform = "mlport-manifest"

    def __init__(self, root: Node) -> None:
        self.root = root
        self.signature = root.signature
        self._routers = [n for n in root.walk() if isinstance(n, RouterNode)]

    def predict_in(self, inputs: Arrays, context: RequestContext) -> Arrays:
        return self.root.run(inputs, context)

    def feedback(self, request_id: str, reward: float) -> None:
        bandits = [r for r in self._routers if r.spec.strategy in _BANDITS]
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
                           for c, p, w in zip(r.children(), r.stats.pulls, r.stats.rewards, strict=True)}
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
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            return False
        return isinstance(doc, dict) and any(k in doc for k in TOP_KEYS)

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        loader = Loader(path.parent, options, self._formats or default_registry())
        try:
            root = loader.manifest(path.resolve(), path.name)
        except BaseException:
            loader.close()
            raise
        return ManifestEvaluator(root)
