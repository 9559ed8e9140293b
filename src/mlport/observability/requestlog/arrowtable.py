"""A batch of records as one Arrow table (a Parquet log file's rows), built column by column.

The records of one layout (see :mod:`.batches`) give each column with a few numpy/pyarrow calls: the bytes of a
tensor slot stacked into one buffer, the names, datatypes and shapes repeated. Records with BYTES tensors are
built tensor by tensor. Imported only where Parquet is written (pyarrow is an optional dependency).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mlport.observability.requestlog.batches import Group, epoch_micros, given_ids, groups, new_ids, raw_rows
from mlport.observability.requestlog.records import Captured, datatype_of, element_bytes, lineage, raw_bytes

__all__ = ["parquet_schema", "parquet_table", "parquet_writer"]

#: Most bytes of tensor data in one column of one group (Arrow's binary offsets are 32-bit).
MAX_COLUMN_BYTES = 2**31 - 1


@functools.cache
def _tensor_type() -> pa.DataType:
    return pa.struct([("name", pa.string()), ("datatype", pa.string()), ("shape", pa.list_(pa.int64())),
                      ("data", pa.binary()), ("elements", pa.list_(pa.binary()))])


@functools.cache
def parquet_schema() -> pa.Schema:
    tensor = _tensor_type()
    return pa.schema([
        ("id", pa.string()), ("time", pa.timestamp("us", tz="UTC")), ("model", pa.string()),
        ("version", pa.string()), ("protocol", pa.string()), ("status", pa.string()), ("latency_ms", pa.float64()),
        ("routed_to", pa.list_(pa.string())), ("answered_by", pa.list_(pa.string())),
        ("inputs", pa.list_(tensor)), ("outputs", pa.list_(tensor)),
    ])


#: Columns of few distinct values, dictionary-encoded (the others hold ids, times and tensor bytes: a dictionary
#: costs time and saves nothing there).
DICTIONARY_COLUMNS = ["model", "version", "protocol", "status", "routed_to.list.element", "answered_by.list.element",
                      *[f"{c}.list.element.{f}" for c in ("inputs", "outputs") for f in ("name", "datatype")]]
#: Columns with min/max statistics in each row group (what a query filters log files on).
STATISTICS_COLUMNS = ["time", "model", "version", "protocol", "status", "latency_ms"]


def parquet_writer(path: str) -> Any:
    """A zstd-compressed Parquet writer of :func:`parquet_schema` at ``path``."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, parquet_schema(), compression="zstd", use_dictionary=DICTIONARY_COLUMNS,
                            write_statistics=STATISTICS_COLUMNS)


def parquet_table(batch: Sequence[Captured]) -> pa.Table:
    """A batch of captured requests as one Arrow table of :func:`parquet_schema`, in batch order."""
    found = groups(batch)
    tables = [_group_table(g) for g in found]
    if len(tables) == 1:
        return tables[0]
    order = np.empty(len(batch), np.int64)
    order[np.concatenate([g.index for g in found])] = np.arange(len(batch))
    return pa.concat_tables(tables).take(order)


