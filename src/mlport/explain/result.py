"""What an explanation answers, its budget (evaluations and time), and the model as a function of arrays."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlport.core.types import Signature
from mlport.core.validate import check_inputs
from mlport.errors import ErrorCode, MlportError, PayloadTooLarge
from mlport.formats.base import Arrays, Evaluator

__all__ = ["Attribution", "Budget", "Explanation", "ModelFunction", "OutOfTime", "batch_rows"]

log = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]


class OutOfTime(MlportError):
    """The explanation ran past its time bound (HTTP 504)."""

    code = ErrorCode.DEADLINE_EXCEEDED


@dataclass(slots=True)
class Attribution:
    """The attributions of one output (one element of it) for every explained row."""

    name: str
    element: str | int | None
    base_value: Array
    prediction: Array
    #: ``[rows, features]`` for tabular explanations.
    values: Array | None = None
    #: ``[rows, H, W]`` for image explanations.
    map: Array | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "element": self.element,
                               "base_value": _floats(self.base_value), "prediction": _floats(self.prediction)}
        if self.map is not None:
            doc["map"] = _floats(self.map)
        else:
            assert self.values is not None
            doc["values"] = _floats(self.values)
        return doc


@dataclass(slots=True)
class Explanation:
    method: str
    features: list[str]
    outputs: list[Attribution]
    rows: int
    evaluations: int = 0
    seconds: float = 0.0
    #: The first explained image (``[H, W]`` or ``[H, W, C]``), for the heat map.
    image: Array | None = field(default=None, repr=False)
    #: The PNG heat map over :attr:`image`, when asked for.
    png: bytes | None = field(default=None, repr=False)

    def to_json(self, model: str, version: str) -> dict[str, Any]:
        return {
            "model_name": model, "model_version": version, "method": self.method, "features": self.features,
            "outputs": [o.to_json() for o in self.outputs],
            "limits": {"rows": self.rows, "evaluations": self.evaluations, "seconds": round(self.seconds, 6)},
        }


def _floats(arr: Array) -> Any:
    """Plain floats (NaN and infinities, which JSON lacks, as ``None``)."""
    a = np.asarray(arr, dtype=np.float64)
    if np.isfinite(a).all():
        return a.tolist()
    return np.where(np.isfinite(a), a.astype(object), np.array(None)).tolist()


class Budget:
    """Counts the rows the model is run on and watches the clock; past either bound the explanation stops."""

    def __init__(self, max_evaluations: int, timeout_s: float) -> None:
        self.max_evaluations = max_evaluations
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.used = 0

    def check_time(self) -> None:
        if time.monotonic() >= self.deadline:
            raise OutOfTime(f"the explanation ran past its time bound of {self.timeout_s:g} s; ask for fewer rows, "
                            "fewer samples or background rows, or a larger patch")

    def spend(self, rows: int) -> None:
        """Count ``rows`` model evaluations about to run (after the clock is checked)."""
        self.check_time()
        if self.used + rows > self.max_evaluations:
            raise PayloadTooLarge(f"the explanation needs more than {self.max_evaluations} model evaluations (its "
                                  "bound); ask for fewer rows, samples or background rows, or a larger patch")
        self.used += rows

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class ModelFunction:
    """The served model as a function of input arrays: validated as a prediction's inputs are, run by the
    model's own evaluator (the one predictions use), counted against the budget, in chunks of rows."""

    def __init__(self, evaluator: Evaluator, name: str, budget: Budget, chunk_rows: int) -> None:
        self.evaluator = evaluator
        self.signature: Signature = evaluator.signature
        self.name = name
        self.budget = budget
        self.chunk_rows = max(1, chunk_rows)

    def __call__(self, inputs: Arrays) -> Arrays:
        rows = batch_rows(inputs)
        if rows <= self.chunk_rows:
            return self._run(inputs, rows)
        parts = [self._run({k: v[i:i + self.chunk_rows] for k, v in inputs.items()},
                           min(self.chunk_rows, rows - i)) for i in range(0, rows, self.chunk_rows)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _run(self, inputs: Arrays, rows: int) -> Arrays:
        self.budget.spend(rows)
        feed = check_inputs(self.signature, inputs)
        try:
            out = self.evaluator.predict(feed)
        except MlportError:
            raise
        except Exception as exc:
            log.debug("model %s failed while explained", self.name, exc_info=exc)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
            raise MlportError(f"model '{self.name}' failed on this input: {first}", ErrorCode.INVALID_ARGUMENT) \
                from exc
        return {k: np.asarray(v) for k, v in out.items()}


def batch_rows(inputs: Arrays) -> int:
    """The rows of a batch of inputs (its first input's first axis)."""
    for arr in inputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 0
