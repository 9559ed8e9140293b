"""The Spark engine: score a DataFrame with ``mapInArrow``, with mlport's own loaders on every Python worker.

The model (its file or folder, with its config) is packed once on the driver and broadcast; each Python
worker unpacks and loads it once (the loaded scorer is kept for the worker's life, and Spark reuses its Python
workers), so every format and manifest ``mlport serve`` takes works here too, with the same column mapping
and the same answers as the local engine. pyspark is imported only here (the ``spark`` extra).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlport.batch.columns import ColumnPlan, parse_maps
from mlport.batch.model import load_model
from mlport.batch.scorer import Scorer
from mlport.core.types import DataType, Signature
from mlport.errors import InvalidInput

__all__ = ["ERROR_COLUMN", "SparkScorer", "predict_udf"]

#: The column that says why a row was not scored (null for scored rows), with ``errors="column"``.
ERROR_COLUMN = "_error"
#: Largest packed model broadcast to the workers.
MAX_MODEL_BYTES = 2 * 1024 * 1024 * 1024

_ARROW = {
    DataType.BOOL: pa.bool_(), DataType.UINT8: pa.int16(), DataType.UINT16: pa.int32(), DataType.UINT32: pa.int64(),
    DataType.UINT64: pa.int64(), DataType.INT8: pa.int8(), DataType.INT16: pa.int16(), DataType.INT32: pa.int32(),
    DataType.INT64: pa.int64(), DataType.FP16: pa.float32(), DataType.FP32: pa.float32(),
    DataType.FP64: pa.float64(), DataType.BYTES: pa.string(),
}


def _pack(path: Path) -> bytes:
    """The model and its config (``model.yaml`` inside a folder, ``<stem>.model.yaml`` beside a file) as a tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=path.name)
        if path.is_file():
            stem = path.name[: -len(path.suffix)] if path.suffix else path.name
            side = path.with_name(f"{stem}.model.yaml")
            if side.is_file():
                tar.add(side, arcname=side.name)
    data = buf.getvalue()
    if len(data) > MAX_MODEL_BYTES:
        raise InvalidInput(f"{path} is larger than {MAX_MODEL_BYTES} bytes: too large to broadcast")
    return data


def output_schema(signature: Signature, keep: Sequence[pa.Field], errors: bool) -> pa.Schema:
    """The Arrow schema of the scored rows: kept columns, then one column per output (a list when multi-valued)."""
    fields = list(keep)
    for spec in signature.outputs:
        kind = _ARROW.get(spec.datatype, pa.string())
        fields.append(pa.field(spec.name, pa.list_(kind) if len(spec.shape) > 1 else kind))
    if errors:
        fields.append(pa.field(ERROR_COLUMN, pa.string()))
    return pa.schema(fields)


