"""The Spark engine on a real local Spark (``local[2]``): row for row the local engine's answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlport.batch import ScoreJob, score
from mlport.errors import MlportError
from tests.scoreutil import IRIS_FIELDS, iris_model, iris_table, probabilities, read_output, write_input

# pyspark warns about pandas 3 and its own deprecations on import and on each job
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("mlport-tests").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    yield session
    session.stop()


def _csv_with_bad_rows(path: Path, n: int) -> Path:
    table = iris_table(n, seed=7)
    lines = ["id," + ",".join(IRIS_FIELDS)]
    lines += [",".join(str(r[c]) for c in ["id", *IRIS_FIELDS]) for r in table.to_pylist()]
    lines[10] = "9,abc,1,2,3"
    lines[40] = "39,,1,2,3"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_predict_udf_equals_the_local_engine(spark: Any, tmp_path: Path) -> None:
    from mlport.spark import ERROR_COLUMN, predict_udf

    model = iris_model(tmp_path / "models")
    inp = _csv_with_bad_rows(tmp_path / "in.csv", 300)
    score(ScoreJob(model, str(inp), str(tmp_path / "local.parquet"), batch_size=64, keep=["id"]))
    local = read_output(tmp_path / "local.parquet")
    scorer = predict_udf(spark, model, keep=["id"], errors="column")
    df = spark.read.option("header", True).csv(str(inp)).repartition(3)
    rows = sorted(scorer(df).collect(), key=lambda r: int(r["id"]))
    scorer.close()
    good = [r for r in rows if r[ERROR_COLUMN] is None]
    bad = {r["id"]: r[ERROR_COLUMN] for r in rows if r[ERROR_COLUMN] is not None}
    assert bad == {"9": "column 'sepal_length': 'abc' is not a number", "39": "column 'sepal_length' is empty"}
    assert [r["id"] for r in good] == local.column("id").to_pylist()
    assert [r["label"] for r in good] == local.column("label").to_pylist()
    np.testing.assert_allclose(np.asarray([r["probabilities"] for r in good]), probabilities(local), atol=0, rtol=0)


def test_engine_spark_writes_what_the_local_engine_writes(spark: Any, tmp_path: Path) -> None:
    from mlport.batch.spark_run import score_on_spark

    model = iris_model(tmp_path / "models")
    inp = write_input(iris_table(500, seed=8), tmp_path / "in.parquet")
    score(ScoreJob(model, str(inp), str(tmp_path / "local.parquet"), keep=["id"]))
    summary = score_on_spark(ScoreJob(model, str(inp), str(tmp_path / "spark.parquet"), keep=["id"]), "local[2]")
    assert (summary.rows_read, summary.rows_scored, summary.rows_failed) == (500, 500, 0)
    on_spark = pq.read_table(tmp_path / "spark.parquet").sort_by("id")
    local = read_output(tmp_path / "local.parquet")
    assert on_spark.column("id").to_pylist() == local.column("id").to_pylist()
    assert on_spark.column("label").to_pylist() == local.column("label").to_pylist()
    np.testing.assert_array_equal(probabilities(on_spark), probabilities(local))
    summary = score_on_spark(ScoreJob(model, str(inp), str(tmp_path / "spark.csv"), keep=["id"]), "local[2]")
    csv_cols = spark.read.option("header", True).csv(str(tmp_path / "spark.csv")).columns
    assert csv_cols == ["id", "label", "probabilities_0", "probabilities_1", "probabilities_2"]


def test_spark_refuses_a_bad_mapping_on_the_driver(spark: Any, tmp_path: Path) -> None:
    from mlport.spark import predict_udf

    model = iris_model(tmp_path / "models")
    scorer = predict_udf(spark, model)
    try:
        with pytest.raises(MlportError, match="input 'input' has no column"):
            scorer(spark.createDataFrame([(1.0, 2.0)], ["a", "b"]))
    finally:
        scorer.close()