def _group_table(group: Group) -> pa.Table:
    records, first = group.records, group.first
    stacked = group.numeric
    columns = [
        _ids(records),
        pa.array(epoch_micros(records).astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
        *[pa.repeat(pa.scalar(v, pa.string()), len(records)) for v in (first.model, first.version, first.protocol,
                                                                         first.status)],
        pa.array([round(c.seconds * 1000.0, 3) for c in records], pa.float64()),
        _lineage(records, "routed_to"),
        _lineage(records, "answered_by"),
        _slots(records, first.inputs, False) if stacked else _tensors(records, False),
        _slots(records, first.outputs, True) if stacked else _tensors(records, True),
    ]
    return pa.Table.from_arrays(columns, schema=parquet_schema())


def _ids(records: list[Captured]) -> pa.Array:
    given = given_ids(records)
    if all(given):
        return pa.array(given, pa.string())
    made = new_ids(len(records)).view("S32").ravel().tolist()
    return pa.array([r or m for r, m in zip(given, made, strict=True)], pa.string())


def _lineage(records: list[Captured], key: str) -> pa.Array:
    if not any(c.parameters for c in records):
        return pa.nulls(len(records), pa.list_(pa.string()))
    return pa.array([lineage(c, key) for c in records], pa.list_(pa.string()))


def _offsets(sizes: np.ndarray[Any, Any]) -> pa.Array:
    out = np.zeros(len(sizes) + 1, np.int32)
    np.cumsum(sizes, out=out[1:])
    return pa.array(out, pa.int32())


def _slots(records: list[Captured], first: Mapping[str, np.ndarray[Any, Any]] | None, outputs: bool) -> pa.Array:
    """The ``inputs`` (or ``outputs``) column of records of one numeric layout: each tensor field as one array."""
    n = len(records)
    if first is None:
        return pa.nulls(n, pa.list_(_tensor_type()))
    names = list(first)
    rows = [raw_rows([(c.outputs if outputs else c.inputs)[name] for c in records])  # type: ignore[index]
            for name in names]
    data = np.concatenate(rows, axis=1) if rows else np.empty((n, 0), np.uint8)
    if data.nbytes > MAX_COLUMN_BYTES:
        return _tensors(records, outputs)
    k = len(names)
    shapes = [first[name].shape for name in names]
    dims = np.array([d for shape in shapes for d in shape] * n, np.int64)
    struct = pa.StructArray.from_arrays([
        pa.array(names * n, pa.string()),
        pa.array([datatype_of(first[name]) for name in names] * n, pa.string()),
        pa.ListArray.from_arrays(_offsets(np.tile([len(s) for s in shapes], n)), pa.array(dims, pa.int64())),
        pa.Array.from_buffers(pa.binary(), n * k, [None, _offsets(np.tile([r.shape[1] for r in rows], n)).buffers()[1],
                                                   pa.py_buffer(np.ascontiguousarray(data))]),
        pa.ListArray.from_arrays(pa.array(np.zeros(n * k + 1, np.int32)), pa.array([], pa.binary()),
                                 mask=pa.array(np.ones(n * k, np.bool_))),
    ], fields=list(_tensor_type()))
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * k), struct)


def _tensors(records: list[Captured], outputs: bool) -> pa.Array:
    """The ``inputs`` (or ``outputs``) column built tensor by tensor (BYTES tensors, or more bytes than a column
    of one buffer holds)."""
    offsets, missing = [0], []
    names: list[str] = []
    datatypes: list[str] = []
    shape_offsets, dims = [0], []
    data: list[bytes | None] = []
    element_offsets, elements, no_elements = [0], [], []
    for c in records:
        arrays = c.outputs if outputs else c.inputs
        missing.append(arrays is None)
        for name, arr in (arrays or {}).items():
            datatype = datatype_of(arr)
            names.append(name)
            datatypes.append(datatype)
            dims.extend(arr.shape)
            shape_offsets.append(len(dims))
            bytes_tensor = datatype == "BYTES"
            data.append(None if bytes_tensor else raw_bytes(arr))
            if bytes_tensor:
                elements.extend(element_bytes(arr))
            no_elements.append(not bytes_tensor)
            element_offsets.append(len(elements))
        offsets.append(len(names))
    struct = pa.StructArray.from_arrays([
        pa.array(names, pa.string()), pa.array(datatypes, pa.string()),
        pa.ListArray.from_arrays(pa.array(shape_offsets, pa.int32()), pa.array(dims, pa.int64())),
        pa.array(data, pa.binary()),
        pa.ListArray.from_arrays(pa.array(element_offsets, pa.int32()), pa.array(elements, pa.binary()),
                                 mask=pa.array(no_elements, pa.bool_())),
    ], fields=list(_tensor_type()))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct, mask=pa.array(missing, pa.bool_()))
