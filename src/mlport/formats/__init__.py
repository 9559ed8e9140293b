"""Model formats: one module and one class per format, found through an entry-point group; the model config
(``model.yaml``) and how it adapts a loaded model; manifests (:mod:`mlport.formats.manifest`)."""

from mlport.formats.base import ContextEvaluator, Evaluator, LoadOptions, MissingExtra, ModelFormat, UntrustedModel
from mlport.formats.registry import FormatRegistry, default_registry

__all__ = [
    "ContextEvaluator",
    "Evaluator",
    "FormatRegistry",
    "LoadOptions",
    "MissingExtra",
    "ModelFormat",
    "UntrustedModel",
    "default_registry",
]
