"""Inputs and models for the batch-scoring tests, built in the test's tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.builders import iris_onnx, ort_run

IRIS_FIELDS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
IRIS_YAML = (
    "fields:\n  input: {sepal_length: 0, sepal_width: 1, petal_length: 2, petal_width: 3}\n"
    "labels:\n  label: [setosa, versicolor, virginica]\n"
)


def iris_model(root: Path) -> Path:
    """An iris model folder served as ``iris`` (fields and labels in its model.yaml)."""
    folder = root / "iris"
    iris_onnx(folder / "1" / "model.onnx")
    (folder / "model.yaml").write_text(IRIS_YAML)
    return folder


def iris_rows(n: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).uniform(0, 8, (n, 4)).round(2)


def iris_table(n: int, seed: int = 0) -> pa.Table:
    x = iris_rows(n, seed)
    cols = {"id": pa.array(np.arange(n, dtype=np.int64))}
    cols.update({name: pa.array(x[:, i]) for i, name in enumerate(IRIS_FIELDS)})
    return pa.table(cols)


def write_input(table: pa.Table, path: Path) -> Path:
    """``table`` as CSV, Parquet or JSON Lines (by the name's extension)."""
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        import orjson

        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in table.to_pylist()))
    return path


def read_output(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path)
    import pyarrow.json as pajson

    return pajson.read_json(path)


def expected_iris(model_folder: Path, x: np.ndarray[Any, Any]) -> tuple[list[str], np.ndarray[Any, Any]]:
    """onnxruntime's own labels and probabilities for ``x``."""
    out = ort_run(model_folder / "1" / "model.onnx", {"input": x.astype(np.float32)})
    return [IRIS_LABELS[i] for i in out["label"]], out["probabilities"]


def probabilities(table: pa.Table) -> np.ndarray[Any, Any]:
    """The probabilities of an output table: a list column, or one column per element (CSV)."""
    if "probabilities" in table.column_names:
        return np.asarray(table.column("probabilities").to_pylist(), dtype=np.float64)
    return np.stack([table.column(f"probabilities_{i}").to_numpy() for i in range(3)], axis=1)
