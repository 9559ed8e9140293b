"""Turn decoded values into arrays that match a signature, with errors that name the value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput
from mlport.limits import Limits

__all__ = ["as_array", "check_inputs", "check_shape_limits", "fmt_shape", "missing_refused", "to_dtype"]


# kinds of the leaves of an object array
_TEXT, _NULL, _NESTED, _BOOL, _NUMBER, _OTHER = range(6)


def _kind(v: Any) -> int:
    if isinstance(v, str):
        return _TEXT
    if v is None:
        return _NULL
    if isinstance(v, list | dict | tuple):
        return _NESTED
    if isinstance(v, bool | np.bool_):
        return _BOOL
    if isinstance(v, int | float | np.integer | np.floating):
        return _NUMBER
    return _OTHER


def _text(v: Any) -> Any:
    """A leaf of a string tensor: text stays as it is, a number becomes its decimal text, null (missing) ''."""
    if isinstance(v, str):
        return v
    return "" if v is None else str(v)


_leaf_kind = np.frompyfunc(_kind, 1, 1)
_leaf_text = np.frompyfunc(_text, 1, 1)


def fmt_shape(shape: Any) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def check_shape_limits(name: str, shape: tuple[int, ...], limits: Limits) -> tuple[int, ...]:
    """Refuse a declared shape with negative dims, too many dims or too many elements."""
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input '{name}': shape {fmt_shape(shape)} has a negative dimension")
    if len(shape) > limits.max_tensor_rank:
        raise InvalidInput(f"input '{name}' has {len(shape)} dimensions; the limit is {limits.max_tensor_rank}")
    count = 1
    for d in shape:
        count *= d
    if count > limits.max_tensor_elements:
        raise InvalidInput(f"input '{name}' has {count} elements; the limit is {limits.max_tensor_elements}")
    return shape


def as_array(name: str, value: Any, limits: Limits) -> np.ndarray[Any, Any]:
    """Build an array from nested lists/scalars, refusing ragged or non-scalar leaves."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"input '{name}' is not a rectangular array of at most {limits.max_tensor_rank} dimensions "
                "(ragged or too deep nesting?)"
            ) from exc
        if arr.dtype.kind == "U":
            # numpy's fixed-width str dtype drops trailing NULs ("a\0" -> "a"): keep the strings themselves
            arr = np.array(value, dtype=object)
    if arr.dtype == object and arr.size:
        arr = _object_leaves(name, arr)
    if arr.ndim > limits.max_tensor_rank:
        raise InvalidInput(f"input '{name}' has {arr.ndim} dimensions; the limit is {limits.max_tensor_rank}")
    if arr.size > limits.max_tensor_elements:
        raise InvalidInput(f"input '{name}' has {arr.size} elements; the limit is {limits.max_tensor_elements}")
    return arr


def _object_leaves(name: str, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Check the leaves of an object array (strings, or values beside nulls; numbers never get here).

    Null is a missing value: in numbers it becomes NaN (a float array), in strings ``""``.  Strings beside
    numbers make every leaf text, as numpy's str dtype would.
    """
    kinds = np.asarray(_leaf_kind(arr), dtype=np.int8)
    present = np.bincount(kinds.ravel(), minlength=6) > 0
    if present[_NESTED]:
        raise InvalidInput(f"input '{name}' is not a rectangular array (ragged nesting?)")
    if present[_NULL]:
        if present[_BOOL] or present[_OTHER]:
            raise InvalidInput(
                f"input '{name}' has null values beside booleans or binary values; null (missing) is taken "
                "only in numbers (as NaN) and strings (as \"\")"
            )
        if not present[_TEXT]:
            return arr.astype(np.float64)  # None -> NaN
        return np.asarray(_leaf_text(arr), dtype=object)
    if present[_TEXT] and (present[_NUMBER] or present[_BOOL]):
        return np.asarray(_leaf_text(arr), dtype=object)
    return arr


def missing_refused(name: str, datatype: DataType) -> str:
    """The message for a missing value (null or NaN) sent to an input that cannot hold one."""
    return (f"input '{name}' is {datatype.value}, which cannot hold a missing value (null or NaN); "
            "only floating-point and string inputs take them")


def to_dtype(spec: TensorSpec, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Cast ``arr`` to the spec's datatype when the values allow it."""
    want = spec.datatype
    kind = arr.dtype.kind
    if want is DataType.BYTES:
        if arr.dtype == object:
            return arr
        if kind in "US":
            return arr.astype(object)
        if kind in "biuf":
            # numbers sent for a string input (e.g. pclass 3 for "3"): their decimal text; NaN (missing) is ""
            text = arr.astype(str).astype(object)
            if kind == "f":
                text[np.isnan(arr)] = ""
            return text
        raise InvalidInput(f"input '{spec.name}' expects strings, got {arr.dtype}")
    target = want.numpy
    if arr.dtype == target:
        return arr
    if kind in "USO":
        raise InvalidInput(
            f"input '{spec.name}' expects {want.value} with shape {fmt_shape(spec.shape)}, got strings"
        )
    if kind == "f" and target.kind in "iub" and arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        if np.isnan(arr).any():
            raise InvalidInput(missing_refused(spec.name, want))
        raise InvalidInput(f"input '{spec.name}' expects {want.value} (integers), got fractional numbers")
    if kind == "b" and target.kind not in "biuf":
        raise InvalidInput(f"input '{spec.name}' expects {want.value}, got booleans")
    if target.kind in "iu" and arr.size:
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise InvalidInput(f"input '{spec.name}' has values outside the range of {want.value}")
    return arr.astype(target, copy=False)


def check_inputs(
    signature: Signature, inputs: Mapping[str, np.ndarray[Any, Any]]
) -> dict[str, np.ndarray[Any, Any]]:
    """Check names, dtypes and shapes; cast dtypes where safe. Returns the arrays to feed the model."""
    unknown = [n for n in inputs if signature.input(n) is None]
    if unknown:
        raise InvalidInput(
            f"unknown input {', '.join(repr(n) for n in unknown)}; the model takes: {', '.join(signature.input_names)}"
        )
    missing = [s.name for s in signature.inputs if s.name not in inputs]
    if missing:
        raise InvalidInput(f"missing input {', '.join(repr(n) for n in missing)}")
    out: dict[str, np.ndarray[Any, Any]] = {}
    batch: int | None = None
    for spec in signature.inputs:
        arr = inputs[spec.name]
        if not spec.shape_matches(arr.shape):
            raise InvalidInput(
                f"input '{spec.name}' expects {spec.datatype.value} with shape {fmt_shape(spec.shape)}, "
                f"got shape {fmt_shape(arr.shape)}"
            )
        if spec.batched:
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise InvalidInput(
                    f"input '{spec.name}' has batch size {arr.shape[0]}, other inputs have {batch}"
                )
        out[spec.name] = to_dtype(spec, arr)
    return out
