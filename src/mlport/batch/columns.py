"""Which columns of the input feed which model input, and how one chunk of rows becomes model inputs.

An input is fed, in this order of preference, by ``--map COLUMN=INPUT[:INDEX]`` options, by the model
config's ``fields`` (named scalar fields stacked into one input, as the eval API does), or by a column of
the input's own name (a scalar per row, or a list per row for a multi-valued input). A row whose value is
missing, is not a number where one is expected, or has the wrong length is a bad row: it is reported with
its row number and reason, and the other rows of its chunk are scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlport.batch.arrays import to_numpy
from mlport.batch.model import ScoringModel
from mlport.core.types import DataType, TensorSpec
from mlport.errors import InvalidInput
from mlport.limits import Limits

__all__ = ["IMAGE_COLUMN", "ColumnPlan", "Prepared", "parse_maps"]

#: The column an image reader gives the file bytes in (and ``path``, the file's name).
IMAGE_COLUMN = "image"

Array = np.ndarray[Any, Any]


def parse_maps(items: Sequence[str]) -> dict[str, list[tuple[str, int | None]]]:
    """``["a=x:0", "b=x:1", "t=text"]`` as ``{"x": [("a", 0), ("b", 1)], "text": [("t", None)]}``."""
    out: dict[str, list[tuple[str, int | None]]] = {}
    for item in items:
        column, sep, target = item.partition("=")
        if not sep or not column or not target:
            raise InvalidInput(f"--map {item!r}: expected COLUMN=INPUT or COLUMN=INPUT:INDEX")
        name, colon, index = target.partition(":")
        if colon and not index.isdigit():
            raise InvalidInput(f"--map {item!r}: the index after ':' must be a whole number")
        out.setdefault(name, []).append((column, int(index) if colon else None))
    return out


@dataclass
class Prepared:
    """One chunk's model inputs for its good rows, and the bad rows with their reasons."""

    feed: dict[str, Array]
    #: Positions (in the chunk) of the rows in ``feed``.
    good: Array
    #: ``position -> reason`` for the rows left out.
    bad: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    """Where one model input comes from: one whole column, several columns at positions, or image files."""

    spec: TensorSpec
    columns: tuple[str, ...]
    whole: bool
    image: bool = False


