"""Safe extraction of uploaded model archives (.tar, .tar.gz, .tgz, .zip).

Nothing in an archive is trusted: member names are checked one by one (no absolute names, no ``..``, no
backslashes, no duplicates), only regular files and folders are written (links, devices and FIFOs are
refused), and the number of files and the bytes actually written are counted against limits while
extracting, so a member that lies about its size cannot fill the disk.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from mlport.errors import InvalidInput, PayloadTooLarge

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DEFAULT_MAX_EXTRACTED_BYTES",
    "DEFAULT_MAX_FILES",
    "archive_stem",
    "extract_archive",
    "is_archive",
]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_EXTRACTED_BYTES = 8 * 1024**3
#: Longest member name accepted (bytes of UTF-8).
MAX_MEMBER_NAME = 1024
_CHUNK = 1024 * 1024


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def is_archive(name: str) -> bool:
    """True when ``name`` ends with one of :data:`ARCHIVE_SUFFIXES` (case-insensitive)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(name: str) -> str:
    """``iris.tar.gz`` -> ``iris``: the name without its archive suffix."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _member_path(name: str, archive: str) -> str | None:
    """The member's checked relative path (``None`` for the archive's root entry)."""
    if "\x00" in name:
        raise InvalidInput(f"{archive}: a member name contains a NUL character")
    if "\\" in name:
        raise InvalidInput(f"{archive}: member {name!r} uses backslashes; only '/' separators are accepted")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_MEMBER_NAME:
        raise InvalidInput(f"{archive}: a member name is longer than {MAX_MEMBER_NAME} bytes")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"{archive}: member {name!r} has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"{archive}: member {name!r} leads outside the archive ('..')")
    if any(ord(c) < 32 for c in name):
        raise InvalidInput(f"{archive}: member {name!r} has control characters in its name")
    return "/".join(parts) or None


class _Extractor:
    """Writes members below ``dest`` and keeps the counts."""

    def __init__(self, label: str, dest: Path, max_files: int, max_bytes: int) -> None:
        self.label = label
        self.dest = dest
        self.root = dest.resolve()
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.files = 0
        self.bytes = 0

    def _target(self, rel: str) -> Path:
        target = self.dest / rel
        if not target.parent.resolve().is_relative_to(self.root):
            raise InvalidInput(f"{self.label}: member {rel!r} leads outside the archive")
        return target

    def folder(self, rel: str) -> None:
        target = self._target(rel)
        if target.exists() and not target.is_dir():
            raise InvalidInput(f"{self.label}: {rel!r} is both a file and a folder")
        target.mkdir(parents=True, exist_ok=True)

    def count(self, rel: str, declared: int) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise PayloadTooLarge(f"{self.label} holds more than {self.max_files} files")
        if declared < 0 or self.bytes + declared > self.max_bytes:
            raise PayloadTooLarge(f"{self.label} extracts to more than {self.max_bytes} bytes (at {rel!r})")

    def file(self, rel: str, src: _Readable) -> None:
        target = self._target(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._target(rel)
        try:
            out = open(target, "xb")  # noqa: SIM115 - closed by the with block below
        except FileExistsError:
            raise InvalidInput(f"{self.label}: {rel!r} appears twice") from None
        except IsADirectoryError:
            raise InvalidInput(f"{self.label}: {rel!r} is both a file and a folder") from None
        with out:
            while chunk := src.read(_CHUNK):
                self.bytes += len(chunk)
                if self.bytes > self.max_bytes:
                    raise PayloadTooLarge(f"{self.label} extracts to more than {self.max_bytes} bytes (at {rel!r})")
                out.write(chunk)


def _extract_tar(archive: Path, ex: _Extractor) -> None:
    with tarfile.open(archive, "r:*") as tar:
        entries = 0
        for member in tar:
            entries += 1
            if entries > ex.max_files * 2 + 16:  # folders count too, but not without bound
                raise PayloadTooLarge(f"{ex.label} holds more than {ex.max_files} files")
            rel = _member_path(member.name, ex.label)
            if member.isdir():
                if rel is not None:
                    ex.folder(rel)
                continue
            if not member.isreg():
                kind = "link" if member.issym() or member.islnk() else "special file"
                raise InvalidInput(f"{ex.label}: member {member.name!r} is a {kind}; only files and folders "
                                   "are accepted")
            if rel is None:
                raise InvalidInput(f"{ex.label}: a file member has an empty name")
            ex.count(rel, member.size)
            src = tar.extractfile(member)
            if src is None:  # pragma: no cover - regular members always have data
                raise InvalidInput(f"{ex.label}: member {member.name!r} has no data")
            with src:
                ex.file(rel, src)


def _extract_zip(archive: Path, ex: _Extractor) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > ex.max_files * 2 + 16:  # folders count too, but not without bound
            raise PayloadTooLarge(f"{ex.label} holds more than {ex.max_files} files")
        for info in infos:
            rel = _member_path(info.filename, ex.label)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (a plain entry)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise InvalidInput(f"{ex.label}: member {info.filename!r} is a link or special file; only files "
                                   "and folders are accepted")
            if info.flag_bits & 0x1:
                raise InvalidInput(f"{ex.label}: member {info.filename!r} is encrypted")
            if info.is_dir():
                if rel is not None:
                    ex.folder(rel)
                continue
            if rel is None:
                raise InvalidInput(f"{ex.label}: a file member has an empty name")
            ex.count(rel, info.file_size)
            with zf.open(info) as src:
                ex.file(rel, src)


@contextlib.contextmanager
def _readable(label: str) -> Iterator[None]:
    try:
        yield
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise InvalidInput(f"{label} is not a readable archive: {exc}") from None
    except NotImplementedError as exc:  # zip compression methods the standard library lacks
        raise InvalidInput(f"{label}: {exc}") from None
    except UnicodeError:
        raise InvalidInput(f"{label}: a member name is not valid text") from None


def extract_archive(archive: Path, dest: Path, *, max_files: int = DEFAULT_MAX_FILES,
                    max_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES, name: str | None = None) -> Path:
    """Extract ``archive`` into the new or empty folder ``dest`` and return ``dest``.

    ``name`` is the archive's file name as uploaded (default: the file's own name); its suffix tells the type.

    Raises :class:`InvalidInput` for an unreadable archive or an unsafe member, and :class:`PayloadTooLarge`
    beyond ``max_files`` files or ``max_bytes`` extracted bytes; on any failure ``dest`` is left empty.
    """
    archive, dest = Path(archive), Path(dest)
    label = name or archive.name
    name = label.lower()
    if not is_archive(name):
        raise InvalidInput(f"{label} is not an archive: use .tar, .tar.gz, .tgz or .zip")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"cannot extract {label}: {dest.name} is not an empty folder")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    ex = _Extractor(label, dest, max_files, max_bytes)
    try:
        with _readable(label):
            if name.endswith(".zip"):
                _extract_zip(archive, ex)
            else:
                _extract_tar(archive, ex)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return dest
