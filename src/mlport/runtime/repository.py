"""Finds models on disk: one file, or a repository ``<root>/<name>/<version>/<file>``.

Layouts understood in a repository folder:

- ``<root>/<name>/<version>/<model>``: integer version folders (Triton/TF Serving style);
- ``<root>/<name>/<model>``: one unversioned model, served as version 1;
- ``<root>/<model-file>``: a model file at the top, named by its stem, version 1.

A model folder may hold ``model.yaml`` (see :mod:`mlport.formats.config`) or a Triton
``config.pbtxt`` (see :mod:`mlport.runtime.triton`; ``model.yaml`` wins when both are there); a
model file ``x.onnx`` may have ``x.model.yaml`` beside it.  Nothing outside the root is followed.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mlport.errors import InvalidInput, MlportError
from mlport.formats.config import ModelConfig, load_model_config
from mlport.formats.manifest.files import manifest_files
from mlport.formats.registry import FormatRegistry
from mlport.runtime.triton import TRITON_CONFIG_NAME, TritonModel, read_triton_config

__all__ = ["MAX_LISTED_OVER_LIMIT", "ModelSource", "Repository", "VersionSource", "fingerprint"]

log = logging.getLogger(__name__)

CONFIG_NAME = "model.yaml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_FINGERPRINT_FILES = 10_000
#: Most names of models past the limit kept for the repository index.
MAX_LISTED_OVER_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class VersionSource:
    version: int
    path: Path
    format: str
    fingerprint: tuple[tuple[str, int, int], ...]


@dataclass(slots=True)
class ModelSource:
    name: str
    config: ModelConfig
    versions: dict[int, VersionSource] = field(default_factory=dict)
    #: Why the model (or some version) could not be read; the model still appears in the index.
    errors: dict[int, str] = field(default_factory=dict)
    error: str | None = None
    #: The model file or folder to pick in each version folder (Triton's ``default_model_filename``).
    model_filename: str | None = None


def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Size and mtime of every file under ``path``: changes when the model files change."""
    if path.is_file():
        st = path.stat()
        return ((path.name, st.st_size, st.st_mtime_ns),)
    rows: list[tuple[str, int, int]] = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            rows.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
            if len(rows) >= _MAX_FINGERPRINT_FILES:
                break
    return tuple(rows)


