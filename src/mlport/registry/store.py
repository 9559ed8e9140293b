"""Where model artifacts live: a local folder or an S3 bucket, behind one small interface.

Keys are POSIX relative paths (``models/iris/3/model.onnx``).  Every key is checked by :func:`check_key`
before it touches a file system or a bucket, so a key from a request can never name something outside the
store.  A "prefix" is a folder of keys: ``list("models/iris")`` returns the keys under ``models/iris/``.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from mlport.errors import ErrorCode, InvalidInput, MlportError

__all__ = [
    "MAX_KEY_BYTES",
    "ArtifactStore",
    "KeyNotFound",
    "LocalStore",
    "S3Store",
    "StoreUnavailable",
    "check_key",
    "open_store",
]

#: Longest key accepted, in UTF-8 bytes (S3's own limit).
MAX_KEY_BYTES = 1024
#: Name prefix of the files a :class:`LocalStore` writes before renaming them into place.
_TMP_PREFIX = ".mlport-tmp-"
_CHUNK = 1024 * 1024


class KeyNotFound(MlportError):
    """No artifact under this key (HTTP 404)."""

    code = ErrorCode.NOT_FOUND


class StoreUnavailable(MlportError):
    """The store could not be reached or refused the operation (HTTP 503)."""

    code = ErrorCode.UNAVAILABLE


def check_key(key: str) -> str:
    """Return ``key`` when it is a safe relative POSIX key, else raise :class:`InvalidInput`."""
    if not isinstance(key, str) or not key:
        raise InvalidInput("store key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInput(f"store key is longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise InvalidInput("store key must not contain NUL characters")
    if "\\" in key:
        raise InvalidInput(f"store key {key!r} must use '/' as separator, not backslashes")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise InvalidInput(f"store key {key!r} must be relative")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"store key {key!r} must not contain empty, '.' or '..' segments")
    if any(ord(c) < 32 for c in key):
        raise InvalidInput(f"store key {key!r} must not contain control characters")
    return key


def _folder(prefix: str) -> str:
    """A prefix without its trailing slashes, checked ("" is the whole store)."""
    p = prefix.rstrip("/")
    return check_key(p) if p else ""


@runtime_checkable
class ArtifactStore(Protocol):
    """Files by key.  Writes are whole-object: a key is either absent or holds the complete content."""

    url: str

    def put_file(self, key: str, local: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def open_read(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> builtins.list[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def size(self, key: str) -> int: ...


def _copy_atomic(src: BinaryIO, dest: Path) -> None:
    """Write ``src`` to a temporary file beside ``dest``, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LocalStore:
    """Artifacts in a folder; keys are paths below ``root`` (symlinks that lead out are refused)."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the artifact folder {root}: {exc.strerror or exc}") from None
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        if not path.resolve().is_relative_to(self.root):
            raise InvalidInput(f"store key {key!r} leads outside the store")
        return path

    @contextlib.contextmanager
    def _os_errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:
            raise KeyNotFound(f"no artifact under key {key!r}") from None
        except (IsADirectoryError, NotADirectoryError):
            raise InvalidInput(f"store key {key!r} clashes with a folder of the same name") from None
        except OSError as exc:
            raise StoreUnavailable(f"artifact store: {key!r}: {exc.strerror or exc}") from None

    def put_file(self, key: str, local: Path) -> None:
        path = self._path(key)
        with open(local, "rb") as src, self._os_errors(key):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path(key)  # the folders just made must still be inside
            _copy_atomic(src, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._os_errors(key):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path(key)
            _copy_atomic(io.BytesIO(data), path)

    def get_file(self, key: str, local: Path) -> None:
        path = self._path(key)
        if not path.is_file():
            raise KeyNotFound(f"no artifact under key {key!r}")
        with self._os_errors(key), open(path, "rb") as src:
            _copy_atomic(src, Path(local))

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        if not path.is_file():
            raise KeyNotFound(f"no artifact under key {key!r}")
        with self._os_errors(key):
            return open(path, "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise KeyNotFound(f"no artifact under key {key!r}")
        with self._os_errors(key):
            return path.stat().st_size

    def list(self, prefix: str) -> builtins.list[str]:
        folder = _folder(prefix)
        base = self._path(folder) if folder else self.root
        if not base.is_dir() or base.is_symlink():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
            for name in filenames:
                full = here / name
                if name.startswith(_TMP_PREFIX) or full.is_symlink() or not full.is_file():
                    continue
                keys.append(full.relative_to(self.root).as_posix())
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        folder = _folder(prefix)
        if not folder:
            raise InvalidInput("refusing to delete the whole store: give a prefix")
        path = self._path(folder)
        with self._os_errors(folder):
            if path.is_symlink() or path.is_file():
                path.unlink()
                count = 1
            elif path.is_dir():
                count = len(self.list(folder))
                shutil.rmtree(path)
            else:
                return 0
            self._prune(path.parent)
        return count

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty up to the root."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


class _BodyReader(io.RawIOBase):
    """An S3 response body as a raw binary stream (to wrap in :class:`io.BufferedReader`)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Store:
    """Artifacts in an S3 (or S3-protocol) bucket under ``prefix``; credentials default to the environment."""

    #: Keys per listing page and per delete request (1000 is S3's maximum for both).
    page_size = 1000
    delete_batch = 1000

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None) -> None:
        import boto3  # type: ignore[import-untyped]
        from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        if not bucket or "/" in bucket or len(bucket) > 255:
            raise InvalidInput(f"S3 bucket name {bucket!r} is invalid")
        self.bucket = bucket
        self.prefix = _folder(prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        config = Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 4, "mode": "standard"},
                        s3={"addressing_style": "path"} if endpoint_url else None)
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                         aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                         config=config)
        self._transfer: Any = TransferConfig(multipart_threshold=16 * 1024 * 1024,
                                             multipart_chunksize=16 * 1024 * 1024, max_concurrency=4)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _full(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error  # type: ignore[import-untyped]
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StoreUnavailable(f"S3 bucket {self.bucket!r} does not exist") from None
            if code in ("404", "NoSuchKey", "NotFound") or status == 404:
                raise KeyNotFound(f"no artifact under key {key!r}") from None
            raise StoreUnavailable(f"S3 {self.url}: {key!r}: {code or status}: {err.get('Message', '')}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 {self.url}: {key!r}: {exc}") from None
        except Boto3Error as exc:  # upload/download failures of the transfer manager
            raise StoreUnavailable(f"S3 {self.url}: {key!r}: {exc}") from None

    def put_file(self, key: str, local: Path) -> None:
        full = self._full(key)
        with self._errors(key):
            self._client.upload_file(str(local), self.bucket, full, Config=self._transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(key)
        with self._errors(key):
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def get_file(self, key: str, local: Path) -> None:
        full = self._full(key)
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=_TMP_PREFIX)
        os.close(fd)
        try:
            with self._errors(key):
                self._client.download_file(self.bucket, full, tmp, Config=self._transfer)
            os.replace(tmp, local)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def open_read(self, key: str) -> BinaryIO:
        full = self._full(key)
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=full)["Body"]
        return io.BufferedReader(_BodyReader(body), _CHUNK)  # type: ignore[return-value]

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except KeyNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        full = self._full(key)
        with self._errors(key):
            head = self._client.head_object(Bucket=self.bucket, Key=full)
        return int(head["ContentLength"])

    def _list_full(self, folder: str) -> list[str]:
        base = self._full(folder) if folder else self.prefix
        search = base + "/" if base else ""
        keys: list[str] = []
        with self._errors(folder or "/"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=search, PaginationConfig={"PageSize": self.page_size})
            for page in pages:
                keys.extend(str(obj["Key"]) for obj in page.get("Contents", []))
        return keys

    def list(self, prefix: str) -> builtins.list[str]:
        return sorted(self._relative(k) for k in self._list_full(_folder(prefix)))

    def delete_prefix(self, prefix: str) -> int:
        folder = _folder(prefix)
        if not folder:
            raise InvalidInput("refusing to delete the whole store: give a prefix")
        doomed = self._list_full(folder)
        if self.exists(folder):
            doomed.append(self._full(folder))
        deleted = 0
        for start in range(0, len(doomed), self.delete_batch):
            batch = doomed[start:start + self.delete_batch]
            with self._errors(folder):
                reply = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreUnavailable(f"S3 {self.url}: could not delete {len(errors)} keys under {folder!r} "
                                       f"(first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})")
            deleted += len(batch)
        return deleted


_S3_OPTIONS = frozenset({"endpoint_url", "region", "access_key", "secret_key"})


def open_store(url: str, **s3_options: str | None) -> ArtifactStore:
    """The store at ``url``: ``file:///path``, a plain path, or ``s3://bucket/prefix`` (``s3_options``:
    ``endpoint_url``, ``region``, ``access_key``, ``secret_key``)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("artifact store URL is empty")
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        unknown = set(s3_options) - _S3_OPTIONS
        if unknown:
            raise InvalidInput(f"unknown S3 store options: {', '.join(sorted(unknown))}")
        if not parsed.netloc:
            raise InvalidInput(f"artifact store URL {url!r} names no bucket (s3://bucket/prefix)")
        return S3Store(parsed.netloc, unquote(parsed.path).strip("/"), **s3_options)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidInput(f"artifact store URL {url!r}: only local file URLs are supported")
        return LocalStore(Path(unquote(parsed.path)))
    if scheme == "":
        return LocalStore(Path(url).expanduser())
    raise InvalidInput(f"artifact store URL {url!r}: use file:///path, a folder path or s3://bucket/prefix")
