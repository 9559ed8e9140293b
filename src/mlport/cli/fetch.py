"""``mlport serve s3://bucket/prefix``: copy the models under an object-store prefix to a local folder first.

The copy keeps the objects' relative paths (checked: no ``..``, no absolute names), is bounded in files and bytes,
and, given the sha256 the hub recorded (``--expect-sha256``), is verified before anything is served: a file's
sha256, or for a folder the digest the registry computes over its files.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlport.errors import InvalidInput, MlportError

__all__ = ["MAX_FETCH_BYTES", "MAX_FETCH_FILES", "fetch_models", "is_remote"]

#: Most objects and bytes copied for one ``serve``.
MAX_FETCH_FILES = 10_000
MAX_FETCH_BYTES = 64 * 1024**3


def is_remote(path: str) -> bool:
    return path.startswith("s3://")


def fetch_models(uri: str, dest: Path, *, endpoint_url: str | None = None, sha256: str | None = None) -> Path:
    """Copy ``s3://bucket/prefix`` (a folder of objects, or one object) into ``dest``; returns what to serve."""
    from mlport.registry.store import S3Store

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    store = S3Store(bucket, prefix, endpoint_url=endpoint)
    keys = store.list("")
    if keys:
        _copy(store, keys, dest)
        served = dest
    else:
        parent, _, name = prefix.rpartition("/")
        if not name:
            raise InvalidInput(f"{uri} holds no objects")
        one = S3Store(bucket, parent, endpoint_url=endpoint)
        if not one.exists(name):
            raise InvalidInput(f"{uri} holds no objects")
        _copy(one, [name], dest)
        served = dest / name
    if sha256 is not None:
        _verify(served, sha256.lower(), uri)
    return served


def _copy(store: object, keys: list[str], dest: Path) -> None:
    from mlport.registry.store import S3Store, check_key

    assert isinstance(store, S3Store)
    if len(keys) > MAX_FETCH_FILES:
        raise InvalidInput(f"more than {MAX_FETCH_FILES} objects to fetch")
    total = 0
    root = dest.resolve()
    for key in keys:
        local = (root / check_key(key)).resolve()
        if root not in local.parents:
            raise InvalidInput(f"object key {key!r} would leave the model folder")
        total += store.size(key)
        if total > MAX_FETCH_BYTES:
            raise InvalidInput(f"the models under {store.url} exceed {MAX_FETCH_BYTES} bytes")
        local.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, local)


def _verify(path: Path, want: str, uri: str) -> None:
    from mlport.registry.artifact import folder_digest, sha256_file

    if path.is_file():
        got = sha256_file(path)
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        got = folder_digest((p.relative_to(path).as_posix(), sha256_file(p)) for p in files)
    if got != want:
        raise MlportError(f"{uri}: the fetched models have sha256 {got}, expected {want}; nothing is served")