def _manifest_fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Size and mtime of a manifest and of every file it uses: a changed step reloads it, and the files' size is
    what the manifest is expected to need before its first load."""
    try:
        files = manifest_files(path).files
    except (MlportError, OSError):
        return fingerprint(path)  # the load will say what is wrong with it
    base = path.resolve().parent
    rows = []
    for p in files[:_MAX_FINGERPRINT_FILES]:
        st = p.stat()
        rows.append((p.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(rows)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


class Repository:
    """Scans a model file or repository folder into :class:`ModelSource` entries."""

    def __init__(
        self,
        root: Path,
        formats: FormatRegistry,
        name: str | None = None,
        trusted: bool = False,
        max_models: int = 1000,
    ) -> None:
        self.root = root.resolve()
        self.formats = formats
        self.name = name
        self.trusted = trusted
        self.max_models = max_models
        if not self.root.exists():
            raise InvalidInput(f"{root} does not exist")
        #: config.pbtxt path -> (size, mtime) and what it gave: each file is read and logged once per change.
        self._triton: dict[Path, tuple[tuple[int, int], TritonModel | MlportError]] = {}
        self._triton_lock = threading.Lock()
        self._told_yaml_wins: set[Path] = set()
        #: Entries of the repository folder past ``max_models`` at the last scan (at most
        #: :data:`MAX_LISTED_OVER_LIMIT` names), and how many there were.
        self.over_limit: tuple[str, ...] = ()
        self.over_limit_count = 0

    @property
    def single(self) -> bool:
        """True when the root is itself one model (a file, or a folder a format recognises)."""
        return self.formats.detect(self.root) is not None

    @property
    def model_folder(self) -> bool:
        """True when the root is one model's folder: it holds a config (model.yaml, config.pbtxt) and
        numbered version folders, as a model inside a repository does."""
        root = self.root
        if not root.is_dir() or not ((root / CONFIG_NAME).is_file() or (root / TRITON_CONFIG_NAME).is_file()):
            return False
        return any(p.is_dir() and p.name.isdigit() for p in root.iterdir())

    def scan(self) -> dict[str, ModelSource]:
        if self.single:
            one = self._single_model(self.root)
            return {one.name: one}
        if self.model_folder:
            own = self._model_dir(self.root)
            if own is not None:
                if self.name:
                    own.name = self.name
                return {own.name: own}
        found: dict[str, ModelSource] = {}
        over: list[str] = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not _inside(self.root, child):
                continue
            if len(found) >= self.max_models:
                # past the limit, entries are only named (reading them is the cost the limit bounds)
                if child.is_dir() or self.formats.detect(child) is not None:
                    over.append(child.name if child.is_dir() else child.stem)
                continue
            src: ModelSource | None
            if child.is_dir():
                src = self._model_dir(child)
            elif self.formats.detect(child) is not None:
                src = self._single_model(child)
            else:
                src = None
            if src is not None:
                found[src.name] = src
        self._note_over_limit(over)
        return found

    def _note_over_limit(self, over: list[str]) -> None:
        """Remember the entries past ``max_models`` (for the index) and log when that set changes."""
        if len(over) == self.over_limit_count and tuple(over[:MAX_LISTED_OVER_LIMIT]) == self.over_limit:
            return
        self.over_limit_count = len(over)
        self.over_limit = tuple(over[:MAX_LISTED_OVER_LIMIT])
        if over:
            shown = ", ".join(over[:5]) + (f" and {len(over) - 5} more" if len(over) > 5 else "")
            log.warning("the repository holds more than %d models (max_models): %d are not served: %s; raise the "
                        "limit with --max-models or MLPORT_MAX_MODELS", self.max_models, len(over), shown)

    def scan_model(self, name: str) -> ModelSource | None:
        return self.scan().get(name)

    def _config(self, path: Path) -> ModelConfig:
        cfg = load_model_config(path)
        if self.trusted and not cfg.trusted:
            cfg = cfg.model_copy(update={"trusted": True})
        return cfg

    def _single_model(self, path: Path) -> ModelSource:
        stem = path.name[: -len(path.suffix)] if path.suffix else path.name
        inner = path / CONFIG_NAME
        # a folder that is one model (a SavedModel, a folder with model.py) keeps its config inside
        cfg_path = inner if path.is_dir() and inner.is_file() else path.with_name(f"{stem}.model.yaml")
        try:
            cfg = self._config(cfg_path)
        except MlportError as exc:
            return ModelSource(self.name or stem, ModelConfig(), error=str(exc))
        name = self.name or cfg.name or stem
        src = ModelSource(name, cfg)
        self._add_version(src, 1, path)
        return src

    def _triton_config(self, path: Path, folder_name: str) -> TritonModel:
        """The Triton config at ``path``, read again only when the file changed (its warnings logged then)."""
        try:
            st = path.stat()
        except OSError as exc:
            raise InvalidInput(f"{path.name}: cannot read it: {exc.strerror or exc}") from None
        stamp = (st.st_size, st.st_mtime_ns)
        with self._triton_lock:
            cached = self._triton.get(path)
            if cached is None and len(self._triton) >= 2 * self.max_models:
                self._triton.clear()  # configs of folders long gone: a bound, not a cache policy
        if cached is None or cached[0] != stamp:
            result: TritonModel | MlportError
            try:
                result = read_triton_config(path, folder_name)
                for warning in result.warnings:
                    log.warning("model %s: %s: %s", folder_name, path.name, warning)
            except MlportError as exc:
                result = exc
                log.error("model %s: %s", folder_name, exc)
            with self._triton_lock:
                self._triton[path] = cached = (stamp, result)
        if isinstance(cached[1], MlportError):
            raise cached[1]
        return cached[1]

    def _folder_config(self, folder: Path) -> tuple[ModelConfig, str | None]:
        """The folder's model.yaml, else its Triton config.pbtxt, else the defaults; and the model file to pick."""
        yaml_path, pbtxt = folder / CONFIG_NAME, folder / TRITON_CONFIG_NAME
        if not pbtxt.is_file() or not _inside(self.root, pbtxt):
            return self._config(yaml_path), None
        if yaml_path.is_file():
            if pbtxt not in self._told_yaml_wins:
                self._told_yaml_wins.add(pbtxt)
                log.info("model %s: %s and %s are both there; %s is used", folder.name, CONFIG_NAME,
                         TRITON_CONFIG_NAME, CONFIG_NAME)
            return self._config(yaml_path), None
        triton = self._triton_config(pbtxt, folder.name)
        cfg = triton.config
        if self.trusted and not cfg.trusted:
            cfg = cfg.model_copy(update={"trusted": True})
        return cfg, triton.model_filename

    def _model_dir(self, folder: Path) -> ModelSource | None:
        if self.formats.detect(folder) is not None:
            return self._single_model(folder)
        try:
            cfg, model_filename = self._folder_config(folder)
        except MlportError as exc:
            return ModelSource(folder.name, ModelConfig(), error=str(exc))
        name = cfg.name or folder.name
        if not _NAME_RE.match(name):
            return None
        src = ModelSource(name, cfg, model_filename=model_filename)
        version_dirs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and _inside(self.root, p)]
        if version_dirs:
            for vdir in version_dirs:
                self._add_version(src, int(vdir.name), vdir)
            return src
        if self._model_files(folder):
            self._add_version(src, 1, folder)
            return src
        if (folder / TRITON_CONFIG_NAME).is_file():
            src.error = f"{TRITON_CONFIG_NAME} is there, but no version folder (1/, 2/...) holds a model"
            return src
        return None

    def _model_files(self, folder: Path) -> list[Path]:
        return [
            p for p in sorted(folder.iterdir())
            if not p.name.startswith(".") and _inside(self.root, p) and self.formats.detect(p) is not None
        ]

    def _add_version(self, src: ModelSource, version: int, path: Path) -> None:
        try:
            target = self._resolve_model_path(path, src.config, src.model_filename)
            fmt = src.config.format or self.formats.detect(target)
            fmt_name = fmt if isinstance(fmt, str) else fmt.name if fmt else None
            if fmt_name is None:
                raise InvalidInput(f"{target.name}: no installed format recognises this file")
            stamp = _manifest_fingerprint(target) if fmt_name == "manifest" else fingerprint(target)
            src.versions[version] = VersionSource(version, target, fmt_name, stamp)
        except (MlportError, OSError) as exc:
            src.errors[version] = str(exc)

    def _resolve_model_path(self, path: Path, cfg: ModelConfig, model_filename: str | None = None) -> Path:
        if model_filename is not None and path.is_dir():
            target = path / model_filename
            if not target.exists() or not _inside(self.root, target):
                raise InvalidInput(f"version folder {path.name}: the default_model_filename "
                                   f"'{model_filename}' is not there")
            return target
        if not path.is_dir() or self.formats.detect(path) is not None:
            return path
        files = self._model_files(path)
        if not files:
            raise InvalidInput(f"version folder {path.name}: no model file found")
        if len(files) > 1:
            preferred = [p for p in files if p.stem == "model" or p.name == "model"]
            if len(preferred) != 1:
                # a manifest beside the files it chains is the model
                found = [self.formats.detect(p) for p in files]
                preferred = _outermost([p for p, f in zip(files, found, strict=True)
                                        if f is not None and f.name == "manifest"])
            if len(preferred) != 1:
                raise InvalidInput(
                    f"version folder {path.name}: several model files ({', '.join(p.name for p in files)}); "
                    "keep one, name it model.<ext>, or add one manifest that uses them"
                )
            return preferred[0]
        return files[0]


def _outermost(manifests: list[Path]) -> list[Path]:
    """Of several manifests in one folder, those that no other one includes (when they can be read)."""
    if len(manifests) < 2:
        return manifests
    included: set[Path] = set()
    for path in manifests:
        try:
            included.update(p for p in manifest_files(path).files if p != path.resolve())
        except (MlportError, OSError):
            return manifests
    return [p for p in manifests if p.resolve() not in included]
