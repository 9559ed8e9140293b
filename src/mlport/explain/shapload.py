"""The ``shap`` library, imported on first use (it takes seconds), with the install hint when it is missing."""

from __future__ import annotations

import importlib
import threading
from typing import Any

from mlport.formats.base import MissingExtra

__all__ = ["import_shap"]

_lock = threading.Lock()


def import_shap() -> Any:
    """The ``shap`` module; :class:`MissingExtra` saying to install ``mlport[explain]`` when it is not installed."""
    with _lock:
        try:
            return importlib.import_module("shap")
        except ImportError as exc:
            raise MissingExtra(f"SHAP explanations need the shap library ({exc}): pip install 'mlport[explain]'") \
                from None
