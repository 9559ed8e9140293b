"""What the registry learns from a local artifact before storing it: files, size, digest, format, signature.

Nothing here imports or loads a model: the format comes from file names and headers, and the signature from
``mlport describe`` run in a child process with a time limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlport.errors import InvalidInput, MlportError, PayloadTooLarge
from mlport.formats.base import ModelFormat
from mlport.formats.registry import FormatRegistry, default_registry
from mlport.registry.store import check_key

__all__ = [
    "LocalArtifact",
    "declares_trust",
    "describe_signature",
    "detect_format",
    "folder_digest",
    "inspect_local",
    "read_signature",
    "sha256_file",
]

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: Config files larger than this are not searched for ``trusted:`` (the runtime refuses them anyway).
_MAX_CONFIG_BYTES = 4 * 1024 * 1024
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
#: Most bytes of ``describe`` output read back.
_MAX_DESCRIBE_OUTPUT = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digest(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 of the sorted lines ``relpath\\0sha256\\n`` of a folder's files."""
    digest = hashlib.sha256()
    for rel, sha in sorted(entries):
        digest.update(f"{rel}\x00{sha}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class LocalArtifact:
    """A model file or folder on local disk, measured."""

    path: Path
    kind: str  # "file" or "folder"
    #: (relative POSIX path, local path, size) of every file; for a file, one entry with the file's name.
    files: tuple[tuple[str, Path, int], ...]
    size: int
    sha256: str


def _walk_folder(folder: Path, label: str, max_files: int, max_bytes: int) -> list[tuple[str, Path, int]]:
    entries: list[tuple[str, Path, int]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                raise InvalidInput(f"{label}: {(here / name).relative_to(folder).as_posix()!r} is a symbolic link; "
                                   "only files and folders are accepted")
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(folder).as_posix()
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{label}: {rel!r} is a link or special file; only files and folders are accepted")
            try:
                check_key(rel)
            except InvalidInput as exc:
                raise InvalidInput(f"{label}: file {rel!r} has a name the store cannot hold: {exc}") from None
            entries.append((rel, path, st.st_size))
            total += st.st_size
            if len(entries) > max_files:
                raise PayloadTooLarge(f"{label} holds more than {max_files} files")
            if total > max_bytes:
                raise PayloadTooLarge(f"{label} is larger than {max_bytes} bytes")
    if not entries:
        raise InvalidInput(f"{label} holds no files")
    return entries


def inspect_local(path: Path, label: str, *, max_files: int, max_bytes: int) -> LocalArtifact:
    """Measure the file or folder at ``path`` (symbolic links and special files inside a folder are refused)."""
    try:
        st = path.stat()
        if stat.S_ISREG(st.st_mode):
            if st.st_size > max_bytes:
                raise PayloadTooLarge(f"{label} is larger than {max_bytes} bytes")
            return LocalArtifact(path, "file", ((path.name, path, st.st_size),), st.st_size, sha256_file(path))
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidInput(f"{label} is neither a file nor a folder")
        entries = _walk_folder(path, label, max_files, max_bytes)
        digest = folder_digest((rel, sha256_file(p)) for rel, p, _ in entries)
    except FileNotFoundError:
        raise InvalidInput(f"{label} does not exist") from None
    except OSError as exc:
        raise MlportError(f"{label}: cannot read it: {exc.strerror or exc}") from None
    return LocalArtifact(path, "folder", tuple(entries), sum(s for _, _, s in entries), digest)


def _has_trust(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any((k == "trusted" and v is True) or _has_trust(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_trust(v, depth + 1) for v in value)
    return False


def declares_trust(artifact: LocalArtifact) -> str | None:
    """The first config file (model.yaml, a manifest...) that says ``trusted: true``, or ``None``.

    A model's own files must not be able to grant themselves the right to run code.
    """
    for rel, path, size in artifact.files:
        if not rel.lower().endswith(_CONFIG_SUFFIXES) or size > _MAX_CONFIG_BYTES:
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeError, yaml.YAMLError, RecursionError):
            continue  # unreadable: the runtime cannot read it either
        if _has_trust(data):
            return rel
    return None


def detect_format(path: Path, label: str, formats: FormatRegistry | None = None) -> ModelFormat:
    """The format of the model file or folder at ``path``, as ``mlport serve`` would see it.

    A folder no format claims as a whole is read the way the runtime reads it (a folder with one model file,
    a model folder with ``model.yaml`` and version folders...), and must hold exactly one model.
    """
    formats = formats or default_registry()
    fmt = formats.detect(path)
    if fmt is not None:
        return fmt
    if path.is_dir():
        from mlport.runtime.repository import Repository

        try:
            found = Repository(path, formats, name="model").scan()
        except (MlportError, OSError) as exc:
            raise InvalidInput(f"{label}: cannot read the folder: {exc}") from None
        if len(found) > 1:
            raise InvalidInput(f"{label} holds several models ({', '.join(sorted(found))}); store one model "
                               "per version")
        for src in found.values():
            if src.versions:
                return formats.get(src.versions[max(src.versions)].format)
            reason = src.error or "; ".join(src.errors.values())
            if reason:
                raise InvalidInput(f"{label}: {reason}")
    known = ", ".join(sorted(f.name for f in formats.formats))
    raise InvalidInput(f"{label} is not a model of a known format (known formats: {known})")


def read_signature(path: Path, name: str, *, trusted: bool, timeout_s: float) -> dict[str, Any] | None:
    """``{"inputs": [...], "outputs": [...]}`` from ``mlport describe`` in a child process, or ``None``."""
    return describe_signature(path, name, trusted=trusted, timeout_s=timeout_s)[0]


def describe_signature(path: Path, name: str, *, trusted: bool,
                       timeout_s: float) -> tuple[dict[str, Any] | None, str | None]:
    """``({"inputs": [...], "outputs": [...]}, None)`` from ``mlport describe`` in a child process, or
    ``(None, why it could not be read)``."""
    cmd = [sys.executable, "-m", "mlport.cli.main", "describe", str(path), "--name", name]
    if trusted:
        cmd.append("--trusted")
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        log.warning("describe of %s timed out after %.0f s; version recorded without a signature", name, timeout_s)
        return None, f"reading the signature took longer than {timeout_s:.0f} s"
    except OSError as exc:
        log.warning("describe of %s could not start: %s", name, exc)
        return None, f"mlport describe could not start: {exc}"
    if len(proc.stdout) > _MAX_DESCRIBE_OUTPUT:
        log.warning("describe of %s printed too much; version recorded without a signature", name)
        return None, "mlport describe printed too much"
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        err = proc.stderr.decode("utf-8", "replace")[-500:]
        log.warning("describe of %s failed (exit %s): %s", name, proc.returncode, err)
        return None, f"mlport describe failed (exit {proc.returncode}): {err.strip()[-300:]}"
    entry = data.get(name) if isinstance(data, dict) else None
    if entry is None and isinstance(data, dict) and len(data) == 1:
        entry = next(iter(data.values()))
    if not isinstance(entry, dict) or "error" in entry:
        reason = entry.get("error") if isinstance(entry, dict) else "no model found"
        log.info("describe of %s gave no signature: %s", name, reason)
        return None, str(reason)
    inputs, outputs = entry.get("inputs"), entry.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        return None, "the model describes no inputs and outputs"
    return {"inputs": inputs, "outputs": outputs}, None
