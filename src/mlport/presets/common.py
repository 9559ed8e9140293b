"""What the scikit-learn presets share: the held-out split, the ONNX export, and how a trained model is saved."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SEED", "TEST_SIZE", "Trained", "save", "score", "split", "to_onnx", "write"]

SEED = 0
#: The share of rows held out to measure accuracy.
TEST_SIZE = 0.25
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True, slots=True)
class Trained:
    """A trained model, exported to ONNX, and what to write beside it."""

    onnx_model: Any
    accuracy: float
    train_rows: int
    test_rows: int
    #: Where the rows came from.
    data: str
    #: The model's ``model.yaml``.
    config: str
    #: More about the data, for the preset's ABOUT.md.
    notes: str = ""


def split(x: Any, y: np.ndarray[Any, Any], test_size: float = TEST_SIZE) -> tuple[Any, Any, Any, Any]:
    """``(x_train, x_test, y_train, y_test)``, stratified with a fixed seed; no split when ``test_size`` is 0
    (the test rows are then the training rows)."""
    if not test_size:
        return x, x, y, y
    from sklearn.model_selection import train_test_split

    parts: list[Any] = train_test_split(x, y, test_size=test_size, random_state=SEED, stratify=y)
    return parts[0], parts[1], parts[2], parts[3]


def to_onnx(model: Any, initial_types: list[tuple[str, Any]]) -> Any:
    """A scikit-learn classifier as ONNX: ``label`` and ``probabilities`` (a tensor, not a list of maps)."""
    from skl2onnx import to_onnx as convert

    return convert(model, initial_types=initial_types, options={"zipmap": False}, target_opset=TARGET_OPSET)


def score(model: Any, x_test: Any, y_test: np.ndarray[Any, Any]) -> float:
    return float(np.mean(model.predict(x_test) == y_test))


def write(path: Path, data: bytes) -> None:
    """Write through a temporary file, so a half-written file is never seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save(name: str, trained: Trained, folder: Path) -> Path:
    """Write ``folder/1/model.onnx`` (same bytes for the same model), ``model.yaml`` and ``ABOUT.md``."""
    import onnx

    split_text = f"{trained.train_rows} train / {trained.test_rows} test, stratified, seed {SEED}"
    onnx.helper.set_model_props(trained.onnx_model, {
        "mlport.preset": name, "mlport.preset.data": trained.data,
        "mlport.preset.accuracy": f"{trained.accuracy:.4f}", "mlport.preset.split": split_text,
    })
    # the converter lists opsets in set order; sort them so equal models serialize to equal bytes
    opsets = sorted((o.domain, o.version) for o in trained.onnx_model.opset_import)
    del trained.onnx_model.opset_import[:]
    trained.onnx_model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    onnx.checker.check_model(trained.onnx_model)
    write(folder / "model.yaml", trained.config.encode())
    about = (f"# {name}\n\nData: {trained.data}.\n\nHeld-out accuracy {trained.accuracy:.4f} ({split_text}; the "
             f"test rows were never trained on).\n" + (f"\n{trained.notes}\n" if trained.notes else ""))
    write(folder / "ABOUT.md", about.encode())
    path = folder / "1" / "model.onnx"
    write(path, trained.onnx_model.SerializeToString())
    return path