class ColumnPlan:
    """The mapping from input columns to the model's inputs, checked once against the input's columns."""

    def __init__(self, model: ScoringModel, columns: Sequence[str], maps: dict[str, list[tuple[str, int | None]]],
                 limits: Limits | None = None) -> None:
        self.model = model
        self.limits = limits or Limits()
        have = set(columns)
        known = {s.name for s in model.signature.inputs}
        unknown = sorted(set(maps) - known)
        if unknown:
            raise InvalidInput(f"--map names input {', '.join(map(repr, unknown))}, which the model does not take; "
                               f"it takes: {', '.join(sorted(known))}")
        self.sources = [self._source(spec, have, maps.get(spec.name)) for spec in model.signature.inputs]
        self.used = sorted({c for s in self.sources for c in s.columns})

    def _source(self, spec: TensorSpec, have: set[str], mapped: list[tuple[str, int | None]] | None) -> _Source:
        if mapped:
            return self._mapped(spec, have, mapped)
        fields = self.model.config.fields.get(spec.name)
        if fields and all(f in have for f in fields):
            return _Source(spec, tuple(sorted(fields, key=fields.__getitem__)), whole=False)
        if spec.name in have:
            return _Source(spec, (spec.name,), whole=True)
        if IMAGE_COLUMN in have and len(self.model.signature.inputs) == 1:
            return _Source(spec, (IMAGE_COLUMN,), whole=True, image=True)
        wanted = f"columns {', '.join(sorted(fields, key=fields.__getitem__))}" if fields else f"a column '{spec.name}'"
        raise InvalidInput(f"input '{spec.name}' has no column: the input needs {wanted}, or map columns with "
                           f"--map COLUMN={spec.name}[:INDEX]; it has: {', '.join(sorted(have)) or 'no columns'}")

    @property
    def numeric(self) -> frozenset[str]:
        """The columns that feed only numeric inputs (a reader may parse them as numbers)."""
        def feeds(text: bool) -> set[str]:
            return {c for s in self.sources if (s.image or s.spec.datatype is DataType.BYTES) == text
                    for c in s.columns}
        return frozenset(feeds(False) - feeds(True))

    @staticmethod
    def _mapped(spec: TensorSpec, have: set[str], mapped: list[tuple[str, int | None]]) -> _Source:
        missing = [c for c, _ in mapped if c not in have]
        if missing:
            raise InvalidInput(f"--map names column {', '.join(map(repr, missing))}, which the input does not have")
        if len(mapped) == 1 and mapped[0][1] is None:
            return _Source(spec, (mapped[0][0],), whole=True)
        if any(i is None for _, i in mapped):
            raise InvalidInput(f"--map for input '{spec.name}': give every column an index (COLUMN={spec.name}:I) "
                               "when several columns feed it")
        positions = sorted(i for _, i in mapped if i is not None)
        if positions != list(range(len(positions))):
            raise InvalidInput(f"--map for input '{spec.name}': the indexes must be 0..{len(positions) - 1}, "
                               f"once each; got {positions}")
        return _Source(spec, tuple(c for c, _ in sorted(mapped, key=lambda m: m[1] or 0)), whole=False)

    # ------------------------------------------------------------------ per chunk
    def prepare(self, batch: pa.RecordBatch) -> Prepared:
        n = batch.num_rows
        bad: dict[int, str] = {}
        built: dict[str, Array] = {}
        for src in self.sources:
            if src.image:
                built[src.spec.name] = self._images(src.spec, batch.column(IMAGE_COLUMN), bad)
            elif src.whole:
                built[src.spec.name] = _whole(src.spec, src.columns[0], batch.column(src.columns[0]), bad)
            else:
                cols = [_scalars(src.spec, c, batch.column(c), bad) for c in src.columns]
                built[src.spec.name] = _stack(cols)
        good = np.setdiff1d(np.arange(n), np.fromiter(bad, dtype=np.int64, count=len(bad)), assume_unique=True)
        feed = {}
        for src in self.sources:
            arr = built[src.spec.name]
            feed[src.spec.name] = arr if len(good) == n else arr[good]
        return Prepared(feed, good, bad)

    def _images(self, spec: TensorSpec, column: pa.Array, bad: dict[int, str]) -> Array:
        """The image files' bytes decoded for ``spec`` (one decode per file: the image library has no batch call)."""
        from mlport.protocols.images import decode_image  # the image library only for image inputs

        rows: list[Array | None] = []
        for i, data in enumerate(column.to_pylist()):
            try:
                rows.append(decode_image(data, spec, self.model.config.image, self.limits, add_batch=False))
            except InvalidInput as exc:
                bad[i] = str(exc)
                rows.append(None)
        good = [r for r in rows if r is not None]
        shape = good[0].shape if good else (0,)
        for i, r in enumerate(rows):
            if r is not None and r.shape != shape:
                bad[i] = f"image of shape {list(r.shape)} differs from the chunk's first {list(shape)}"
        filler = np.zeros(shape, dtype=spec.datatype.numpy)
        return np.stack([r if r is not None and i not in bad else filler for i, r in enumerate(rows)]) \
            if rows else np.zeros((0, *shape), dtype=spec.datatype.numpy)


def _stack(cols: list[Array]) -> Array:
    if any(c.dtype == object for c in cols):
        cols = [c.astype(object) for c in cols]
    return np.stack(cols, axis=-1)


def _nulls(column: pa.Array, name: str, bad: dict[int, str]) -> None:
    if column.null_count:
        for i in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)):
            bad.setdefault(int(i), f"column '{name}' is empty")


