"""Finds model formats: the built-in ones and any registered under the ``mlport.formats`` entry points."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path

from mlport.errors import InvalidInput
from mlport.formats.base import ModelFormat

__all__ = ["ENTRY_POINT_GROUP", "FormatRegistry", "default_registry"]

ENTRY_POINT_GROUP = "mlport.formats"
log = logging.getLogger(__name__)


class FormatRegistry:
    def __init__(self, formats: list[ModelFormat]) -> None:
        self._formats = {f.name: f for f in formats}

    @classmethod
    def discover(cls) -> FormatRegistry:
        from mlport.formats.onnx import OnnxFormat

        found: list[ModelFormat] = [OnnxFormat()]
        names = {f.name for f in found}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                fmt_cls = ep.load()
            except Exception as exc:  # a broken third-party plugin must not stop the server
                log.warning("format plugin %s could not be imported: %s", ep.name, exc)
                continue
            if getattr(fmt_cls, "name", None) in names:
                continue
            fmt = fmt_cls()
            found.append(fmt)
            names.add(fmt.name)
        return cls(found)

    @property
    def formats(self) -> list[ModelFormat]:
        return list(self._formats.values())

    def get(self, name: str) -> ModelFormat:
        try:
            return self._formats[name]
        except KeyError:
            raise InvalidInput(f"unknown model format {name!r}; known: {', '.join(self._formats)}") from None

    def detect(self, path: Path) -> ModelFormat | None:
        for fmt in self._formats.values():
            try:
                if fmt.detect(path):
                    return fmt
            except OSError:
                continue
        return None

    def close(self) -> None:
        """Close every format (see :meth:`ModelFormat.close`); one that fails does not stop the others."""
        for fmt in self._formats.values():
            try:
                fmt.close()
            except Exception as exc:
                log.warning("closing the %s format failed: %s", fmt.name, exc)


_default: FormatRegistry | None = None


def default_registry() -> FormatRegistry:
    global _default
    if _default is None:
        _default = FormatRegistry.discover()
    return _default
