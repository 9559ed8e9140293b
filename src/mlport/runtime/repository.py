"""Finds models on disk: one file, or a repository ``<root>/<name>/<version>/<file>``.

Layouts understood in a repository folder:

- ``<root>/<name>/<version>/<model>``: integer version folders (Triton/TF Serving style);
- ``<root>/<name>/<model>``: one unversioned model, served as version 1;
- ``<root>/<model-file>``: a model file at the top, named by its stem, version 1.

A model folder may hold ``model.yaml`` (see :mod:`mlport.runtime.config`); a model file
``x.onnx`` may have ``x.model.yaml`` beside it.  Nothing outside the root is followed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mlport.errors import InvalidInput, MlportError
from mlport.formats.registry import FormatRegistry
from mlport.runtime.config import ModelConfig, load_model_config

__all__ = ["ModelSource", "Repository", "VersionSource", "fingerprint"]

CONFIG_NAME = "model.yaml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_FINGERPRINT_FILES = 10_000


@dataclass(frozen=True, slots=True)
class VersionSource:
    version: int
    path: Path
    format: str
    fingerprint: tuple[tuple[str, int, int], ...]


@dataclass(slots=True)
class ModelSource:
    name: str
    config: ModelConfig
    versions: dict[int, VersionSource] = field(default_factory=dict)
    #: Why the model (or some version) could not be read; the model still appears in the index.
    errors: dict[int, str] = field(default_factory=dict)
    error: str | None = None


def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Size and mtime of every file under ``path``: changes when the model files change."""
    if path.is_file():
        st = path.stat()
        return ((path.name, st.st_size, st.st_mtime_ns),)
    rows: list[tuple[str, int, int]] = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            rows.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
            if len(rows) >= _MAX_FINGERPRINT_FILES:
                break
    return tuple(rows)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


class Repository:
    """Scans a model file or repository folder into :class:`ModelSource` entries."""

    def __init__(
        self,
        root: Path,
        formats: FormatRegistry,
        name: str | None = None,
        trusted: bool = False,
        max_models: int = 1000,
    ) -> None:
        self.root = root.resolve()
        self.formats = formats
        self.name = name
        self.trusted = trusted
        self.max_models = max_models
        if not self.root.exists():
            raise InvalidInput(f"{root} does not exist")

    @property
    def single(self) -> bool:
        """True when the root is itself one model (a file, or a folder a format recognises)."""
        return self.formats.detect(self.root) is not None

    def scan(self) -> dict[str, ModelSource]:
        if self.single:
            one = self._single_model(self.root)
            return {one.name: one}
        found: dict[str, ModelSource] = {}
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not _inside(self.root, child):
                continue
            src: ModelSource | None
            if child.is_dir():
                src = self._model_dir(child)
            elif self.formats.detect(child) is not None:
                src = self._single_model(child)
            else:
                src = None
            if src is not None:
                if len(found) >= self.max_models:
                    break
                found[src.name] = src
        return found

    def scan_model(self, name: str) -> ModelSource | None:
        return self.scan().get(name)

    def _config(self, path: Path) -> ModelConfig:
        cfg = load_model_config(path)
        if self.trusted and not cfg.trusted:
            cfg = cfg.model_copy(update={"trusted": True})
        return cfg

    def _single_model(self, path: Path) -> ModelSource:
        stem = path.name[: -len(path.suffix)] if path.suffix else path.name
        cfg_path = path.with_name(f"{stem}.model.yaml")
        try:
            cfg = self._config(cfg_path)
        except MlportError as exc:
            return ModelSource(self.name or stem, ModelConfig(), error=str(exc))
        name = self.name or cfg.name or stem
        src = ModelSource(name, cfg)
        self._add_version(src, 1, path)
        return src

    def _model_dir(self, folder: Path) -> ModelSource | None:
        if self.formats.detect(folder) is not None:
            return self._single_model(folder)
        try:
            cfg = self._config(folder / CONFIG_NAME)
        except MlportError as exc:
            return ModelSource(folder.name, ModelConfig(), error=str(exc))
        name = cfg.name or folder.name
        if not _NAME_RE.match(name):
            return None
        src = ModelSource(name, cfg)
        version_dirs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and _inside(self.root, p)]
        if version_dirs:
            for vdir in version_dirs:
                self._add_version(src, int(vdir.name), vdir)
            return src
        if self._model_files(folder):
            self._add_version(src, 1, folder)
            return src
        return None

    def _model_files(self, folder: Path) -> list[Path]:
        return [
            p for p in sorted(folder.iterdir())
            if not p.name.startswith(".") and _inside(self.root, p) and self.formats.detect(p) is not None
        ]

    def _add_version(self, src: ModelSource, version: int, path: Path) -> None:
        try:
            target = self._resolve_model_path(path, src.config)
            fmt = src.config.format or self.formats.detect(target)
            fmt_name = fmt if isinstance(fmt, str) else fmt.name if fmt else None
            if fmt_name is None:
                raise InvalidInput(f"{target.name}: no installed format recognises this file")
            src.versions[version] = VersionSource(version, target, fmt_name, fingerprint(target))
        except (MlportError, OSError) as exc:
            src.errors[version] = str(exc)

    def _resolve_model_path(self, path: Path, cfg: ModelConfig) -> Path:
        if not path.is_dir() or self.formats.detect(path) is not None:
            return path
        files = self._model_files(path)
        if not files:
            raise InvalidInput(f"version folder {path.name}: no model file found")
        if len(files) > 1:
            preferred = [p for p in files if p.stem == "model" or p.name == "model"]
            if len(preferred) != 1:
                raise InvalidInput(
                    f"version folder {path.name}: several model files ({', '.join(p.name for p in files)}); "
                    "keep one or name it model.<ext>"
                )
            return preferred[0]
        return files[0]
