"""LightGBM models saved as text (``Booster.save_model("model.txt")``).

A ``.txt`` file is claimed only when it starts with LightGBM's header (a ``tree`` line, then
``version=v<N>``), so other text files are left alone.

Signature: LightGBM works in double precision, so inputs are FP64. A model whose features have
LightGBM's default names (``Column_0``...) takes ``input`` ``[-1, num_feature]``; a model with its own
feature names takes one input ``[-1]`` per feature (LightGBM stores names with spaces replaced by
``_``). A feature trained from a pandas ``category`` column takes its category values (BYTES for text,
INT64 or FP64 for numbers; see :mod:`mlport.formats.categorical`). Outputs follow the objective:
``binary`` gives ``label`` INT64 (0 or 1) and ``probabilities`` FP32 ``[-1, 2]``;
``multiclass``/``multiclassova`` give ``label`` (the class index) and ``probabilities`` FP32
``[-1, n_classes]``; every other objective gives ``prediction`` FP64.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, ModelFormat
from mlport.formats.categorical import Categories, feature_matrix

__all__ = ["LightGBMEvaluator", "LightGBMFormat"]

_PREFIX_BYTES = 64
_HEAD = re.compile(rb"^tree\r?\nversion=v\d+\r?\n")
_DEFAULT_NAME = re.compile(r"^Column_\d+$")
_MULTICLASS = {"multiclass", "multiclassova", "softmax", "multiclass_ova", "ova", "ovr"}


_CATEGORICAL_LINE = re.compile(r"^\[categorical_feature: ([0-9, ]*)\]$", re.MULTILINE)
_MAX_TAIL_BYTES = 64 * 1024 * 1024


def _categorical_indices(path: Path) -> list[int]:
    """Indices of the categorical features, from the parameters block at the end of the model file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - _MAX_TAIL_BYTES))
        tail = f.read().decode("utf-8", errors="replace")
    found = _CATEGORICAL_LINE.search(tail)
    if found is None:
        return []
    return [int(i) for i in found.group(1).replace(" ", "").split(",") if i]


def _categories(booster: Any, path: Path, columns: list[str]) -> dict[str, Categories]:
    """Categories of the features trained from pandas ``category`` columns, in code order.

    A categorical feature trained from integer codes (no pandas categories recorded) takes the codes.
    """
    recorded = booster.pandas_categorical or []
    indices = _categorical_indices(path)
    if not recorded or len(recorded) != len(indices):
        return {}
    return {columns[i]: Categories(columns[i], cats) for i, cats in zip(indices, recorded, strict=True)
            if i < len(columns)}


class LightGBMEvaluator(Evaluator):
    platform = "lightgbm"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        import lightgbm as lgb

        try:
            self._booster = lgb.Booster(model_file=str(path))
        except Exception as exc:
            raise MlportError(f"lightgbm could not load {path.name}: {exc}") from exc
        threads = int(options.options.get("intra_op_threads", options.intra_op_threads))
        self._kw: dict[str, Any] = {"num_threads": threads} if threads > 0 else {}
        booster = self._booster
        self.objective = str(booster.params.get("objective", "")).split()[0] if booster.params else ""
        n_features = booster.num_feature()
        names = [str(n) for n in booster.feature_name()]
        default_names = all(_DEFAULT_NAME.match(n) for n in names)
        self._columns: list[str] | None = None if default_names else names
        self._categories = _categories(booster, path, self._columns) if self._columns else {}
        if self._columns is None:
            inputs = [TensorSpec("input", DataType.FP64, (-1, n_features))]
        else:
            inputs = [
                TensorSpec(n, self._categories[n].datatype if n in self._categories else DataType.FP64, (-1,))
                for n in self._columns
            ]
        n_models = booster.num_model_per_iteration()
        if self.objective == "binary":
            outputs = [TensorSpec("label", DataType.INT64, (-1,)),
                       TensorSpec("probabilities", DataType.FP32, (-1, 2))]
        elif self.objective in _MULTICLASS:
            outputs = [TensorSpec("label", DataType.INT64, (-1,)),
                       TensorSpec("probabilities", DataType.FP32, (-1, n_models))]
        else:
            outputs = [TensorSpec("prediction", DataType.FP64, (-1, n_models) if n_models > 1 else (-1,))]
        self.signature = Signature(tuple(inputs), tuple(outputs))

    def predict(self, inputs: Arrays) -> Arrays:
        cols = self._columns
        x = inputs["input"] if cols is None else feature_matrix(cols, inputs, self._categories)
        raw = np.asarray(self._booster.predict(x, **self._kw))
        if self.objective == "binary":
            p = raw.reshape(-1)
            proba = np.stack([1.0 - p, p], axis=1)
            return {"label": np.argmax(proba, axis=1).astype(np.int64), "probabilities": proba.astype(np.float32)}
        if self.objective in _MULTICLASS:
            return {"label": np.argmax(raw, axis=1).astype(np.int64), "probabilities": raw.astype(np.float32)}
        return {"prediction": raw.astype(np.float64, copy=False)}

    def tree_model(self) -> Any | None:
        """The booster; ``None`` with categorical features (they take category values, not numbers)."""
        return None if self._categories else self._booster

    def close(self) -> None:
        del self._booster


class LightGBMFormat(ModelFormat):
    name: ClassVar[str] = "lightgbm"
    extra: ClassVar[str | None] = "lightgbm"
    requires: ClassVar[tuple[str, ...]] = ("lightgbm",)

    def detect(self, path: Path) -> bool:
        if not path.is_file() or path.suffix.lower() != ".txt":
            return False
        with path.open("rb") as f:
            return bool(_HEAD.match(f.read(_PREFIX_BYTES)))

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        return LightGBMEvaluator(path, options)
