"""OCI images of the runtime and of model versions.

Two layers of concern: a **base image** (Python, mlport and the pip extras the model formats need) shared by every
model of the same formats and mlport version, and a thin **model layer** (the model files at ``/models``) on top,
so a new model version adds only its own bytes.  The Containerfiles are constants: what varies reaches the build
as files in the build context (``requirements.txt``, ``apt.txt``) or as argv elements (``--build-arg``,
``--label``), never as text spliced into an instruction or a shell line.

The builder (buildah, podman or docker) sits behind :class:`ImageBuilder`, which runs argv lists only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlport.core.imageref import check_image_ref
from mlport.errors import InvalidInput, MlportError

__all__ = [
    "BASE_CONTAINERFILE",
    "BUILDERS",
    "DEFAULT_BASE",
    "FORMAT_EXTRAS",
    "MODEL_CONTAINERFILE",
    "BaseSpec",
    "ImageBuilder",
    "check_image_ref",
    "check_label",
    "stage_model",
]

BUILDERS = ("buildah", "podman", "docker")
#: The default base: an official slim Python image (Debian based, with CA certificates and apt).
DEFAULT_BASE = "docker.io/library/python:3.12-slim"
#: The pip extras of mlport each format needs, and the Debian packages it needs in the image.
FORMAT_EXTRAS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "onnx": ((), ()),
    "manifest": ((), ()),
    "python": ((), ()),
    "pmml": (("pmml",), ("default-jre-headless",)),
    "tensorflow": (("tensorflow",), ()),
    "keras": (("keras",), ()),
    "sklearn": (("sklearn",), ()),
    "xgboost": (("xgboost",), ()),
    "lightgbm": (("lightgbm",), ("libgomp1",)),
    "torch": (("torch",), ()),
    "tokenizer": (("tokenizer",), ()),
}
#: Where the image's Python environment lives.
VENV = "/opt/mlport"
_CONTEXT = "/tmp/mlport-build"

BASE_CONTAINERFILE = f"""\
ARG BASE
FROM ${{BASE}}
ARG PIP_CERT=
ARG PIP_CACHE=off
COPY context {_CONTEXT}
RUN set -eu; \\
    if [ -s {_CONTEXT}/apt.txt ]; then \\
      apt-get update && xargs -a {_CONTEXT}/apt.txt apt-get install -y --no-install-recommends \\
      && rm -rf /var/lib/apt/lists/*; \\
    fi; \\
    if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi; \\
    if [ "$PIP_CACHE" = off ]; then set -- --no-cache-dir; else set --; fi; \\
    python3 -m venv {VENV}; \\
    {VENV}/bin/pip install "$@" --disable-pip-version-check --no-compile -r {_CONTEXT}/requirements.txt; \\
    rm -rf {_CONTEXT}
ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    HOME=/tmp TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /tmp
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
ENTRYPOINT ["mlport"]
CMD ["serve", "/models", "--host", "0.0.0.0", "--http-port", "8080", "--grpc-port", "8081"]
"""

MODEL_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
COPY model /models
"""

_LABEL_KEY = re.compile(r"[a-z0-9]+([.-][a-z0-9]+)*")
#: Longest label value accepted (a signature as JSON can be long, but not unbounded).
MAX_LABEL_BYTES = 64 * 1024
#: Longest a build may run.
BUILD_TIMEOUT_S = 3600.0
#: Most bytes of builder output kept for an error message.
_TAIL = 4000


def check_label(key: str, value: str) -> tuple[str, str]:
    """A label (key and value) that can be passed as one argv element; control characters are refused."""
    if not _LABEL_KEY.fullmatch(key):
        raise InvalidInput(f"label key {key!r} is not valid (lower-case words joined by '.' or '-')")
    if len(value.encode()) > MAX_LABEL_BYTES or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(f"label {key!r}: the value is too long or holds control characters")
    return key, value


@dataclass(frozen=True)
class BaseSpec:
    """What a base image holds: its parent image, mlport (a requirement line) and the formats it serves."""

    parent: str
    mlport: str
    formats: tuple[str, ...]
    #: Where pip may find the mlport wheel the requirement names (copied into the build context).
    wheel: Path | None = None

    def extras(self) -> list[str]:
        return sorted({e for f in self.formats for e in FORMAT_EXTRAS.get(f, ((), ()))[0]})

    def apt_packages(self) -> list[str]:
        return sorted({p for f in self.formats for p in FORMAT_EXTRAS.get(f, ((), ()))[1]})

    def requirement(self) -> str:
        extras = self.extras()
        return self.mlport + (f"[{','.join(extras)}]" if extras else "")

    def tag(self, version: str) -> str:
        """A local tag naming exactly these inputs, so the same inputs reuse one base image."""
        digest = hashlib.sha256(json.dumps([self.parent, self.requirement(), self.apt_packages(),
                                            _file_sha(self.wheel)]).encode()).hexdigest()
        return f"localhost/mlport-base:{version}-{digest[:12]}"


def _file_sha(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_model(source: Path, dest: Path, name: str, *, single: bool, uses: Sequence[Path] = ()) -> Path:
    """Lay out ``source`` under ``dest/model`` as ``mlport serve /models`` reads it, with fixed modes and times so
    the same files always give the same layer: a model file keeps its name (and its ``<stem>.model.yaml``), a
    model folder becomes ``NAME/1/``, a repository is copied as it is.  A manifest file becomes ``NAME/1/`` with
    the files it ``uses`` at the same places relative to it, so that it is the one model there.  Links are
    refused."""
    root = dest / "model"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if source.is_file() and uses:
        _copy_used(source, uses, root / name / "1")
    elif source.is_file():
        shutil.copyfile(source, root / source.name)
        config = source.with_name(source.stem + ".model.yaml")
        if config.is_file():
            shutil.copyfile(config, root / config.name)
    elif single:
        _copy_tree(source, root / name / "1")
    else:
        _copy_tree(source, root)
    _normalise(root)
    return root


def _copy_used(manifest: Path, uses: Sequence[Path], dest: Path) -> None:
    folder = manifest.resolve().parent
    for path in uses:
        if path.is_symlink():
            raise InvalidInput(f"{path} is a symbolic link: copy the file it points to instead")
        target = dest / path.resolve().relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _copy_tree(source: Path, dest: Path) -> None:
    for path in source.rglob("*"):
        if path.is_symlink():
            raise InvalidInput(f"{path} is a symbolic link: copy the file it points to instead")
    shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".*"))


def _normalise(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.utime(path, (0, 0), follow_symlinks=False)


@dataclass
class ImageBuilder:
    """Builds, inspects, runs and pushes images with one container tool, through argv lists only."""

    tool: str = "buildah"
    #: Mounts for RUN steps, ``(host_path, image_path, options)``: a CA bundle (``ro``), a pip cache (``rw``).
    mounts: Sequence[tuple[Path, str, str]] = ()
    timeout_s: float = BUILD_TIMEOUT_S
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tool not in BUILDERS:
            raise InvalidInput(f"unknown builder {self.tool!r}: use one of {', '.join(BUILDERS)}")
        if shutil.which(self.tool) is None:
            raise MlportError(f"{self.tool} is not installed (e.g. `apt-get install {self.tool}`)")

    def build(self, context: Path, containerfile: str, tag: str, *, build_args: Mapping[str, str] = {},
              labels: Mapping[str, str] = {}, timestamp: int | None = None) -> str:
        """Build ``containerfile`` (its text is written into ``context``) as ``tag``; returns the image id."""
        check_image_ref(tag)
        (context / "Containerfile").write_text(containerfile)
        argv = [self.tool, "build" if self.tool != "buildah" else "bud", "-f", str(context / "Containerfile"),
                "-t", tag]
        if self.tool != "docker":
            argv += ["--isolation", "chroot"]
            argv += [f"--volume={host}:{inside}:{options}" for host, inside, options in self.mounts]
            if timestamp is not None:
                argv.append(f"--timestamp={timestamp}")
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in sorted(labels.items()):
            check_label(key, value)
            argv += ["--label", f"{key}={value}"]
        argv.append(str(context))
        self._run(argv, f"building {tag}")
        return self.image_id(tag)

    def exists(self, ref: str) -> bool:
        argv = [self.tool, "inspect", "--type", "image", ref] if self.tool == "buildah" else \
            [self.tool, "image", "inspect", ref]
        return subprocess.run(argv, capture_output=True, timeout=120, check=False).returncode == 0

    def inspect(self, ref: str) -> dict[str, Any]:
        """The image's OCI config (``config``, ``rootfs.diff_ids``, ...), as buildah/podman/docker report it."""
        if self.tool == "buildah":
            data = json.loads(self._run([self.tool, "inspect", "--type", "image", ref], f"inspecting {ref}"))
            return dict(data["OCIv1"])
        data = json.loads(self._run([self.tool, "image", "inspect", ref], f"inspecting {ref}"))[0]
        return {"config": data.get("Config", {}), "rootfs": {"diff_ids": data.get("RootFS", {}).get("Layers", [])}}

    def image_id(self, ref: str) -> str:
        fmt = "{{.FromImageID}}" if self.tool == "buildah" else "{{.Id}}"
        argv = [self.tool, "inspect", "--type", "image", "--format", fmt, ref] if self.tool == "buildah" else \
            [self.tool, "image", "inspect", "--format", fmt, ref]
        return self._run(argv, f"inspecting {ref}").strip()

    def push(self, ref: str, dest: str, *, tls_verify: bool = True, authfile: Path | None = None,
             workdir: Path) -> str:
        """Push ``ref`` to ``dest`` (a registry reference); returns the pushed manifest's digest."""
        check_image_ref(dest)
        digest_file = workdir / "digest"
        argv = [self.tool, "push", f"--tls-verify={'true' if tls_verify else 'false'}"]
        if authfile is not None:
            argv += ["--authfile", str(authfile)]
        if self.tool == "docker":
            self._run([self.tool, "tag", ref, dest], f"tagging {dest}")
            self._run([self.tool, "push", dest], f"pushing {dest}")
            return self._run([self.tool, "image", "inspect", "--format", "{{index .RepoDigests 0}}", dest],
                             "reading the digest").strip().rpartition("@")[2]
        argv += ["--digestfile", str(digest_file), ref, f"docker://{dest}"]
        self._run(argv, f"pushing {dest}")
        return digest_file.read_text().strip()

    def _run(self, argv: list[str], what: str) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False,
                                  stdin=subprocess.DEVNULL, env={**os.environ, **self.env})
        except subprocess.TimeoutExpired as exc:
            raise MlportError(f"{what} took longer than {self.timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            raise MlportError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-_TAIL:]}")
        return proc.stdout


def mlport_wheel(workdir: Path) -> Path | None:
    """A wheel of the running mlport when it runs from a source checkout (so the image holds this very code), or
    ``None`` when it was installed from a package index (the image then installs the same version from there)."""
    import mlport

    root = Path(mlport.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "mlport"' not in pyproject.read_text():
        return None
    out = workdir / "wheels"
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
            str(root)]
    # a fixed date makes the same sources give the same wheel bytes, so the base image's tag stays the same
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    if proc.returncode != 0:
        raise MlportError(f"building mlport's wheel failed: {proc.stderr[-_TAIL:]}")
    wheels = sorted(out.glob("mlport-*.whl"))
    if not wheels:
        raise MlportError("building mlport's wheel gave no wheel")
    return wheels[-1]


def write_base_context(spec: BaseSpec, context: Path) -> None:
    """The files the base Containerfile reads: ``context/requirements.txt``, ``context/apt.txt`` and the wheel."""
    files = context / "context"
    files.mkdir(parents=True, exist_ok=True)
    requirement = spec.requirement()
    if spec.wheel is not None:
        shutil.copyfile(spec.wheel, files / spec.wheel.name)
        extras = spec.extras()
        requirement = f"{_CONTEXT}/{spec.wheel.name}" + (f"[{','.join(extras)}]" if extras else "")
    lines = [requirement]
    if "torch" in spec.extras():
        lines.insert(0, "--extra-index-url https://download.pytorch.org/whl/cpu")
    (files / "requirements.txt").write_text("\n".join(lines) + "\n")
    (files / "apt.txt").write_text("".join(p + "\n" for p in spec.apt_packages()))


def formats_of(names: Iterable[str]) -> tuple[str, ...]:
    unknown = sorted(set(names) - set(FORMAT_EXTRAS))
    if unknown:
        raise InvalidInput(f"no image recipe for format(s) {', '.join(unknown)}")
    return tuple(sorted(set(names)))
