"""``hub://MODEL/VERSION`` as the model of ``mlport score``: fetched through the hub's API, sha256-verified, cached.

The hub URL comes from ``--hub`` or ``MLPORT_HUB_URL``, the token from ``--token`` or ``MLPORT_HUB_TOKEN``.
A version fetched once is kept in ``~/.cache/mlport/hub/MODEL/VERSION-SHA256/`` and used again while its
digest matches the hub's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx

from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.registry.archive import extract_archive
from mlport.registry.artifact import folder_digest, sha256_file

__all__ = ["HUB_SCHEME", "fetch_hub_model"]

HUB_SCHEME = "hub://"
#: Largest artifact fetched.
MAX_ARTIFACT_BYTES = 16 * 1024 * 1024 * 1024
TIMEOUT_S = 60.0


def _parse(uri: str) -> tuple[str, int]:
    model, _, version = uri[len(HUB_SCHEME):].partition("/")
    if not model or not version.isdigit() or int(version) < 1:
        raise InvalidInput(f"{uri!r}: expected hub://MODEL/VERSION with a version number (hub://iris/3)")
    return model, int(version)


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlport" / "hub"


def _get(client: httpx.Client, path: str) -> Any:
    try:
        r = client.get(path)
    except httpx.HTTPError as exc:
        raise MlportError(f"cannot reach the hub at {client.base_url}: {exc}", ErrorCode.UNAVAILABLE) from None
    if r.status_code >= 400:
        try:
            message = r.json().get("error", r.text)
        except ValueError:
            message = r.text[:300]
        raise MlportError(f"the hub answered {r.status_code} for {path}: {message}", ErrorCode.FAILED_PRECONDITION)
    return r.json()


def _digest(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    files = [(p.relative_to(path).as_posix(), sha256_file(p)) for p in sorted(path.rglob("*")) if p.is_file()]
    return folder_digest(files)


def _download(client: httpx.Client, path: str, dest: Path) -> None:
    size = 0
    hasher = hashlib.sha256()
    try:
        with client.stream("GET", path) as r, dest.open("wb") as out:
            if r.status_code >= 400:
                raise MlportError(f"the hub answered {r.status_code} for {path}", ErrorCode.FAILED_PRECONDITION)
            for block in r.iter_bytes(1024 * 1024):
                size += len(block)
                if size > MAX_ARTIFACT_BYTES:
                    raise MlportError(f"the artifact at {path} is larger than {MAX_ARTIFACT_BYTES} bytes",
                                      ErrorCode.TOO_LARGE)
                hasher.update(block)
                out.write(block)
    except httpx.HTTPError as exc:
        raise MlportError(f"cannot fetch {path} from the hub: {exc}", ErrorCode.UNAVAILABLE) from None


def fetch_hub_model(uri: str, hub_url: str | None = None, token: str | None = None) -> Path:
    """The local path of the model version ``uri`` names, fetched (once) and verified against the hub's sha256."""
    model, version = _parse(uri)
    url = (hub_url or os.environ.get("MLPORT_HUB_URL") or "http://127.0.0.1:8090").rstrip("/")
    token = token or os.environ.get("MLPORT_HUB_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    base = f"/api/v1/models/{model}/versions/{version}"
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
        info = _get(client, base)
        sha, filename, kind = str(info["sha256"]), str(info["filename"]), str(info["kind"])
        if not filename or "/" in filename or filename in (".", ".."):
            raise MlportError(f"the hub gave an unusable file name {filename!r}", ErrorCode.FAILED_PRECONDITION)
        home = _cache_root() / model / f"{version}-{sha[:16]}"
        target = home / filename
        if target.exists() and _digest(target) == sha:
            return target
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mlport-hub-", dir=home) as tmp:
            got = Path(tmp) / (filename if kind == "file" else f"{filename}.tar")
            _download(client, base + "/artifact", got)
            if kind != "file":
                extract_archive(got, Path(tmp) / "x", name=got.name)
                got = Path(tmp) / "x" / filename
            digest = _digest(got)
            if digest != sha:
                raise MlportError(f"{uri}: the fetched artifact's sha256 is {digest}, the hub says {sha}",
                                  ErrorCode.FAILED_PRECONDITION)
            if target.is_dir():
                shutil.rmtree(target)
            got.replace(target)
    return target
