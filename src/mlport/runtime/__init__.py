"""Repository scanning, version policies and the model manager."""

from mlport.formats.config import ModelConfig, VersionPolicy
from mlport.runtime.manager import ModelManager, VersionState
from mlport.runtime.repository import ModelSource, Repository, VersionSource

__all__ = [
    "ModelConfig",
    "ModelManager",
    "ModelSource",
    "Repository",
    "VersionPolicy",
    "VersionSource",
    "VersionState",
]
