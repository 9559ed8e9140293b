"""Where inputs and outputs live: a local path or an object-store URI (``s3://bucket/key``), through pyarrow's
file systems (streamed reads and writes, no whole-file copies). S3 credentials come from the usual AWS
environment variables or files; ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) points at an S3-compatible server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from mlport.errors import ErrorCode, InvalidInput, MlportError

__all__ = ["Location", "locate", "upload"]


@dataclass(frozen=True)
class Location:
    """A file system and a path in it (``bucket/key`` for S3, an absolute path locally)."""

    fs: pafs.FileSystem
    path: str
    uri: str
    endpoint_url: str | None = None
    region: str | None = None

    @property
    def remote(self) -> bool:
        return not isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def sibling(self, suffix: str) -> Location:
        """The same place with ``suffix`` added to its name (a temporary name, the error file)."""
        return Location(self.fs, self.path + suffix, self.uri + suffix, self.endpoint_url, self.region)

    def exists(self) -> bool:
        return bool(self.fs.get_file_info(self.path).type != pafs.FileType.NotFound)

    def is_dir(self) -> bool:
        return bool(self.fs.get_file_info(self.path).type == pafs.FileType.Directory)


def locate(uri: str, endpoint_url: str | None = None, region: str | None = None) -> Location:
    """The :class:`Location` of a local path or ``s3://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInput(f"{uri!r} names no bucket (s3://bucket/key)")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        options: dict[str, object] = {"region": region}
        if endpoint:
            ep = urlparse(endpoint)
            options.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
        fs = pafs.S3FileSystem(**options)  # type: ignore[arg-type]
        return Location(fs, f"{parsed.netloc}/{parsed.path.lstrip('/')}", uri, endpoint, region)
    if parsed.scheme not in ("", "file"):
        raise InvalidInput(f"{uri!r}: inputs and outputs are local paths or s3:// URIs")
    local = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().absolute()
    return Location(pafs.LocalFileSystem(), str(local), str(local))


def upload(local: str, loc: Location) -> None:
    """Put the finished local file ``local`` at ``loc`` in the object store (boto3, as the model registry does):
    the object appears only once the upload is complete, so readers never see a partial output."""
    import boto3  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    bucket, _, key = loc.path.partition("/")
    client = boto3.client("s3", endpoint_url=loc.endpoint_url, region_name=loc.region)
    try:
        client.upload_file(local, bucket, key)
    except (BotoCoreError, ClientError) as exc:
        raise MlportError(f"cannot write {loc.uri}: {exc}", ErrorCode.UNAVAILABLE) from exc
