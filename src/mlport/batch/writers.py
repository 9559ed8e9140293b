"""Writers: Parquet, CSV and JSON Lines, through a temporary name renamed once the file is complete.

A multi-valued output (a vector per row) is a list column in Parquet and JSON Lines, and one column per
element (``name_0``, ``name_1``...) in CSV.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlport.batch.arrays import from_numpy, to_numpy
from mlport.batch.storage import Location, locate, upload
from mlport.errors import InvalidInput

__all__ = ["FORMATS", "SEGMENT_EXT", "output_columns", "output_format", "write_segment", "write_segments",
           "write_tables"]

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
        flat = from_numpy(np.ascontiguousarray(arr).reshape(-1))
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
            flat = to_numpy(pc.list_flatten(col)).reshape(-1, width) if len(col) else np.zeros((0, width))
            for i in range(width):
                arrays.append(from_numpy(flat[:, i]))
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


def _through_temp(loc: Location, write: Callable[[Any], None]) -> None:
    """Call ``write(sink)`` on a temporary name, renamed to ``loc`` when complete (in an object store: a local
    temporary file, uploaded when complete)."""
    if loc.remote:
        with tempfile.TemporaryDirectory(prefix="mlport-score-") as folder:
            local = locate(os.path.join(folder, loc.name))
            _through_temp(local, write)
            upload(local.path, loc)
        return
    tmp = loc.sibling(f".tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(os.path.dirname(loc.path) or "/", exist_ok=True)
    try:
        with tmp.fs.open_output_stream(tmp.path, compression=None) as sink:
            write(sink)
        loc.fs.move(tmp.path, loc.path)
    except BaseException:
        if tmp.exists():
            tmp.fs.delete_file(tmp.path)
        raise


def write_tables(loc: Location, fmt: str, tables: Iterable[pa.Table], empty: pa.Schema) -> None:
    """Write ``tables`` (one schema) to ``loc`` through a temporary name, renamed when complete."""
    _through_temp(loc, lambda sink: _write(sink, fmt, tables, empty))


#: The file suffix of a chunk's scored rows kept for each output format (Arrow for Parquet: joined once at the
#: end into row groups; CSV and JSON Lines: the output's own bytes, joined by copying).
SEGMENT_EXT = {"parquet": "arrow", "csv": "csv", "jsonl": "jsonl"}


def write_segment(path: Path, fmt: str, table: pa.Table) -> dict[str, Any]:
    """Write one chunk's scored rows to ``path``; the details the join needs (``header``: CSV header bytes)."""
    if fmt == "parquet":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return {}
    if fmt == "csv":
        flat = _flatten_lists(table)
        header = len(_csv_bytes(flat.schema.empty_table()))
        path.write_bytes(_csv_bytes(flat) if table.num_rows else b"")
        return {"header": header if table.num_rows else 0}
    path.write_bytes(_jsonl_bytes(table))
    return {}


def _csv_bytes(table: pa.Table) -> bytes:
    out = pa.BufferOutputStream()
    pacsv.write_csv(table, out)
    return bytes(out.getvalue())


def _jsonl_bytes(table: pa.Table) -> bytes:
    opts = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
    return b"".join(orjson.dumps(row, option=opts) for row in table.to_pylist())


def write_segments(loc: Location, fmt: str, segments: Iterable[tuple[Path, dict[str, Any]]]) -> None:
    """Join the chunks' segment files (with their records, in output order) into the output at ``loc``."""
    if fmt == "parquet":
        tables = _row_groups(_read_arrow(path) for path, rec in segments if rec["scored"])
        write_tables(loc, fmt, tables, pa.schema([]))
    else:
        _through_temp(loc, lambda sink: _copy(sink, segments))


#: Rows per Parquet row group when chunks are joined (whatever the batch size).
ROW_GROUP_ROWS = 131_072


def _row_groups(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """``tables`` joined into tables of about ``ROW_GROUP_ROWS`` rows (each written as one row group)."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        if pending and table.schema != pending[0].schema:
            table = table.cast(pending[0].schema)
        pending.append(table)
        rows += table.num_rows
        if rows >= ROW_GROUP_ROWS:
            yield pa.concat_tables(pending)
            pending, rows = [], 0
    if pending:
        yield pa.concat_tables(pending)


def _read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as src:
        return pa.ipc.open_file(src).read_all()


def _copy(sink: Any, segments: Iterable[tuple[Path, dict[str, Any]]]) -> None:
    """The segments' bytes one after the other (the CSV header once, from the first segment with rows)."""
    header_done = False
    for path, rec in segments:
        if not rec["scored"]:
            continue
        data = path.read_bytes()
        skip = rec.get("header", 0)
        sink.write(data[skip:] if header_done else data)
        header_done = True


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
        sink.write(_jsonl_bytes(table))
