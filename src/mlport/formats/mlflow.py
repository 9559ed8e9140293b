"""MLflow model folders (``MLmodel`` and its files), served as they are.

The ``MLmodel`` file names the flavors the folder was saved with. The first flavor mlport serves with a
standard format (onnx, xgboost, lightgbm, tensorflow, keras, pytorch, sklearn) is loaded by that format,
with its trust rules (a pickle loads only when the model is trusted). The MLmodel signature (columns or
tensors) names the served inputs, and the saved input example is run once at load as a check.

A folder with only the ``python_function`` flavor runs custom code (a loader module or a pickled
``PythonModel``): it is refused unless the model is trusted, and then loads through ``mlflow.pyfunc``
(the ``mlflow`` or ``mlflow-skinny`` package must be installed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.yamlfile import read_yaml
from mlport.errors import InvalidInput
from mlport.formats.base import Arrays, Evaluator, LoadOptions, MissingExtra, ModelFormat, UntrustedModel
from mlport.formats.mlflow_signature import MlflowEvaluator, parse_signature, read_example

__all__ = ["MLMODEL", "MlflowFormat"]

MLMODEL = "MLmodel"
#: Largest MLmodel file read, in bytes.
MAX_MLMODEL_BYTES = 1024 * 1024

#: Flavors served by a standard format, in the order they are preferred: flavor -> (format, keys of the
#: model's path in the flavor's section).
FLAVORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx": ("onnx", ("data",)),
    "xgboost": ("xgboost", ("data",)),
    "lightgbm": ("lightgbm", ("data",)),
    "tensorflow": ("tensorflow", ("saved_model_dir", "data")),
    "keras": ("keras", ("data",)),
    "pytorch": ("torch", ("model_data",)),
    "sklearn": ("sklearn", ("pickled_model",)),
}
PYFUNC = "python_function"


def read_mlmodel(folder: Path) -> dict[str, Any]:
    path = folder / MLMODEL
    doc = read_yaml(path, MLMODEL, max_bytes=MAX_MLMODEL_BYTES)
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise InvalidInput(f"{MLMODEL} has no 'flavors' section")
    return doc


def _inside(folder: Path, rel: Any, flavor: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise InvalidInput(f"{MLMODEL}: flavor '{flavor}' names no model file")
    target = (folder / rel).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise InvalidInput(f"{MLMODEL}: flavor '{flavor}' names {rel!r}, outside the model folder")
    if not target.exists():
        raise InvalidInput(f"{MLMODEL}: flavor '{flavor}' names {rel!r}, which is not in the folder")
    return target


def _model_path(folder: Path, flavor: str, section: dict[str, Any], keys: tuple[str, ...]) -> Path:
    rel = next((section[k] for k in keys if section.get(k)), None)
    target = _inside(folder, rel, flavor)
    if target.is_dir() and flavor in ("keras", "pytorch"):
        # the model file inside the flavor's data folder (data/model.keras, data/model.pth)
        files = sorted(p for p in target.iterdir() if p.is_file() and p.stem == "model")
        if len(files) != 1:
            raise InvalidInput(f"{MLMODEL}: flavor '{flavor}': {rel}/ holds no single model file")
        return files[0]
    return target


class MlflowFormat(ModelFormat):
    name: ClassVar[str] = "mlflow"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and (path / MLMODEL).is_file()

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        from mlport.formats.registry import default_registry

        doc = read_mlmodel(path)
        flavors: dict[str, Any] = doc["flavors"]
        sig = doc.get("signature")
        declared = parse_signature(sig.get("inputs")) if isinstance(sig, dict) else None
        chosen = next((f for f in FLAVORS if isinstance(flavors.get(f), dict)), None)
        if chosen is None:
            if isinstance(flavors.get(PYFUNC), dict):
                return _load_pyfunc(path, flavors[PYFUNC], declared, options)
            raise InvalidInput(f"{MLMODEL} has flavors {', '.join(flavors) or 'none'}; mlport serves "
                               f"{', '.join(FLAVORS)} (and {PYFUNC}, trusted only)")
        fmt_name, keys = FLAVORS[chosen]
        target = _model_path(path, chosen, flavors[chosen], keys)
        fmt = default_registry().get(fmt_name)
        inner = fmt.load(target, LoadOptions(trusted=options.trusted, options=options.options,
                                             intra_op_threads=options.intra_op_threads))
        try:
            evaluator = MlflowEvaluator(inner, declared)
            example = read_example(path, doc.get("saved_input_example_info"), list(evaluator.signature.inputs))
            if example is not None:
                evaluator.check_example(example)
        except BaseException:
            inner.close()
            raise
        return evaluator


# --------------------------------------------------------------------------- pyfunc
class PyfuncEvaluator(Evaluator):
    """A ``python_function`` model through ``mlflow.pyfunc`` (trusted models only): column inputs
    go in as a DataFrame, one tensor as an array; the answer is ``prediction``."""

    platform = "mlflow_pyfunc"

    def __init__(self, model: Any, inputs: list[TensorSpec], columns: bool) -> None:
        self._model = model
        self._columns = columns
        self.signature = Signature(tuple(inputs), (TensorSpec("prediction", DataType.FP64, (-1,)),))

    def predict(self, inputs: Arrays) -> Arrays:
        if self._columns:
            import pandas as pd

            data: Any = pd.DataFrame({s.name: inputs[s.name] for s in self.signature.inputs})
        else:
            data = inputs[self.signature.inputs[0].name]
        result = self._model.predict(data)
        values = np.asarray(getattr(result, "to_numpy", lambda: result)(), dtype=np.float64)
        if values.ndim != 1:
            raise InvalidInput(f"the model answered shape {list(values.shape)}; mlport serves one number per row "
                               "from python_function models")
        return {"prediction": values}


def _load_pyfunc(path: Path, section: dict[str, Any], declared: tuple[list[TensorSpec], bool] | None,
                 options: LoadOptions) -> Evaluator:
    loader = section.get("loader_module") or "a pickled PythonModel"
    if not options.trusted:
        raise UntrustedModel(
            f"{MLMODEL} has only the {PYFUNC} flavor: serving it runs its custom code ({loader}) inside the "
            "server; mark the model trusted (--trusted or 'trusted: true' in its config) if you trust its source"
        )
    if importlib.util.find_spec("mlflow") is None:
        raise MissingExtra(f"a {PYFUNC} model loads through mlflow: pip install mlflow-skinny")
    if declared is None or (not declared[1] and len(declared[0]) != 1):
        raise InvalidInput(f"a {PYFUNC} model needs a signature in {MLMODEL} with columns or one tensor")
    specs, columns = declared
    if not columns and not specs[0].name:
        specs = [TensorSpec("input", specs[0].datatype, specs[0].shape)]
    import mlflow.pyfunc

    return PyfuncEvaluator(mlflow.pyfunc.load_model(str(path)), specs, columns)
