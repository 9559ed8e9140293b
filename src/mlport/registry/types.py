"""Records of the registry (models, versions), their tables, and the checks on user-given text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mlport.errors import InvalidInput

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_FILENAME",
    "SCHEMA",
    "ModelInfo",
    "VersionInfo",
    "check_filename",
    "check_labels",
    "check_tags",
    "check_text",
    "model_info",
    "version_info",
]

MAX_DESCRIPTION = 4096
MAX_FILENAME = 255
MAX_TAGS = 32
MAX_LABELS = 64
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
MAX_LABEL_VALUE = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    next_version INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS registry_versions (
    model TEXT NOT NULL REFERENCES registry_models(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    format TEXT,
    signature TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL,
    store_key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('file', 'folder')),
    filename TEXT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TRIGGER IF NOT EXISTS registry_versions_immutable BEFORE UPDATE ON registry_versions
BEGIN
    SELECT RAISE(ABORT, 'model versions are immutable');
END;
"""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    labels: dict[str, str]
    created_at: float
    created_by: str
    latest_version: int | None


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: int
    format: str | None
    #: ``{"inputs": [...], "outputs": [...]}`` as ``mlport describe`` prints it; ``None`` when unknown.
    signature: dict[str, Any] | None
    size: int
    sha256: str
    created_at: float
    created_by: str
    description: str
    tags: list[str]
    source: str
    #: Key of the artifact in the store: the file's key, or the folder's key prefix.
    store_key: str
    kind: str  # "file" or "folder"
    #: File name (kind "file") or folder name (kind "folder").
    filename: str
    #: Why the signature could not be read when the version was added (not stored: None once read back).
    signature_error: str | None = None


def model_info(row: dict[str, Any]) -> ModelInfo:
    latest = row.get("latest_version")
    return ModelInfo(row["name"], row["description"], dict(json.loads(row["labels"])), float(row["created_at"]),
                     row["created_by"], int(latest) if latest is not None else None)


def version_info(row: dict[str, Any]) -> VersionInfo:
    signature = json.loads(row["signature"]) if row["signature"] is not None else None
    return VersionInfo(row["model"], int(row["version"]), row["format"], signature, int(row["size"]), row["sha256"],
                       float(row["created_at"]), row["created_by"], row["description"], list(json.loads(row["tags"])),
                       row["source"], row["store_key"], row["kind"], row["filename"])


def check_text(value: str, what: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    if len(value) > max_len:
        raise InvalidInput(f"{what} is longer than {max_len} characters")
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    return value


def check_filename(name: str) -> str:
    """A plain file or folder name: no separators, not hidden, at most 255 characters."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("file name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME:
        raise InvalidInput(f"file name is longer than {MAX_FILENAME} bytes")
    if "/" in name or "\\" in name or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"file name {name!r} must not contain separators or control characters")
    if name.startswith("."):
        raise InvalidInput(f"file name {name!r} must not start with '.'")
    return name


def check_tags(tags: list[str]) -> list[str]:
    if not isinstance(tags, list | tuple):
        raise InvalidInput("tags must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags")
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise InvalidInput(f"tag {tag!r} is invalid: use 1-64 characters of letters, digits, '.', '_', ':', "
                               "'/' and '-'")
    return list(dict.fromkeys(tags))


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise InvalidInput("labels must be a mapping of strings")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise InvalidInput(f"label name {key!r} is invalid: use 1-63 characters of letters, digits, '.', '_', "
                               "'/' and '-'")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or "\x00" in value:
            raise InvalidInput(f"label {key!r}: the value must be text of at most {MAX_LABEL_VALUE} characters")
    return dict(labels)
