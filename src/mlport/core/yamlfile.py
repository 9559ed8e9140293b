"""Reading YAML files (a model's model.yaml, the server's --config, manifests, MLmodel) within limits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlport.errors import InvalidInput

__all__ = ["problems", "read_mapping", "read_yaml"]

ErrorType = Callable[[str], Exception]


def read_yaml(path: Path, name: str, *, max_bytes: int | None = None, error: ErrorType = InvalidInput) -> Any:
    """The YAML document in ``path``, refused with ``error`` (naming the file ``name``) when it cannot be read,
    is larger than ``max_bytes`` or nests too deep."""
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise error(f"{name} is larger than {max_bytes} bytes")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise error(f"{name}: not readable YAML: {exc}") from exc
    except RecursionError:
        raise error(f"{name}: not readable YAML: it nests too deep") from None


def read_mapping(path: Path, name: str) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path`` (empty for an empty file); errors name it ``name``."""
    raw = read_yaml(path, name) or {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{name}: expected a mapping at the top level")
    return raw


def problems(exc: ValidationError) -> str:
    """What pydantic found wrong, one ``field: message`` per problem."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
