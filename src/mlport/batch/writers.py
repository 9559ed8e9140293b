"""Writers: Parquet, CSV and JSON Lines, through a temporary name renamed once the file is complete.

A multi-valued output (a vector per row) is a list column in Parquet and JSON Lines, and one column per
element (``name_0``, ``name_1``...) in CSV.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlport.batch.storage import Location, locate, upload
from mlport.errors import InvalidInput

__all__ = ["FORMATS", "output_columns", "output_format", "write_tables"]

FORMATS = ("parquet", "csv", "jsonl")


def output_format(loc: Location, fmt: str | None = None) -> str:
    if fmt:
        return fmt
    name = loc.name.lower()
    for suffix, kind in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"), (".jsonl", "jsonl"),
                         (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(suffix):
            return kind
    raise InvalidInput(f"{loc.uri}: cannot tell the output format from the name; use a .parquet, .csv or .jsonl "
                       "name, or --output-format")


def output_columns(outputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, pa.Array]:
    """Model outputs as columns: a scalar per row, or a list (flattened per row) for multi-valued outputs."""
    cols: dict[str, pa.Array] = {}
    for name, arr in outputs.items():
        if arr.ndim == 0:
            raise InvalidInput(f"output '{name}' has no batch axis: batch scoring needs one value per row")
        flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
        if pa.types.is_binary(flat.type):
            with contextlib.suppress(pa.ArrowInvalid):  # text outputs (UTF-8 checked once, vectorised)
                flat = flat.cast(pa.string())
        if arr.ndim == 1:
            cols[name] = flat
        else:
            cols[name] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(arr.shape[1:])))
    return cols


def _flatten_lists(table: pa.Table) -> pa.Table:
    """One column per element for list columns (CSV has no lists)."""
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
            flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).reshape(-1, width) \
                if len(col) else np.zeros((0, width))
            for i in range(width):
                arrays.append(pa.array(flat[:, i]))
                names.append(f"{name}_{i}")
        elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            # a list of varying length (a kept input column): its JSON text
            arrays.append(pa.array([orjson.dumps(v).decode() if v is not None else None for v in col.to_pylist()],
                                   pa.string()))
            names.append(name)
        else:
            arrays.append(col)
            names.append(name)
    return pa.table(arrays, names=names)


def write_tables(loc: Location, fmt: str, tables: Iterable[pa.Table], empty: pa.Schema) -> None:
    """Write ``tables`` (one schema) to ``loc`` through a temporary name, renamed when complete (in an object
    store: a local temporary file, uploaded when complete)."""
    if loc.remote:
        with tempfile.TemporaryDirectory(prefix="mlport-score-") as folder:
            local = locate(os.path.join(folder, loc.name))
            write_tables(local, fmt, tables, empty)
            upload(local.path, loc)
        return
    tmp = loc.sibling(f".tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(os.path.dirname(loc.path) or "/", exist_ok=True)
    try:
        with tmp.fs.open_output_stream(tmp.path) as sink:
            _write(sink, fmt, tables, empty)
        loc.fs.move(tmp.path, loc.path)
    except BaseException:
        if tmp.exists():
            tmp.fs.delete_file(tmp.path)
        raise


def _write(sink: Any, fmt: str, tables: Iterable[pa.Table], empty: pa.Schema) -> None:
    schema: pa.Schema | None = None
    writer: Any = None
    try:
        for table in tables:
            if schema is None:
                schema = table.schema
            elif table.schema != schema:
                table = table.cast(schema)
            writer = writer or _open(sink, fmt, table.schema)
            _put(writer, fmt, sink, table)
        if writer is None:
            writer = _open(sink, fmt, empty)
            _put(writer, fmt, sink, empty.empty_table())
    finally:
        if writer is not None and fmt != "jsonl":
            writer.close()


def _open(sink: Any, fmt: str, schema: pa.Schema) -> Any:
    if fmt == "parquet":
        return pq.ParquetWriter(sink, schema)
    if fmt == "csv":
        return pacsv.CSVWriter(sink, _flatten_lists(schema.empty_table()).schema)
    return True


def _put(writer: Any, fmt: str, sink: Any, table: pa.Table) -> None:
    if fmt == "parquet":
        writer.write_table(table)
    elif fmt == "csv":
        writer.write_table(_flatten_lists(table))
    else:
        opts = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
        sink.write(b"".join(orjson.dumps(row, option=opts) for row in table.to_pylist()))
