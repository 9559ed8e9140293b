"""``mlport score --engine spark``: the same job on a Spark cluster (or ``local[N]``), through ``spark-submit`` or
a master given with ``--spark-master``. Spark writes OUTPUT as a folder of part files (its own commit protocol:
a temporary folder renamed when the job succeeds)."""

from __future__ import annotations

import time
from typing import Any

from mlport.batch.run import ScoreJob, Summary
from mlport.batch.spark import ERROR_COLUMN, SparkScorer
from mlport.batch.storage import locate
from mlport.batch.writers import output_format
from mlport.errors import InvalidInput

__all__ = ["score_on_spark"]


def _read(spark: Any, job: ScoreJob) -> Any:
    kind = job.input_format or _input_kind(job.input)
    if kind == "csv":
        # every column as text, as the local engine reads CSV: numbers are parsed per input
        return spark.read.option("header", True).option("mode", "PERMISSIVE").csv(job.input)
    if kind == "parquet":
        return spark.read.parquet(job.input)
    if kind == "jsonl":
        return spark.read.json(job.input)
    raise InvalidInput("the Spark engine reads CSV, Parquet and JSON Lines; score image folders with the local engine")


def _input_kind(uri: str) -> str:
    name = uri.lower().rstrip("/")
    for suffix, kind in ((".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"), (".jsonl", "jsonl"),
                         (".json", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(suffix):
            return kind
    raise InvalidInput(f"{uri}: cannot tell the format from the name; use --input-format")


def _flat_for_csv(df: Any, scorer: SparkScorer) -> Any:
    """List columns as one column per element (``name_0``...), as the local engine writes CSV."""
    from pyspark.sql import functions as F

    cols: list[Any] = []
    for name in df.columns:
        spec = scorer.model.signature.output(name)
        if spec is None or len(spec.shape) < 2:
            cols.append(F.col(name))
            continue
        inner = spec.shape[1:]
        if any(d < 0 for d in inner):
            raise InvalidInput(f"output '{name}' has a free dimension {list(spec.shape)}: write Parquet or JSON Lines")
        width = 1
        for d in inner:
            width *= d
        cols.extend(F.col(name)[i].alias(f"{name}_{i}") for i in range(width))
    return df.select(*cols)


def _session(master: str | None) -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("mlport score")
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()


def score_on_spark(job: ScoreJob, master: str | None = None) -> Summary:
    started = time.monotonic()
    fmt = output_format(locate(job.output), job.output_format)
    spark = _session(master)
    scorer = SparkScorer(spark, job.model, keep=job.keep, maps=job.maps, errors="column", name=job.name,
                         trusted=job.trusted)
    try:
        scored = scorer(_read(spark, job)).persist()
        good = scored.filter(scored[ERROR_COLUMN].isNull()).drop(ERROR_COLUMN)
        bad = scored.filter(scored[ERROR_COLUMN].isNotNull()).select(*job.keep, scored[ERROR_COLUMN].alias("reason"))
        writer = (_flat_for_csv(good, scorer) if fmt == "csv" else good).write.mode("overwrite")
        if fmt == "parquet":
            writer.parquet(job.output)
        elif fmt == "csv":
            writer.option("header", True).csv(job.output)
        else:
            writer.json(job.output)
        n_good, n_bad = good.count(), bad.count()
        errors = None
        if n_bad:
            errors = job.errors or job.output + ".errors"
            bad.write.mode("overwrite").option("header", True).csv(errors)
        scored.unpersist()
    finally:
        scorer.close()
    return Summary(n_good + n_bad, n_good, n_bad, time.monotonic() - started, job.output, errors)
