"""Reading a YAML configuration file (a model's model.yaml, the server's --config) into checked settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlport.errors import InvalidInput

__all__ = ["problems", "read_mapping"]


def read_mapping(path: Path, name: str) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path`` (empty for an empty file); errors name it ``name``."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{name}: not readable YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInput(f"{name}: expected a mapping at the top level")
    return raw


def problems(exc: ValidationError) -> str:
    """What pydantic found wrong, one ``field: message`` per problem."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
