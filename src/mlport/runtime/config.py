"""The per-model configuration file (``model.yaml`` in a model folder, ``<stem>.model.yaml`` beside a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlport.errors import InvalidInput

__all__ = ["ImageOptions", "ModelConfig", "VersionPolicy", "load_model_config"]


class VersionPolicy(BaseModel):
    """Which versions of a model serve: the latest N (default 1), all, or specific ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latest: int | None = Field(default=None, ge=1)
    all: bool = False
    specific: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        kinds = sum([self.latest is not None, self.all, self.specific is not None])
        if kinds > 1:
            raise ValueError("version_policy takes one of latest, all, specific")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve, highest first (a pure function of what exists)."""
        ordered = sorted(set(available), reverse=True)
        if self.all:
            return ordered
        if self.specific is not None:
            wanted = set(self.specific)
            return [v for v in ordered if v in wanted]
        return ordered[: self.latest or 1]


class ImageOptions(BaseModel):
    """How an image sent to the model is turned into its input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Resize images to the input's height and width when they differ (default: refuse with 400).
    resize: bool = False
    #: Multiply pixel values (0..255) by this before feeding a float input.
    scale: float = 1.0


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Served name (default: folder name or file stem).
    name: str | None = None
    #: Format name, when detection from the file should be overridden.
    format: str | None = None
    #: The operator trusts this model's files to run code (pickles, Python sources).
    trusted: bool = False
    version_policy: VersionPolicy = VersionPolicy()
    #: Names for versions, label -> version (TF Serving ``/v1/models/{m}/labels/{label}``).
    version_labels: dict[str, int] = Field(default_factory=dict)
    #: Named scalar fields mapped onto columns of one input: ``{input: {field: column}}``.
    fields: dict[str, dict[str, int]] = Field(default_factory=dict)
    image: ImageOptions = ImageOptions()
    #: Options passed to the format's library (e.g. ``intra_op_threads`` for onnxruntime).
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_fields(self) -> ModelConfig:
        for tensor, mapping in self.fields.items():
            cols = sorted(mapping.values())
            if cols != list(range(len(cols))):
                raise ValueError(f"fields of input '{tensor}' must map onto columns 0..{len(cols) - 1} once each")
        return self


def load_model_config(path: Path | None) -> ModelConfig:
    if path is None or not path.is_file():
        return ModelConfig()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path.name}: not readable YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInput(f"{path.name}: expected a mapping at the top level")
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{path.name}: {problems}") from exc
