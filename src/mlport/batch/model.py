"""The model a batch run scores with, loaded exactly as ``mlport serve`` loads it.

One model file or folder (a manifest included) is scanned by the serving runtime's :class:`Repository`, loaded
by its format and seen through its model config (:func:`mlport.formats.adapt.load_adapted`: declared signature,
labels), so offline answers equal online ones. ``fields`` and image options come from the same config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlport.core.types import Signature
from mlport.errors import InvalidInput
from mlport.formats.adapt import load_adapted
from mlport.formats.base import Evaluator
from mlport.formats.config import ModelConfig
from mlport.formats.registry import default_registry
from mlport.runtime.repository import Repository

__all__ = ["ScoringModel", "load_model"]


@dataclass
class ScoringModel:
    """A loaded model with the config that shapes its inputs (fields, images) and outputs (labels)."""

    name: str
    version: int
    format: str
    evaluator: Evaluator
    config: ModelConfig

    @property
    def signature(self) -> Signature:
        return self.evaluator.signature

    def close(self) -> None:
        """Release the model (once; closing again does nothing)."""
        if not getattr(self, "_closed", False):
            self._closed = True
            self.evaluator.close()


def load_model(path: Path, *, name: str | None = None, trusted: bool = False,
               intra_op_threads: int = 0) -> ScoringModel:
    """Load the one model at ``path`` (a file, a model folder, a manifest) in its served version."""
    formats = default_registry()
    sources = Repository(path, formats, name=name, trusted=trusted).scan()
    if len(sources) != 1:
        names = ", ".join(sorted(sources)) or "none"
        raise InvalidInput(f"{path} must hold one model to score with; it holds {len(sources)} ({names})")
    src = next(iter(sources.values()))
    if src.error or not src.versions:
        raise InvalidInput(f"model '{src.name}' cannot be loaded: "
                           f"{src.error or '; '.join(src.errors.values()) or 'no versions'}")
    cfg = src.config
    version = max(cfg.version_policy.select(list(src.versions)) or src.versions)
    vsrc = src.versions[version]
    evaluator = load_adapted(formats.get(vsrc.format), vsrc.path, cfg, intra_op_threads=intra_op_threads)
    return ScoringModel(src.name, version, vsrc.format, evaluator, cfg)
