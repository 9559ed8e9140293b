"""The files a manifest uses, found without loading anything: what must travel with it when it is copied.

Packaging a manifest (into an image, for instance) copies the manifest and exactly these files, at the same
places relative to its folder: the files and folders its steps name, each leaf's ``model.yaml`` and the
label files that names, an ensemble's combiner, and the manifests it includes, followed in turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlport.core.yamlfile import read_mapping
from mlport.formats.manifest.format import ManifestFormat
from mlport.formats.manifest.loader import config_beside, parse_top, read_manifest
from mlport.formats.manifest.schema import (
    MAX_DEPTH,
    EnsembleNodeSpec,
    LeafSpec,
    ManifestError,
    ManifestRefSpec,
    ModelSpec,
    TokenizerSpec,
    TransformSpec,
)
from mlport.formats.registry import default_registry

__all__ = ["ManifestFiles", "manifest_files"]

#: Most files one manifest may use (folders count each file inside).
MAX_FILES = 10_000
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_KIND_FORMATS = {"tokenizer": "tokenizer", "transform": "python"}


@dataclass
class ManifestFiles:
    """What a manifest uses: every file (the manifest itself first), and the leaves with the format each
    loads with (from its ``model.yaml``, else the kind of step, else detected; None when none is installed)."""

    root: Path
    files: list[Path] = field(default_factory=list)
    leaves: list[tuple[Path, str | None]] = field(default_factory=list)

    def add(self, path: Path, where: str) -> None:
        target = path.resolve()
        try:
            target.relative_to(self.root)
        except ValueError:
            raise ManifestError(f"{where}: {path} is outside the manifest's folder") from None
        found = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        for item in found:
            if item.is_symlink():
                raise ManifestError(f"{where}: {item} is a symbolic link: copy the file it points to instead")
            if item not in self.files:
                self.files.append(item)
        if len(self.files) > MAX_FILES:
            raise ManifestError(f"the manifest uses more than {MAX_FILES} files")


def manifest_files(path: Path) -> ManifestFiles:
    """Every file the manifest at ``path`` uses, resolved, inside its folder, in a stable order."""
    top = path.resolve()
    found = ManifestFiles(top.parent)
    _walk_manifest(top, top.parent, found, (), "manifest")
    return found


def _walk_manifest(path: Path, root: Path, found: ManifestFiles, chain: tuple[Path, ...], where: str) -> None:
    if path in chain:
        raise ManifestError(f"{where}: the manifests include each other: "
                            f"{' -> '.join(p.name for p in [*chain, path])}")
    if len(chain) > MAX_DEPTH:
        raise ManifestError(f"{where}: manifests include each other deeper than {MAX_DEPTH}")
    found.add(path, where)
    spec = parse_top(read_manifest(path), path.stem)
    _walk_spec(spec, root, found, (*chain, path), f"{where} '{path.name}'")


def _walk_spec(spec: BaseModel, root: Path, found: ManifestFiles, chain: tuple[Path, ...], where: str) -> None:
    if isinstance(spec, ManifestRefSpec):
        # an included manifest's paths stay relative to the including manifest's folder
        _walk_manifest(_inside(root, spec.manifest, where), root, found, chain, where)
        return
    if isinstance(spec, ModelSpec | TokenizerSpec | TransformSpec):
        _walk_leaf(spec, root, found, chain, where)
        return
    if isinstance(spec, EnsembleNodeSpec) and spec.ensemble.combiner:
        found.add(_inside(root, spec.ensemble.combiner, where), where)
    for name in type(spec).model_fields:
        _walk_value(getattr(spec, name), root, found, chain, where)


def _walk_value(value: Any, root: Path, found: ManifestFiles, chain: tuple[Path, ...], where: str) -> None:
    if isinstance(value, BaseModel):
        _walk_spec(value, root, found, chain, where)
    elif isinstance(value, list):
        for item in value:
            _walk_value(item, root, found, chain, where)


def _walk_leaf(spec: LeafSpec, root: Path, found: ManifestFiles, chain: tuple[Path, ...], where: str) -> None:
    target = _inside(root, spec.path, where)
    if isinstance(spec, ModelSpec) and target.is_file() and target.suffix.lower() in _MANIFEST_SUFFIXES \
            and _is_manifest(target):
        # a model step naming a manifest loads it with paths relative to its own folder
        _walk_manifest(target, target.parent, found, chain, where)
        return
    found.add(target, where)
    config = config_beside(target)
    raw: dict[str, Any] = {**read_mapping(config, config.name)} if config.is_file() else {}
    raw.update(spec.config or {})
    if config.is_file():
        found.add(config, where)
    labels = raw.get("labels")
    for value in labels.values() if isinstance(labels, dict) else ():
        if isinstance(value, str):
            found.add(_inside(config.parent, value, where), where)
    fmt = raw.get("format") or _KIND_FORMATS.get(spec.kind)
    if not isinstance(fmt, str):
        detected = default_registry().detect(target)
        fmt = detected.name if detected is not None else None
    found.leaves.append((target, fmt))


def _inside(root: Path, value: str, where: str) -> Path:
    target = (root / value).resolve()
    try:
        target.relative_to(root.resolve())
    except ValueError:
        raise ManifestError(f"{where}: {value} is outside the manifest's folder") from None
    if not target.exists():
        raise ManifestError(f"{where}: {value} does not exist")
    return target


def _is_manifest(path: Path) -> bool:
    return ManifestFormat().detect(path)
