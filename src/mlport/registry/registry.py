"""The model registry: named models with immutable, numbered versions whose artifacts live in a store.

Metadata lives in the hub's database (tables ``registry_models`` and ``registry_versions``); artifacts live
in an :class:`~mlport.registry.store.ArtifactStore` under ``models/{model}/{version}/{filename}``.  A version
row is written only after its artifact is completely in the store, so a version that can be read can
always be fetched; a failed upload leaves neither a row nor keys behind.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mlport.core.sqlitedb import Database
from mlport.errors import Conflict, ErrorCode, InvalidInput, MlportError, ModelNotFound, PayloadTooLarge, valid_name
from mlport.formats.base import ModelFormat
from mlport.registry.archive import DEFAULT_MAX_FILES, archive_stem, extract_archive, is_archive
from mlport.registry.artifact import (
    LocalArtifact,
    declares_trust,
    describe_signature,
    detect_format,
    folder_digest,
    inspect_local,
    sha256_file,
)
from mlport.registry.store import ArtifactStore, KeyNotFound, check_key
from mlport.registry.types import (
    MAX_DESCRIPTION,
    SCHEMA,
    ModelInfo,
    VersionInfo,
    check_filename,
    check_labels,
    check_tags,
    check_text,
    model_info,
    version_info,
)

__all__ = ["MARKER_NAME", "STORE_ROOT", "ModelRegistry"]

#: Store prefix of the artifacts the registry uploads itself.
STORE_ROOT = "models"
#: File beside a fetched artifact holding its verified sha256.
MARKER_NAME = ".mlport-sha256"

_MODEL_COLUMNS = """m.name, m.description, m.labels, m.created_at, m.created_by,
    (SELECT MAX(v.version) FROM registry_versions v WHERE v.model = m.name) AS latest_version"""


class ModelRegistry:
    """Models and their versions; every method blocks (call it from a worker thread in async code)."""

    def __init__(self, db: Database, store: ArtifactStore, *, describe_timeout_s: float = 120.0,
                 max_upload_bytes: int = 4 * 1024**3, max_files: int = DEFAULT_MAX_FILES,
                 max_extracted_bytes: int | None = None, tmp_dir: Path | None = None) -> None:
        if describe_timeout_s <= 0 or max_upload_bytes <= 0 or max_files <= 0:
            raise ValueError("registry limits must be positive")
        self.db = db
        self.store = store
        self.describe_timeout_s = describe_timeout_s
        self.max_upload_bytes = max_upload_bytes
        self.max_files = max_files
        #: Largest unpacked archive (default: twice the upload limit, as archives are compressed).
        self.max_extracted_bytes = max_extracted_bytes or 2 * max_upload_bytes
        #: Where uploads are staged and archives extracted (default: the system temporary folder).
        self.tmp_dir = tmp_dir
        self._fetch_locks: dict[tuple[str, str, int], threading.Lock] = {}
        self._fetch_locks_guard = threading.Lock()
        db.migrate(SCHEMA)

    # ----------------------------------------------------------------------------------------------- models

    def create_model(self, name: str, *, description: str = "", labels: dict[str, str] | None = None,
                     created_by: str) -> ModelInfo:
        valid_name(name, "model")
        check_text(description, "description", MAX_DESCRIPTION)
        check_text(created_by, "created_by", 256)
        labels = check_labels(labels or {})
        now = time.time()
        try:
            self.db.execute(
                "INSERT INTO registry_models (name, description, labels, created_at, created_by, next_version) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (name, description, json.dumps(labels, sort_keys=True), now, created_by))
        except sqlite3.IntegrityError:
            raise Conflict(f"model '{name}' exists already") from None
        return ModelInfo(name, description, labels, now, created_by, None)

    def list_models(self) -> list[ModelInfo]:
        rows = self.db.all(f"SELECT {_MODEL_COLUMNS} FROM registry_models m ORDER BY m.name")
        return [model_info(r) for r in rows]

    def get_model(self, name: str) -> ModelInfo:
        row = self.db.one(f"SELECT {_MODEL_COLUMNS} FROM registry_models m WHERE m.name = ?", (name,))
        if row is None:
            raise ModelNotFound(f"model '{name}' is not in the registry")
        return model_info(row)

    def delete_model(self, name: str, *, in_use: Callable[[str], bool]) -> None:
        """Delete the model, its versions and the artifacts the registry uploaded for it.

        Artifacts registered from elsewhere in the store (:meth:`register_path`) are left where they are.
        """
        self.get_model(name)
        if in_use(name):
            raise Conflict(f"model '{name}' is deployed by at least one deployment; delete or change those first")
        # artifacts first: when that fails the model is still whole and the delete can be retried
        self.store.delete_prefix(self._model_prefix(name))
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM registry_versions WHERE model = ?", (name,))
            conn.execute("DELETE FROM registry_models WHERE name = ?", (name,))

    # --------------------------------------------------------------------------------------------- versions

    def add_version(self, model: str, source: Path, *, filename: str | None = None, created_by: str,
                    description: str = "", tags: list[str] | None = None, trusted: bool = False,
                    source_name: str | None = None) -> VersionInfo:
        """Store a local file, folder or archive as the model's next version.  ``source_name`` is what the
        version's ``source`` records (default: the local path), e.g. the user's file name of an upload."""
        self.get_model(model)
        source = Path(source)
        filename = check_filename(filename if filename is not None else (source.name or source.resolve().name))
        check_text(description, "description", MAX_DESCRIPTION)
        check_text(created_by, "created_by", 256)
        tags = check_tags(tags or [])
        recorded = check_text(source_name, "source", MAX_DESCRIPTION) if source_name else str(source)
        if not source.exists():
            raise InvalidInput(f"{filename} does not exist")
        with tempfile.TemporaryDirectory(prefix="mlport-upload-", dir=self.tmp_dir) as tmp:
            staged, filename, extracted = self._stage(source, filename, Path(tmp))
            limit = self.max_extracted_bytes if extracted else self.max_upload_bytes
            artifact = inspect_local(staged, filename, max_files=self.max_files, max_bytes=limit)
            fmt, signature, why = self._examine(model, artifact, filename, trusted)
            version = self._reserve(model)
            key = f"{self._model_prefix(model)}/{version}/{filename}"
            try:
                self.store.delete_prefix(f"{self._model_prefix(model)}/{version}")  # leftovers of a failed delete
                self._upload(artifact, key)
                info = VersionInfo(model, version, fmt.name, signature, artifact.size, artifact.sha256, time.time(),
                                   created_by, description, tags, recorded, key, artifact.kind, filename,
                                   signature_error=why)
                self._insert(info)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.store.delete_prefix(f"{self._model_prefix(model)}/{version}")
                self._release(model, version)
                raise
        return info

    def register_path(self, model: str, store_key: str, *, created_by: str, description: str = "",
                      tags: list[str] | None = None) -> VersionInfo:
        """Record an artifact already in the store (a file key or a folder prefix) as the next version."""
        self.get_model(model)
        key = check_key(store_key.rstrip("/") if isinstance(store_key, str) else store_key)
        if key == STORE_ROOT or key.startswith(STORE_ROOT + "/"):
            raise InvalidInput(f"store key {key!r} is inside the registry's own area '{STORE_ROOT}/'; "
                               "upload the artifact as a version instead")
        check_text(description, "description", MAX_DESCRIPTION)
        check_text(created_by, "created_by", 256)
        tags = check_tags(tags or [])
        filename = check_filename(key.rsplit("/", 1)[-1])
        with tempfile.TemporaryDirectory(prefix="mlport-register-", dir=self.tmp_dir) as tmp:
            local = Path(tmp) / filename
            kind = self._download(key, local, trusted_size=None)
            artifact = inspect_local(local, filename, max_files=self.max_files, max_bytes=self.max_upload_bytes)
            if artifact.kind != kind:  # pragma: no cover - the download decides the kind
                raise MlportError(f"{key}: downloaded as a {artifact.kind}, expected a {kind}")
            fmt, signature, why = self._examine(model, artifact, filename, trusted=False)
            version = self._reserve(model)
            info = VersionInfo(model, version, fmt.name, signature, artifact.size, artifact.sha256, time.time(),
                               created_by, description, tags, f"{self.store.url.rstrip('/')}/{key}", key, kind,
                               filename, signature_error=why)
            try:
                self._insert(info)
            except BaseException:
                self._release(model, version)
                raise
        return info

    def list_versions(self, model: str) -> list[VersionInfo]:
        self.get_model(model)
        rows = self.db.all("SELECT * FROM registry_versions WHERE model = ? ORDER BY version", (model,))
        return [version_info(r) for r in rows]

    def get_version(self, model: str, version: int) -> VersionInfo:
        row = self.db.one("SELECT * FROM registry_versions WHERE model = ? AND version = ?", (model, int(version)))
        if row is None:
            self.get_model(model)
            raise ModelNotFound(f"model '{model}' has no version {version}")
        return version_info(row)

    # ------------------------------------------------------------------------------------------- artifacts

    def fetch(self, model: str, version: int, dest_root: Path) -> Path:
        """A verified local copy of the version under ``dest_root/{model}/{version}/``; returns its path."""
        valid_name(model, "model")
        info = self.get_version(model, version)
        target = Path(dest_root) / model / str(info.version)
        artifact = target / info.filename
        with self._fetch_lock(Path(dest_root), model, info.version):
            if self._cached(target, artifact, info):
                return artifact
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{info.version}.fetch-", dir=target.parent))
            try:
                self._download(info.store_key, tmp / info.filename, trusted_size=info.size, kind=info.kind)
                got = self._digest(tmp / info.filename, info)
                if got != info.sha256:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(target)
                    raise MlportError(f"model '{model}' version {version}: the stored artifact is corrupt "
                                      f"(sha256 {got}, expected {info.sha256}); the copy was removed")
                (tmp / MARKER_NAME).write_text(info.sha256 + "\n", encoding="ascii")
                self._swap_in(tmp, target, artifact, info)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return artifact

    def open_artifact(self, model: str, version: int) -> tuple[BinaryIO, int, str]:
        """A stream of the version's artifact, its size and file name (a folder comes as an uncompressed tar)."""
        info = self.get_version(model, version)
        if info.kind == "file":
            return self.store.open_read(info.store_key), info.size, info.filename
        spool: BinaryIO = tempfile.TemporaryFile(prefix="mlport-artifact-")  # noqa: SIM115 - returned open
        try:
            with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for key in self.store.list(info.store_key):
                    rel = key[len(info.store_key) + 1:]
                    member = tarfile.TarInfo(f"{info.filename}/{check_key(rel)}")
                    member.size = self.store.size(key)
                    member.mtime = int(info.created_at)
                    member.mode = 0o644
                    with self.store.open_read(key) as src:
                        tar.addfile(member, src)
            size = spool.tell()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool, size, f"{info.filename}.tar"

    # ---------------------------------------------------------------------------------------------- private

    @staticmethod
    def _model_prefix(model: str) -> str:
        return f"{STORE_ROOT}/{valid_name(model, 'model')}"

    def _stage(self, source: Path, filename: str, tmp: Path) -> tuple[Path, str, bool]:
        """The artifact to store, its name and whether it was extracted: an archive is extracted, a file is
        given its upload name."""
        if source.is_file() and is_archive(filename):
            if source.stat().st_size > self.max_upload_bytes:
                raise PayloadTooLarge(f"{filename} is larger than {self.max_upload_bytes} bytes")
            folder = extract_archive(source, tmp / "x", max_files=self.max_files, max_bytes=self.max_extracted_bytes,
                                     name=filename)
            children = list(folder.iterdir())
            if len(children) == 1:  # one folder (or one file) at the top: that is the model
                only = children[0]
                return only, check_filename(only.name), True
            stem = check_filename(archive_stem(filename) or "model")
            return folder.rename(tmp / stem), stem, True
        if source.is_file() and source.name != filename:
            staged = tmp / filename
            try:
                staged.hardlink_to(source)
            except OSError:
                shutil.copyfile(source, staged)
            return staged, filename, False
        return source, filename, False

    def _examine(self, model: str, artifact: LocalArtifact, label: str,
                 trusted: bool) -> tuple[ModelFormat, dict[str, Any] | None, str | None]:
        """The format, the signature, and why the signature could not be read (None when it was)."""
        if not trusted:
            declared = declares_trust(artifact)
            if declared is not None:
                raise InvalidInput(f"{label}: {declared} declares 'trusted: true'; a model cannot trust itself, "
                                   "only a trusted upload may run code")
        fmt = detect_format(artifact.path, label)
        if fmt.runs_code and not trusted:
            return fmt, None, (f"{fmt.name} models run code when they load, so the signature is read only from a "
                               "trusted upload")
        signature, reason = describe_signature(artifact.path, model, trusted=trusted,
                                               timeout_s=self.describe_timeout_s)
        return fmt, signature, reason

    def _reserve(self, model: str) -> int:
        """The model's next version number, taken atomically."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT next_version FROM registry_models WHERE name = ?", (model,)).fetchone()
            if row is None:
                raise ModelNotFound(f"model '{model}' is not in the registry")
            version = int(row[0])
            conn.execute("UPDATE registry_models SET next_version = ? WHERE name = ?", (version + 1, model))
        return version

    def _release(self, model: str, version: int) -> None:
        """Give an unused number back, unless a later one was taken meanwhile."""
        with contextlib.suppress(sqlite3.Error):
            self.db.changes("UPDATE registry_models SET next_version = ? WHERE name = ? AND next_version = ?",
                            (version, model, version + 1))

    def _insert(self, info: VersionInfo) -> None:
        try:
            self.db.execute(
                "INSERT INTO registry_versions (model, version, format, signature, size, sha256, created_at, "
                "created_by, description, tags, source, store_key, kind, filename) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (info.model, info.version, info.format,
                 json.dumps(info.signature) if info.signature is not None else None, info.size, info.sha256,
                 info.created_at, info.created_by, info.description, json.dumps(info.tags), info.source,
                 info.store_key, info.kind, info.filename))
        except sqlite3.IntegrityError:
            raise ModelNotFound(f"model '{info.model}' was deleted while its version was stored") from None

    def _upload(self, artifact: LocalArtifact, key: str) -> None:
        if artifact.kind == "file":
            self.store.put_file(key, artifact.path)
            return
        for rel, path, _ in artifact.files:
            self.store.put_file(f"{key}/{rel}", path)

    def _download(self, key: str, local: Path, *, trusted_size: int | None, kind: str | None = None) -> str:
        """Copy the file key or folder prefix ``key`` to ``local``; returns "file" or "folder"."""
        if kind != "folder" and self.store.exists(key):
            size = self.store.size(key)
            if size > self.max_upload_bytes and trusted_size is None:
                raise PayloadTooLarge(f"{key} is larger than {self.max_upload_bytes} bytes")
            self.store.get_file(key, local)
            return "file"
        keys = self.store.list(key) if kind != "file" else []
        if not keys:
            raise KeyNotFound(f"nothing in the store under key {key!r}")
        if len(keys) > self.max_files:
            raise PayloadTooLarge(f"{key} holds more than {self.max_files} files")
        total = 0
        for full in keys:
            rel = check_key(full[len(key) + 1:])
            dest = local / rel
            if trusted_size is None:
                total += self.store.size(full)
                if total > self.max_upload_bytes:
                    raise PayloadTooLarge(f"{key} is larger than {self.max_upload_bytes} bytes")
            self.store.get_file(full, dest)
        return "folder"

    @staticmethod
    def _digest(path: Path, info: VersionInfo) -> str:
        if info.kind == "file":
            return sha256_file(path) if path.is_file() else ""
        if not path.is_dir():
            return ""
        files = [p for p in path.rglob("*") if p.is_file()]
        return folder_digest((p.relative_to(path).as_posix(), sha256_file(p)) for p in files)

    @staticmethod
    def _cached(target: Path, artifact: Path, info: VersionInfo) -> bool:
        try:
            marker = (target / MARKER_NAME).read_text(encoding="ascii").strip()
        except (OSError, UnicodeError):
            return False
        exists = artifact.is_file() if info.kind == "file" else artifact.is_dir()
        return marker == info.sha256 and exists

    def _swap_in(self, tmp: Path, target: Path, artifact: Path, info: VersionInfo) -> None:
        """Rename the verified download into place (replacing a stale copy), atomically per rename."""
        for _ in range(3):
            try:
                tmp.rename(target)
                return
            except OSError:
                if self._cached(target, artifact, info):
                    return  # another process put a good copy there first
                stale = target.with_name(f".{target.name}.stale-{time.monotonic_ns()}")
                with contextlib.suppress(FileNotFoundError):
                    target.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
        raise MlportError(f"could not put the copy of model '{info.model}' version {info.version} in place",
                          ErrorCode.UNAVAILABLE)

    @contextlib.contextmanager
    def _fetch_lock(self, root: Path, model: str, version: int) -> Iterator[None]:
        key = (str(root.resolve()), model, version)
        with self._fetch_locks_guard:
            lock = self._fetch_locks.setdefault(key, threading.Lock())
        with lock:
            yield
