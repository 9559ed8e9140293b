"""Describing a model that is not loaded now (lazy, evicted): from what its last load read, or from its files.

A version loaded before is described from what that load read, as long as its files have not changed since
(their fingerprint).  A version never loaded is described from its files where the format can tell without
loading (:meth:`mlport.formats.base.ModelFormat.describe_files`: an ONNX graph's declared inputs and outputs, a
signature declared in ``model.yaml`` for a TorchScript module), seen through its config as a load would
(:func:`mlport.formats.adapt.describe_adapted`).  That reads files, so it runs in a worker thread, once per
version and fingerprint; nothing is loaded and the model stays ``NOT_LOADED``.
"""

from __future__ import annotations

from mlport.errors import MlportError
from mlport.formats.adapt import describe_adapted
from mlport.formats.config import ModelConfig
from mlport.formats.registry import FormatRegistry
from mlport.runtime.repository import VersionSource
from mlport.runtime.states import Described, ModelEntry

__all__ = ["from_files", "remembered", "requested_version"]


def requested_version(model: ModelEntry, version: str | int | None) -> int | None:
    """The version number a request for a model not loaded now names (latest: the highest it would serve)."""
    if version in (None, "", "latest"):
        wanted = model.wanted()
        return max(wanted) if wanted else None
    try:
        return int(version)  # type: ignore[arg-type]
    except ValueError:
        return None


def remembered(model: ModelEntry, v: int) -> Described | None:
    """What the model's files said when last read (a load, or :func:`from_files`), if they have not changed."""
    src = model.source.versions.get(v)
    known = model.described.get(v)
    if src is None or known is None or known[0] != src.fingerprint:
        return None
    return known[1]


def from_files(formats: FormatRegistry, config: ModelConfig, src: VersionSource) -> Described | None:
    """The version's description from its files, without loading it (runs in a worker thread); ``None`` when its
    format cannot tell that way."""
    try:
        fmt = formats.get(src.format)
        known = describe_adapted(fmt, src.path, config)
    except (MlportError, OSError):
        return None
    if known is None:
        return None
    return Described(src.version, known.signature, config, known.platform or src.format)