@dataclass
class _Shipped:
    """What a worker needs: the packed model (a broadcast), and how to map and keep columns."""

    model: Any
    digest: str
    name: str
    columns: list[str]
    maps: list[str]
    keep: list[str]
    schema: pa.Schema
    errors: bool
    trusted: bool = False
    model_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: The scorer of each model digest in this Python worker (loaded once, for the worker's life).
_SCORERS: dict[str, Scorer] = {}


def _worker_scorer(shipped: _Shipped) -> Scorer:
    found = _SCORERS.get(shipped.digest)
    if found is None:
        folder = Path(tempfile.mkdtemp(prefix=f"mlport-spark-{shipped.digest[:12]}-"))
        with tarfile.open(fileobj=io.BytesIO(shipped.model.value), mode="r") as tar:
            tar.extractall(folder, filter="data")
        model = load_model(folder / shipped.name, name=shipped.model_name, trusted=shipped.trusted,
                           intra_op_threads=1)
        found = Scorer(model, ColumnPlan(model, shipped.columns, parse_maps(shipped.maps)), shipped.keep)
        _SCORERS[shipped.digest] = found
    return found


def _score_partition(batches: Iterator[pa.RecordBatch], shipped: _Shipped) -> Iterator[pa.RecordBatch]:
    scorer = _worker_scorer(shipped)
    outputs = [f for f in shipped.schema if f.name not in shipped.keep and f.name != ERROR_COLUMN]
    for batch in batches:
        if batch.num_rows == 0:
            continue
        result = scorer.score(batch, 0)
        table = result.table
        for f in outputs:
            if f.name not in table.column_names:
                table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
        if shipped.errors:
            table = table.append_column(ERROR_COLUMN, pa.nulls(table.num_rows, pa.string()))
            if result.errors:
                rows = pa.array([r for r, _ in result.errors])
                bad = {c: batch.column(c).take(rows) for c in shipped.keep}
                cols = [bad[f.name] if f.name in bad else pa.nulls(len(rows), f.type) for f in shipped.schema]
                cols[-1] = pa.array([m for _, m in result.errors], pa.string())
                table = pa.concat_tables([table.select(shipped.schema.names).cast(shipped.schema),
                                          pa.table(cols, schema=shipped.schema)])
        yield from table.select(shipped.schema.names).cast(shipped.schema).to_batches()


class SparkScorer:
    """Scores DataFrames with one model: ``scorer(df)`` is a DataFrame of the kept columns and the outputs."""

    def __init__(self, spark: Any, model: Path, *, keep: Sequence[str] = (), maps: Sequence[str] = (),
                 errors: str = "drop", name: str | None = None, trusted: bool = False) -> None:
        if errors not in ("drop", "column"):
            raise InvalidInput(f"errors must be 'drop' or 'column', got {errors!r}")
        self.spark = spark
        self.path = Path(model).resolve()
        self.keep = list(keep)
        self.maps = list(maps)
        self.errors = errors == "column"
        self.name = name
        self.trusted = trusted
        self.model = load_model(self.path, name=name, trusted=trusted)  # checked on the driver before any job
        data = _pack(self.path)
        self.digest = hashlib.sha256(data).hexdigest()
        self._broadcast = spark.sparkContext.broadcast(data)

    def __call__(self, df: Any) -> Any:
        from pyspark.sql.pandas.types import from_arrow_schema

        columns = list(df.columns)
        missing = [c for c in self.keep if c not in columns]
        if missing:
            raise InvalidInput(f"keep names column {', '.join(map(repr, missing))}, which the DataFrame does not have")
        ColumnPlan(self.model, columns, parse_maps(self.maps))  # refuse a bad mapping here, not on the workers
        arrow_in = _arrow_fields(df, self.keep)
        schema = output_schema(self.model.signature, arrow_in, self.errors)
        shipped = _Shipped(self._broadcast, self.digest, self.path.name, columns, self.maps, self.keep, schema,
                           self.errors, self.trusted, self.name)

        def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return _score_partition(batches, shipped)

        return df.mapInArrow(score_partition, from_arrow_schema(schema))

    def close(self) -> None:
        self.model.close()
        self._broadcast.unpersist()


def _arrow_fields(df: Any, names: list[str]) -> list[pa.Field]:
    from pyspark.sql.pandas.types import to_arrow_type

    by_name = {f.name: f for f in df.schema.fields}
    return [pa.field(n, to_arrow_type(by_name[n].dataType)) for n in names]


def predict_udf(spark: Any, model: str | os.PathLike[str], **options: Any) -> SparkScorer:
    """A scorer for ``model`` usable in any PySpark job (like MLflow's ``spark_udf``)::

        scorer = predict_udf(spark, "models/iris", keep=["id"])
        scored = scorer(spark.read.parquet("s3://bucket/rows/"))

    ``options``: ``keep`` (columns passed through), ``maps`` (``"column=input[:index]"``), ``errors`` ("drop"
    leaves bad rows out; "column" keeps them with null outputs and their reason in ``_error``), ``name``,
    ``trusted``.
    """
    return SparkScorer(spark, Path(model), **options)
