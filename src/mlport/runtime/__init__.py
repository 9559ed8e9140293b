"""Repository scanning, version policies and the model manager.

The names below are imported on first use: a program that needs only the repository scan (``mlport score``)
does not load the manager.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "ModelConfig": "mlport.formats.config",
    "VersionPolicy": "mlport.formats.config",
    "ModelManager": "mlport.runtime.manager",
    "VersionState": "mlport.runtime.manager",
    "ModelSource": "mlport.runtime.repository",
    "Repository": "mlport.runtime.repository",
    "VersionSource": "mlport.runtime.repository",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
