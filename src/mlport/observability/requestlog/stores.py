"""Where closed log files end up: a local folder, or an object-store prefix (boto3, as the model registry uses).

Log files are named ``requests-<UTC time>-<pid>-<seq>.<jsonl|parquet>``, so that name order is time order and
the worker processes of one server never write the same file.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from mlport.core.logconfig import SinkConfig
from mlport.errors import InvalidInput

__all__ = ["FolderStore", "LogStore", "S3LogStore", "is_log_file", "open_store"]

_NAME = re.compile(r"^requests-\d{8}T\d{6}\.\d{6}Z-\d+-\d+\.(jsonl|parquet)$")
#: Most objects listed under one prefix.
MAX_LISTED = 100_000


def is_log_file(name: str) -> bool:
    """A closed (or, for JSON Lines, growing) log file of this package."""
    return _NAME.match(name) is not None


class LogStore(Protocol):
    """Closed log files: published, listed in name order, read, deleted."""

    def publish(self, local: Path) -> None:
        """Take the closed file ``local`` (named as it should be in the store)."""

    def names(self) -> list[str]:
        """The log files held, in name (time) order."""

    def read(self, name: str, offset: int = 0) -> bytes:
        """The file's bytes from ``offset`` on (empty when it is gone)."""

    def size(self, name: str) -> int:
        """The file's size in bytes (0 when it is gone)."""

    def delete(self, name: str) -> None: ...


class FolderStore:
    """Files written straight into the folder; a Parquet file gets its name once closed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def publish(self, local: Path) -> None:
        if local.parent.resolve() != self.folder.resolve():
            os.replace(local, self.folder / local.name)

    def names(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.folder) if is_log_file(e.name))
        except FileNotFoundError:
            return []

    def size(self, name: str) -> int:
        try:
            return (self.folder / name).stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, name: str, offset: int = 0) -> bytes:
        try:
            with open(self.folder / name, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / name).unlink()


class S3LogStore:
    """Closed files uploaded under ``s3://bucket/prefix/``; the file being written stays local until closed."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import boto3  # type: ignore[import-untyped]

        parsed = urlparse(url)
        if not parsed.netloc:
            raise InvalidInput(f"request log sink {url!r}: name the bucket (s3://bucket/prefix)")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self._client: Any = boto3.client("s3", endpoint_url=endpoint)
        self._sizes: dict[str, int] = {}

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def publish(self, local: Path) -> None:
        self._client.upload_file(str(local), self.bucket, self._key(local.name))
        local.unlink()

    def names(self) -> list[str]:
        found: list[str] = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(""), PaginationConfig={"MaxItems": MAX_LISTED})
        for page in pages:
            for obj in page.get("Contents", ()):
                name = str(obj["Key"]).rsplit("/", 1)[-1]
                if is_log_file(name):
                    found.append(name)
                    self._sizes[name] = int(obj.get("Size", 0))
        return sorted(found)

    def size(self, name: str) -> int:
        return self._sizes.get(name, 0)

    def read(self, name: str, offset: int = 0) -> bytes:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(name), **extra)["Body"].read()
        except self._client.exceptions.NoSuchKey:
            return b""
        return body

    def delete(self, name: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_store(sink: SinkConfig) -> FolderStore | S3LogStore:
    """The store of a folder or ``s3://`` sink."""
    if sink.kind == "s3":
        return S3LogStore(sink.url, sink.endpoint_url)
    if sink.kind == "http":
        raise InvalidInput(f"request log sink {sink.url!r} is an HTTP receiver, not a folder or bucket")
    return FolderStore(Path(sink.path).expanduser())