def _scalars(spec: TensorSpec, name: str, column: pa.Array, bad: dict[int, str]) -> Array:
    """One value per row as numbers (or text for a string input); unusable values mark their rows bad."""
    _nulls(column, name, bad)
    if spec.datatype is DataType.BYTES:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return np.asarray(to_numpy(column.fill_null("") if column.null_count else column), dtype=object)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            return np.asarray(column.fill_null(b"").to_numpy(zero_copy_only=False), dtype=object)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            # numbers given for a string input answer their decimal text, as the eval API does
            return column.fill_null(0).to_numpy(zero_copy_only=False).astype(str).astype(object)  # type: ignore[no-any-return]
        raise InvalidInput(f"column '{name}' of type {column.type} cannot feed string input '{spec.name}'")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = _parse_numbers(name, column, bad)
    elif pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    elif not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise InvalidInput(f"column '{name}' of type {column.type} cannot feed input '{spec.name}' "
                           f"({spec.datatype.value})")
    arr = to_numpy(column.fill_null(0) if column.null_count else column)
    target = spec.datatype.numpy
    if target.kind in "iub" and arr.dtype.kind == "f":
        frac = ~(np.isfinite(arr) & (arr == np.round(arr)))
        for i in np.flatnonzero(frac):
            bad.setdefault(int(i), f"column '{name}': {arr[i]!r} is not a whole number (input '{spec.name}' "
                                   f"is {spec.datatype.value})")
        arr = np.where(frac, 0, arr)
    if target.kind in "iu":
        info = np.iinfo(target)
        out = (arr < info.min) | (arr > info.max)
        for i in np.flatnonzero(out):
            bad.setdefault(int(i), f"column '{name}': {arr[i]!r} is outside the range of {spec.datatype.value}")
        arr = np.where(out, 0, arr)
    result: Array = arr.astype(target, copy=False)
    return result


def _parse_numbers(name: str, column: pa.Array, bad: dict[int, str]) -> pa.Array:
    """Text as numbers: one vectorised cast, and only when it fails a look for the values that are not numbers."""
    try:
        return pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = column.to_numpy(zero_copy_only=False)
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(text, dtype=object).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    present = ~column.is_null().to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(np.isnan(numbers) & present):
        if str(text[i]).strip().lower() not in ("nan", "-nan", "+nan"):
            bad.setdefault(int(i), f"column '{name}': {text[i]!r} is not a number")
    return pa.array(numbers, mask=~present)


def _whole(spec: TensorSpec, name: str, column: pa.Array, bad: dict[int, str]) -> Array:
    """One column holding a whole input: a scalar per row, or a list per row for a multi-valued input."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        arr = _scalars(spec, name, column, bad)
        return arr.reshape((-1, *spec.shape[1:])) if len(spec.shape) > 1 and all(
            d == 1 for d in spec.shape[1:]) else arr
    _nulls(column, name, bad)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    inner = [d for d in spec.shape[1:]]
    want = int(np.prod(inner)) if inner and -1 not in inner else None
    present = lengths[~column.is_null().to_numpy(zero_copy_only=False)]
    width = want if want is not None else (int(present[0]) if len(present) else 0)
    for i in np.flatnonzero(lengths != width):
        if not column[int(i)].is_valid:
            continue
        bad.setdefault(int(i), f"column '{name}' has {int(lengths[i])} values; input '{spec.name}' expects {width}")
    keep = pc.if_else(pc.equal(pa.array(lengths), width), column, pa.nulls(len(column), column.type))
    filled = [v if v is not None else [0] * width for v in keep.to_pylist()] if keep.null_count else None
    values = pa.array(filled, type=column.type) if filled is not None else keep
    flat_bad: dict[int, str] = {}
    flat = _scalars(spec, name, pc.list_flatten(values), flat_bad)
    for k, reason in flat_bad.items():
        bad.setdefault(k // max(width, 1), reason)
    shape = (len(column), *inner) if want is not None else (len(column), width)
    return flat.reshape(shape)
