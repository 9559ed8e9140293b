"""Spark scoring: ``mlport.spark.predict_udf`` against MLflow's ``mlflow.pyfunc.spark_udf`` on the same model.

    python bench/score_spark.py                 # 1,000,000 iris rows, local[2]
    python bench/score_spark.py --rows 200000 --master local[2]

Both score the same Parquet file on the same local Spark session and write Parquet: mlport with the iris ONNX
model served as a model folder (fields and labels in model.yaml), MLflow with the same ONNX file saved by
``mlflow.onnx.save_model`` with its label output alone (its pyfunc flattens each output into one column, so
the probabilities cannot come back through it): mlport does more work per row (label names and
probabilities).  MLflow is the bench's own tool here (``mlflow-skinny`` from the test extra), not a
dependency of mlport.  Each engine runs twice and the faster run counts (the first warms Spark's JVM and
Python workers).  Results go to stdout and to ``bench/results/<date>-score-spark.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import iris_onnx

FIELDS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _data(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).uniform(0, 8, (rows, 4)).round(2)
    pq.write_table(pa.table({"id": np.arange(rows), **{f: x[:, i] for i, f in enumerate(FIELDS)}}), path,
                   row_group_size=100_000)


def _mlport(spark: Any, model: Path, src: Path, out: Path) -> None:
    from mlport.spark import predict_udf

    scorer = predict_udf(spark, str(model), keep=["id"])
    try:
        scorer(spark.read.parquet(str(src))).write.mode("overwrite").parquet(str(out))
    finally:
        scorer.close()


def _mlflow(spark: Any, model: Path, src: Path, out: Path) -> None:
    import mlflow.pyfunc
    from pyspark.sql.functions import col

    udf = mlflow.pyfunc.spark_udf(spark, str(model), result_type="double", env_manager="local")
    df = spark.read.parquet(str(src))
    df.select("id", udf(*[col(f).cast("float") for f in FIELDS]).alias("label")) \
        .write.mode("overwrite").parquet(str(out))


def _best(run: Callable[[], None], times: int = 2) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _mlflow_model(onnx_path: Path, folder: Path) -> Path:
    import mlflow.onnx
    import onnx

    model = onnx.load(str(onnx_path))
    # MLflow's ONNX pyfunc flattens every output into one column of a DataFrame, so a model with a label [N] and
    # probabilities [N, 3] cannot answer through it: keep the label alone (the DataFrame's values feed "input")
    keep = [o for o in model.graph.output if o.name == "label"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    mlflow.onnx.save_model(model, str(folder), save_as_external_data=False)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--master", default="local[2]")
    args = p.parse_args(argv)
    from pyspark.sql import SparkSession

    with tempfile.TemporaryDirectory(prefix="mlport-bench-spark-") as tmp:
        folder = Path(tmp)
        onnx_path = iris_onnx(folder / "iris" / "1" / "model.onnx")
        model = onnx_path.parent.parent
        (model / "model.yaml").write_text("fields:\n  input: {sepal_length: 0, sepal_width: 1, petal_length: 2, "
                                          "petal_width: 3}\nlabels:\n  label: [setosa, versicolor, virginica]\n")
        flavor = _mlflow_model(onnx_path, folder / "mlflow-iris")
        src = folder / "rows.parquet"
        _data(src, args.rows)
        spark = (SparkSession.builder.master(args.master).appName("mlport-bench")
                 .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                 .config("spark.ui.enabled", "false").getOrCreate())
        try:
            mine = _best(lambda: _mlport(spark, model, src, folder / "out-mlport"))
            theirs = _best(lambda: _mlflow(spark, flavor, src, folder / "out-mlflow"))
            counts = [spark.read.parquet(str(folder / f"out-{n}")).count() for n in ("mlport", "mlflow")]
        finally:
            spark.stop()
    lines = [f"# Spark scoring, iris ONNX, {args.rows:,} rows, {args.master}",
             f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f}", "",
             "| engine | seconds (best of 2) | rows/s | x MLflow | rows written |", "|---|---|---|---|---|",
             f"| mlport.spark.predict_udf (mapInArrow; labels, probabilities, id) | {mine:.2f} | "
             f"{args.rows / mine:,.0f} | {theirs / mine:.2f} | {counts[0]:,} |",
             f"| mlflow.pyfunc.spark_udf (pandas UDF; label index, id) | {theirs:.2f} | {args.rows / theirs:,.0f} | "
             f"1.00 | {counts[1]:,} |", ""]
    text = "\n".join(lines)
    print(text)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}-score-spark.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
