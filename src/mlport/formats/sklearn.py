"""scikit-learn estimators and pipelines: skops files (safe) and joblib/pickle files (trusted only).

Signature:

- an estimator fitted on a numpy array takes one input ``input`` FP32 ``[-1, n_features_in_]``;
- an estimator fitted on a pandas DataFrame (it has ``feature_names_in_``) takes one input per column,
  named by the column, each of shape ``[-1]`` (one value per row). The datatype is read from the
  pipeline where it can be: columns an encoder (``OneHotEncoder``, ``OrdinalEncoder``...) learned text
  categories for are BYTES, integer categories INT64, every other column FP64. The model option
  ``feature_types: {column: datatype}`` overrides it. Predict builds a DataFrame from these columns.

Outputs: classifiers give ``label`` (``predict``) and, when they have ``predict_proba``,
``probabilities`` FP32 ``[-1, n_classes]``; regressors give ``prediction`` FP64; clusterers and outlier
detectors give ``label`` INT64.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, MissingExtra, ModelFormat, UntrustedModel, as_text

__all__ = ["SklearnEvaluator", "SklearnFormat"]

SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: Packages whose types a skops file may hold without the operator trusting the model.
SAFE_PACKAGES = frozenset({"sklearn", "numpy", "scipy"})


def _label_type(dtype: np.dtype[Any]) -> DataType:
    if dtype.kind in "USO":
        return DataType.BYTES
    if dtype.kind == "b":
        return DataType.BOOL
    if dtype.kind in "iu":
        return DataType.INT64
    return DataType.FP64


def _untrusted_skops_types(path: Path) -> list[str]:
    from skops.io import get_untrusted_types

    try:
        return list(get_untrusted_types(file=path))
    except Exception as exc:
        raise MlportError(f"{path.name} is not a readable skops file: {exc}") from exc


def _load_skops(path: Path, trusted: bool) -> Any:
    from skops.io import load

    found = _untrusted_skops_types(path)
    foreign = [t for t in found if t.split(".", 1)[0] not in SAFE_PACKAGES]
    if foreign and not trusted:
        raise UntrustedModel(
            f"{path.name} holds types from outside scikit-learn, numpy and scipy: {', '.join(sorted(foreign))}; "
            "loading them may run their code: mark the model trusted (--trusted or 'trusted: true' in its "
            "config) if you trust its source"
        )
    try:
        return load(path, trusted=found)
    except Exception as exc:
        raise MlportError(f"skops could not load {path.name}: {exc}") from exc


def _load_pickle(path: Path) -> Any:
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise MlportError(f"could not unpickle {path.name}: {exc}") from exc


# ------------------------------------------------------------------ column datatypes of a pipeline
def _walk(est: Any) -> Iterator[Any]:
    """The estimator and every estimator nested in it (pipeline steps, column transformers, unions)."""
    yield est
    for attr in ("steps", "transformer_list"):
        for _, sub in getattr(est, attr, None) or ():
            if not isinstance(sub, str):
                yield from _walk(sub)
    for _, sub, _cols in getattr(est, "transformers_", None) or ():
        if not isinstance(sub, str):
            yield from _walk(sub)


def _first_categories(est: Any) -> list[np.ndarray[Any, Any]] | None:
    """Per-column values that tell the column types: an encoder's categories, or an imputer's fill values."""
    for sub in _walk(est):
        cats = getattr(sub, "categories_", None)
        if isinstance(cats, list):
            return cats
        stats = getattr(sub, "statistics_", None)
        if isinstance(stats, np.ndarray) and stats.dtype.kind in "OU":
            return [np.asarray([v]) for v in stats]
    return None


def _resolve_columns(ct: Any, cols: Any, names: list[str], index: int) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    if isinstance(cols, int | np.integer):
        return [names[int(cols)]]
    try:
        seq = list(cols)
    except TypeError:
        seq = []
    if seq and all(isinstance(c, str) for c in seq):
        return [str(c) for c in seq]
    if seq and all(isinstance(c, int | np.integer) and not isinstance(c, bool | np.bool_) for c in seq):
        return [names[int(c)] for c in seq]
    # selectors, slices or masks: the fitted transformer recorded which columns it took
    mapping = getattr(ct, "_transformer_to_input_indices", None)
    if isinstance(mapping, dict):
        name = ct.transformers_[index][0]
        return [names[int(i)] for i in mapping.get(name, ())]
    return []


def _column_types(est: Any, names: list[str]) -> dict[str, DataType]:
    """Datatypes of the DataFrame columns, where an encoder in a column transformer tells them."""
    found: dict[str, DataType] = {}
    for sub in _walk(est):
        transformers = getattr(sub, "transformers_", None)
        if not transformers:
            continue
        ct_names = [str(n) for n in getattr(sub, "feature_names_in_", names)]
        for i, (_, trans, cols) in enumerate(transformers):
            if isinstance(trans, str):
                continue
            columns = _resolve_columns(sub, cols, ct_names, i)
            cats = _first_categories(trans)
            if cats is None or len(cats) != len(columns):
                continue
            for col, values in zip(columns, cats, strict=True):
                kind = np.asarray(values).dtype.kind
                dtype = DataType.BYTES if kind in "USO" else DataType.INT64 if kind in "iub" else None
                if dtype is not None and found.get(col) is not DataType.BYTES:
                    found[col] = dtype
    return found


# ------------------------------------------------------------------ evaluator
class SklearnEvaluator(Evaluator):
    platform = "sklearn"

    def __init__(self, model: Any, name: str, options: LoadOptions) -> None:
        from sklearn.base import is_classifier, is_regressor

        if not callable(getattr(model, "predict", None)):
            raise MlportError(f"{name} holds a {type(model).__name__}, which has no predict method")
        self._model = model
        self._columns: list[str] | None = None
        inputs = self._inputs(model, name, options)
        outputs: list[TensorSpec] = []
        n_out = int(getattr(model, "n_outputs_", 1) or 1)
        multi = (-1, n_out) if n_out > 1 else (-1,)
        self._proba = False
        if is_classifier(model):
            classes = getattr(model, "classes_", None)
            label_type = _label_type(np.asarray(classes).dtype) if n_out == 1 and classes is not None \
                else DataType.INT64
            outputs.append(TensorSpec("label", label_type, multi))
            if n_out == 1 and hasattr(model, "predict_proba"):
                self._proba = True
                n_classes = len(classes) if classes is not None else -1
                outputs.append(TensorSpec("probabilities", DataType.FP32, (-1, n_classes)))
            self._out_name = "label"
        elif is_regressor(model):
            outputs.append(TensorSpec("prediction", DataType.FP64, multi))
            self._out_name = "prediction"
        else:  # clusterers and outlier detectors
            outputs.append(TensorSpec("label", DataType.INT64, multi))
            self._out_name = "label"
        self._out_type = outputs[0].datatype
        self.signature = Signature(tuple(inputs), tuple(outputs))
        self._string_inputs = [s.name for s in inputs if s.datatype is DataType.BYTES]

    def _inputs(self, model: Any, name: str, options: LoadOptions) -> list[TensorSpec]:
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            n = getattr(model, "n_features_in_", None)
            return [TensorSpec("input", DataType.FP32, (-1, int(n) if n is not None else -1))]
        columns = [str(c) for c in names]
        types = _column_types(model, columns)
        overrides = options.options.get("feature_types") or {}
        if not isinstance(overrides, dict):
            raise InvalidInput("the option feature_types must map column names to datatypes")
        for col, type_name in overrides.items():
            if col not in columns:
                raise InvalidInput(f"feature_types names column {col!r}, which {name} does not take")
            try:
                types[col] = DataType.parse(str(type_name))
            except ValueError as exc:
                raise InvalidInput(f"feature_types: column {col!r}: {exc}") from exc
        self._columns = columns
        return [TensorSpec(c, types.get(c, DataType.FP64), (-1,)) for c in columns]

    def _features(self, inputs: Arrays) -> Any:
        if self._columns is None:
            # float64, as estimators fitted on numpy data saw it: exact for float32 values, and some
            # estimators (KMeans) refuse a dtype other than the one they were fitted with
            return inputs["input"].astype(np.float64)
        import pandas as pd

        data: dict[str, Any] = {}
        for col in self._columns:
            arr = inputs[col]
            if col in self._string_inputs:
                try:
                    arr = as_text(arr)
                except UnicodeDecodeError:
                    raise InvalidInput(f"input '{col}' holds bytes that are not UTF-8 text") from None
            data[col] = arr
        return pd.DataFrame(data, columns=self._columns)

    def predict(self, inputs: Arrays) -> Arrays:
        x = self._features(inputs)
        pred = np.asarray(self._model.predict(x))
        out = pred.astype(self._out_type.numpy, copy=False)  # object for BYTES labels
        result: Arrays = {self._out_name: out}
        if self._proba:
            result["probabilities"] = np.asarray(self._model.predict_proba(x), dtype=np.float32)
        return result

    def tree_model(self) -> Any | None:
        """The estimator when it is a tree or tree ensemble of scikit-learn fed numbers (no pipeline, no text)."""
        from sklearn.ensemble import (
            ExtraTreesClassifier,
            ExtraTreesRegressor,
            GradientBoostingClassifier,
            GradientBoostingRegressor,
            RandomForestClassifier,
            RandomForestRegressor,
        )
        from sklearn.tree import BaseDecisionTree

        trees = (BaseDecisionTree, RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier,
                 ExtraTreesRegressor, GradientBoostingClassifier, GradientBoostingRegressor)
        if self._string_inputs or not isinstance(self._model, trees):
            return None
        return self._model

    def close(self) -> None:
        del self._model


class SklearnFormat(ModelFormat):
    name: ClassVar[str] = "sklearn"
    extra: ClassVar[str | None] = "sklearn"
    requires: ClassVar[tuple[str, ...]] = ("sklearn", "skops")
    #: skops files load without running code; pickles (.joblib, .pkl) are refused unless trusted.
    runs_code: ClassVar[bool] = False

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in SKOPS_SUFFIXES + PICKLE_SUFFIXES

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            # Refused before the file is opened: unpickling runs code.
            missing = [m for m in self.missing() if m != "skops"]  # pickles need scikit-learn only
            if missing:
                raise MissingExtra(f"the {self.name} format needs {', '.join(missing)}: "
                                   f"pip install 'mlport[{self.extra}]'")
            if not options.trusted:
                raise UntrustedModel(
                    f"{path.name} is a pickle: loading it runs code from the file; mark the model trusted "
                    "(--trusted or 'trusted: true' in its config) if you trust its source, "
                    "or save it with skops (.skops) to serve it without trust"
                )
            model = _load_pickle(path)
        else:
            self.check_loadable(options)
            model = _load_skops(path, options.trusted)
        return SklearnEvaluator(model, path.name, options)
