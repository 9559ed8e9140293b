"""The hub's model registry: named models, immutable numbered versions, artifacts in a local folder or S3."""

from __future__ import annotations

from mlport.registry.archive import extract_archive
from mlport.registry.registry import ModelRegistry
from mlport.registry.store import ArtifactStore, KeyNotFound, LocalStore, S3Store, check_key, open_store
from mlport.registry.types import ModelInfo, VersionInfo

__all__ = [
    "ArtifactStore",
    "KeyNotFound",
    "LocalStore",
    "ModelInfo",
    "ModelRegistry",
    "S3Store",
    "VersionInfo",
    "check_key",
    "extract_archive",
    "open_store",
]
