"""Model formats: one module and one class per format, found through an entry-point group."""

from mlport.formats.base import Evaluator, LoadOptions, MissingExtra, ModelFormat, UntrustedModel
from mlport.formats.registry import FormatRegistry, default_registry

__all__ = [
    "Evaluator",
    "FormatRegistry",
    "LoadOptions",
    "MissingExtra",
    "ModelFormat",
    "UntrustedModel",
    "default_registry",
]
