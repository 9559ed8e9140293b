"""XGBoost models saved with ``save_model`` as JSON (``.json``) or UBJSON (``.ubj``).

A ``Booster`` or a scikit-learn wrapper (``XGBClassifier``...) saved with ``save_model`` both work.
A ``.json`` file is claimed only when it starts like an XGBoost model (``{"learner": {``), so other
JSON files in a repository are left alone.

Signature: a model trained on a numpy array takes ``input`` FP32 ``[-1, num_features]``; a model that
recorded feature names (trained on a DataFrame) takes one FP32 input ``[-1]`` per feature; a categorical
feature (a pandas ``category`` column with ``enable_categorical``) takes its category values instead: BYTES
for text categories, INT64 or FP64 for numbers (see :mod:`mlport.formats.categorical`). Outputs follow
the objective: ``binary:logistic`` and ``multi:softprob`` give ``label`` INT64 (the class index) and
``probabilities`` FP32 ``[-1, n_classes]``; ``binary:hinge`` and ``multi:softmax`` give ``label``;
every other objective (regression, ranking, survival, ``binary:logitraw`` margins) gives ``prediction``
FP32. When the model recorded a ``best_iteration`` (early stopping), trees up to it are used, as the
scikit-learn wrapper does.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, ModelFormat
from mlport.formats.categorical import Categories, feature_matrix

__all__ = ["XGBoostEvaluator", "XGBoostFormat"]

_PREFIX_BYTES = 256
_JSON_HEAD = re.compile(rb'^\s*\{\s*"learner"\s*:\s*\{')
#: UBJSON object start, then the key "learner" (any integer length marker) and an object value.
_UBJ_HEAD = re.compile(rb"^\{[iUIlL][\x00]*\x07learner\{", re.DOTALL)

_PROBABILITY = {"binary:logistic", "multi:softprob"}
_LABEL_ONLY = {"binary:hinge", "multi:softmax"}


def _categories(booster: Any, columns: list[str]) -> dict[str, Categories]:
    """Categories of the categorical features, in code order, as the model recorded them (XGBoost >= 3.1).

    A model without recorded categories takes the codes themselves (numbers) for such a feature.
    """
    types = list(booster.feature_types or [])
    wanted = [i for i, t in enumerate(types) if t == "c"]
    if not wanted:
        return {}
    try:
        model = json.loads(booster.save_raw(raw_format="json"))
        enc = model["learner"]["gradient_booster"]["model"].get("cats", {}).get("enc") or []
    except (KeyError, TypeError, ValueError):
        enc = []
    found: dict[str, Categories] = {}
    for i in wanted:
        entry = enc[i] if i < len(enc) and isinstance(enc[i], dict) else {}
        values = entry.get("values") or []
        offsets = entry.get("offsets") or []
        try:
            if offsets:
                blob = bytes(values)
                cats: list[Any] = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)]
            else:
                cats = list(values)
        except (TypeError, ValueError) as exc:
            raise MlportError(f"the categories of feature {columns[i]!r} are not readable: {exc}") from exc
        if cats:
            found[columns[i]] = Categories(columns[i], cats)
    return found


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(_PREFIX_BYTES)


class XGBoostEvaluator(Evaluator):
    platform = "xgboost"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        import xgboost as xgb

        try:
            booster = xgb.Booster(model_file=str(path))
            config = json.loads(booster.save_config())
        except Exception as exc:
            raise MlportError(f"xgboost could not load {path.name}: {exc}") from exc
        threads = int(options.options.get("intra_op_threads", options.intra_op_threads))
        if threads > 0:
            booster.set_param({"nthread": threads})
        self._booster = booster
        learner = config.get("learner", {})
        self.objective = str(learner.get("objective", {}).get("name", ""))
        n_features = booster.num_features()
        names = booster.feature_names
        self._columns: list[str] | None = list(names) if names else None
        best = booster.attr("best_iteration")
        self._range = (0, int(best) + 1) if best is not None else (0, 0)
        self._categories = _categories(booster, self._columns) if self._columns else {}
        if self._columns is None:
            inputs = [TensorSpec("input", DataType.FP32, (-1, n_features))]
        else:
            inputs = [
                TensorSpec(n, self._categories[n].datatype if n in self._categories else DataType.FP32, (-1,))
                for n in self._columns
            ]
        # One row of zeros tells the shape of the raw output (classes, targets, quantiles).
        probe = self._raw(np.zeros((1, n_features), dtype=np.float32))
        width = int(probe.shape[1]) if probe.ndim > 1 else 1
        if self.objective in _PROBABILITY:
            n_classes = 2 if self.objective.startswith("binary") else width
            outputs = [TensorSpec("label", DataType.INT64, (-1,)),
                       TensorSpec("probabilities", DataType.FP32, (-1, n_classes))]
        elif self.objective in _LABEL_ONLY:
            outputs = [TensorSpec("label", DataType.INT64, (-1,))]
        else:
            outputs = [TensorSpec("prediction", DataType.FP32, (-1, width) if probe.ndim > 1 else (-1,))]
        self.signature = Signature(tuple(inputs), tuple(outputs))

    def _raw(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        out: np.ndarray[Any, Any] = self._booster.inplace_predict(x, iteration_range=self._range,
                                                                  validate_features=False)
        return out

    def predict(self, inputs: Arrays) -> Arrays:
        cols = self._columns
        x = inputs["input"] if cols is None else feature_matrix(cols, inputs, self._categories)
        raw = self._raw(x)
        if self.objective == "binary:logistic":
            p = raw.astype(np.float32, copy=False).reshape(-1)
            return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1)}
        if self.objective == "multi:softprob":
            p = raw.astype(np.float32, copy=False)
            return {"label": np.argmax(p, axis=1).astype(np.int64), "probabilities": p}
        if self.objective in _LABEL_ONLY:
            return {"label": raw.reshape(-1).astype(np.int64)}
        return {"prediction": raw.astype(np.float32, copy=False)}

    def tree_model(self) -> Any | None:
        """The booster (cut at ``best_iteration`` when there is one); ``None`` with categorical features."""
        if self._categories:
            return None
        start, end = self._range
        return self._booster[start:end] if end else self._booster

    def close(self) -> None:
        del self._booster


class XGBoostFormat(ModelFormat):
    name: ClassVar[str] = "xgboost"
    extra: ClassVar[str | None] = "xgboost"
    requires: ClassVar[tuple[str, ...]] = ("xgboost",)

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        suffix = path.suffix.lower()
        if suffix == ".json":
            return bool(_JSON_HEAD.match(_head(path)))
        if suffix == ".ubj":
            return bool(_UBJ_HEAD.match(_head(path)))
        return False

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        return XGBoostEvaluator(path, options)
