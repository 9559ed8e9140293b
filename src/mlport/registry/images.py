"""Images built from model versions: which image reference and digest serve a version (newest first)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from mlport.core.imageref import check_image_ref
from mlport.core.sqlitedb import Database
from mlport.errors import InvalidInput

__all__ = ["ImageRecord", "ImageRecords"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_images (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    image TEXT NOT NULL,
    digest TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    recorded_by TEXT NOT NULL,
    PRIMARY KEY (model, version, image)
);
"""
#: Most images listed per version.
MAX_IMAGES = 100
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageRecord:
    image: str
    digest: str
    recorded_at: float
    recorded_by: str

    @property
    def pinned(self) -> str:
        """The reference by digest (``repository@sha256:...``), which never moves."""
        repository = self.image.rsplit("@", 1)[0]
        last = repository.rsplit("/", 1)[-1]
        if ":" in last:
            repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
        return f"{repository}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "digest": self.digest, "pinned": self.pinned, "recorded_at": self.recorded_at,
                "recorded_by": self.recorded_by}


class ImageRecords:
    """The images recorded for model versions (the registry's versions themselves stay immutable)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(_SCHEMA)

    def record(self, model: str, version: int, image: str, digest: str, *, by: str) -> ImageRecord:
        check_image_ref(image, digest=False)
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidInput(f"digest {digest!r} is not a sha256 digest (sha256: and 64 hex digits)")
        now = time.time()
        self.db.execute("INSERT OR REPLACE INTO registry_images (model, version, image, digest, recorded_at, "
                        "recorded_by) VALUES (?, ?, ?, ?, ?, ?)", (model, version, image, digest, now, by))
        return ImageRecord(image, digest, now, by)

    def of(self, model: str, version: int) -> list[ImageRecord]:
        rows = self.db.all("SELECT image, digest, recorded_at, recorded_by FROM registry_images WHERE model = ? "
                           "AND version = ? ORDER BY recorded_at DESC LIMIT ?", (model, version, MAX_IMAGES))
        return [ImageRecord(r["image"], r["digest"], r["recorded_at"], r["recorded_by"]) for r in rows]

    def forget_model(self, model: str) -> None:
        self.db.execute("DELETE FROM registry_images WHERE model = ?", (model,))
