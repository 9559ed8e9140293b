"""The evaluator of one PMML model on the server's Java runtime: its signature, and prediction in one call
per batch (the rows travel as one JSON document, in the ``split`` orientation pypmml uses for DataFrames)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, as_text
from mlport.formats.pmml.document import bom_text, one_line
from mlport.formats.pmml.jvm import JavaRuntime, java_message

__all__ = ["MAX_FIELDS", "PmmlEvaluator", "pmml_datatype"]

log = logging.getLogger(__name__)

#: Most fields a model's signature may have (inputs, and outputs).
MAX_FIELDS = 10_000
#: How the evaluator writes a missing integer.
_NO_LONG = np.iinfo(np.int64).min
#: Compared with an object array, elementwise: where it holds None.
_NONE = np.array([None], dtype=object)

_TYPES = {
    "string": DataType.BYTES,
    "double": DataType.FP64,
    "real": DataType.FP64,
    "float": DataType.FP32,
    "integer": DataType.INT64,
    "boolean": DataType.BOOL,
}


def pmml_datatype(pmml_type: str | None) -> DataType:
    """The tensor datatype of a PMML ``dataType``; dates, times and unknown types travel as text."""
    return _TYPES.get((pmml_type or "").strip(), DataType.BYTES)


@dataclass(frozen=True, slots=True)
class _Output:
    spec: TensorSpec
    #: The column of the evaluator's answer that holds it.
    column: str


def _outputs(model: Any, name: str) -> list[_Output]:
    """The served outputs: OutputFields, then targets without a predicted value, else the defaults."""
    own_output = model.call("output") is not None
    # a mining model without its own Output element answers with its segments' OutputFields (the last
    # segment's, in a model chain); any other model without one gets outputs the evaluator makes up
    declared = own_output or model.modelElement == "MiningModel"
    fields = [f for f in model.outputFields if bool(f.call("isFinalResult"))] if declared else []
    targets = [(t.name, t.dataType) for t in model.targetFields]
    generated = {} if own_output else {f"predicted_{t}": t for t, _ in targets}
    found = []
    for f in fields:
        served = generated.get(f.name, f.name) if f.feature == "predictedValue" else f.name
        found.append(_Output(TensorSpec(served, pmml_datatype(f.dataType), (-1,)), f.name))
    predicted = {f.targetField for f in fields if f.feature == "predictedValue"}
    uncovered = [t for t in targets if t[0] not in predicted and not (None in predicted and len(targets) == 1)]
    if uncovered:
        # the evaluator's supplementary outputs hold a predicted value per target
        model.setSupplementOutput(True)
        extra = [f for f in model.outputFields if f.feature == "predictedValue"]
        taken = {o.spec.name for o in found}
        for target, dtype in uncovered:
            mine = [f for f in extra if f.targetField in (target, None) and f.name not in taken]
            if not mine:
                raise MlportError(f"{name}: the evaluator gives no predicted value for the target '{target}'")
            served = target if target not in taken else mine[0].name
            found.append(_Output(TensorSpec(served, pmml_datatype(dtype), (-1,)), mine[0].name))
            taken.add(served)
    if not found:
        found = [_Output(TensorSpec(f.name, pmml_datatype(f.dataType), (-1,)), f.name) for f in model.outputFields]
    if len({o.spec.name for o in found}) < len(found):  # a target named like an output: the evaluator's names
        found = [_Output(TensorSpec(o.column, o.spec.datatype, o.spec.shape), o.column) for o in found]
    if not found:
        raise MlportError(f"{name}: the model has no output fields and no target")
    return found


def _open_model(data: bytes, name: str) -> Any:
    """The pypmml model of the checked document, on the running Java runtime."""
    from pypmml import Model

    try:
        text = bom_text(data)
        return Model.fromBytes(data) if text is None else Model.fromString(text)
    except MlportError:
        raise
    except Exception as exc:
        raise MlportError(f"pypmml could not load {name}: {java_message(exc)}") from None


class PmmlEvaluator(Evaluator):
    platform = "pmml"

    def __init__(self, data: bytes, name: str, java: str, runtime: JavaRuntime) -> None:
        self._data = data
        self._name = name
        self._java = java
        self._runtime = runtime
        self._lock = threading.Lock()
        self._closed = False
        self._jvm = runtime.acquire(java)
        try:
            self._model: Any = _open_model(data, name)
            try:
                inputs = [TensorSpec(f.name, pmml_datatype(f.dataType), (-1,)) for f in self._model.inputFields]
                outputs = _outputs(self._model, name)
                self._supplement = bool(self._model.call("supplementOutput"))
            except MlportError:
                raise
            except Exception as exc:
                raise MlportError(f"pypmml could not read the fields of {name}: {java_message(exc)}") from None
            if not inputs:
                raise MlportError(f"{name}: the model has no active input field, so it cannot score rows")
            if len(inputs) > MAX_FIELDS or len(outputs) > MAX_FIELDS:
                raise MlportError(f"{name} has more than {MAX_FIELDS} input or output fields")
        except BaseException:
            self._model = None
            self._runtime.release(self._jvm)
            raise
        self._columns = [s.name for s in inputs]
        self._outputs = outputs
        self.signature = Signature(tuple(inputs), tuple(o.spec for o in outputs))

    def _revive(self) -> None:
        """Load the model again on a new Java runtime, after the one it was on exited (called under the lock)."""
        jvm = self._runtime.acquire(self._java)
        try:
            model = _open_model(self._data, self._name)
            if self._supplement:
                model.setSupplementOutput(True)
        except BaseException:
            self._runtime.release(jvm)
            raise
        old, self._jvm, self._model = self._jvm, jvm, model
        self._runtime.release(old)
        log.info("model %s loaded again on the new Java runtime", self._name)

    # -------------------------------------------------------------- encoding
    def _encode(self, spec: TensorSpec, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """One input column as JSON-ready values; missing values become None (JSON null)."""
        if spec.datatype is DataType.BYTES:
            try:
                text = as_text(arr)
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{spec.name}' holds bytes that are not UTF-8 text") from None
            text[text == ""] = None
            return text
        if spec.datatype in (DataType.FP32, DataType.FP64):
            # NaN and infinities are written as null: missing
            return arr.astype(np.float64, copy=False)
        return arr

    def _decode(self, out: _Output, column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        spec = out.spec
        missing = np.asarray(np.equal(column, _NONE), dtype=bool)
        try:
            if spec.datatype is DataType.BYTES:
                if missing.any():
                    column = np.where(missing, "", column)
                return column.astype(str).astype(object)
            if spec.datatype in (DataType.FP32, DataType.FP64):
                if missing.any():
                    column = np.where(missing, np.nan, column)
                return column.astype(spec.datatype.numpy)
            values = np.where(missing, 0, column).astype(spec.datatype.numpy)
            if spec.datatype is DataType.INT64:
                # the evaluator answers a missing integer as the smallest long
                missing |= values == _NO_LONG
            if missing.any():
                row = int(np.argmax(missing))
                raise InvalidInput(
                    f"the model gives no value for output '{spec.name}' (row {row}): a missing or invalid "
                    "input value it has no treatment for"
                )
            return values
        except (TypeError, ValueError) as exc:
            raise MlportError(f"output '{spec.name}': the evaluator answered values that are not "
                              f"{spec.datatype.value}: {one_line(str(exc))}") from None

    def predict(self, inputs: Arrays) -> Arrays:
        n = int(inputs[self._columns[0]].shape[0])
        if n == 0:
            return {o.spec.name: np.empty((0,), dtype=o.spec.datatype.numpy) for o in self._outputs}
        table = np.empty((n, len(self._columns)), dtype=object)
        for j, spec in enumerate(self.signature.inputs):
            table[:, j] = self._encode(spec, inputs[spec.name])
        request = orjson.dumps({"columns": self._columns, "data": table.tolist()},
                               option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8")
        answer = self._call(request)
        try:
            doc = orjson.loads(answer)
            columns = {str(c): i for i, c in enumerate(doc["columns"])}
            rows = doc["data"]
            result = np.empty((n, len(columns)), dtype=object)
            result[...] = rows
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise MlportError(f"the PMML evaluator gave an answer that is not a table of {n} rows: "
                              f"{one_line(str(exc))}") from None
        out: Arrays = {}
        for o in self._outputs:
            index = columns.get(o.column)
            if index is None:
                raise MlportError(f"the PMML evaluator's answer has no column '{o.column}'")
            out[o.spec.name] = self._decode(o, result[:, index])
        return out

    def _call(self, request: str) -> str:
        from py4j.protocol import Py4JJavaError

        with self._lock:
            if self._closed:
                raise MlportError("the model is closed", ErrorCode.UNAVAILABLE)
            if not self._jvm.alive():
                try:
                    self._revive()
                except MlportError as exc:
                    raise MlportError(str(exc), ErrorCode.UNAVAILABLE) from None
            try:
                answer = self._model.call("predict", request)
            except Py4JJavaError as exc:
                raise InvalidInput(f"the PMML evaluator refused the rows: {java_message(exc)}") from None
            except Exception as exc:
                if not self._jvm.alive():
                    raise MlportError("the Java runtime of the PMML evaluator exited while scoring; the next "
                                      "request starts a new one", ErrorCode.UNAVAILABLE) from None
                raise MlportError(f"the PMML evaluator failed: {java_message(exc)}") from None
        if not isinstance(answer, str):
            raise MlportError("the PMML evaluator gave no answer")
        return answer

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._model = None
            self._data = b""
        self._runtime.release(self._jvm)
