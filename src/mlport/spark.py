"""Score Spark DataFrames with any model mlport serves: ``mlport.spark.predict_udf(spark, model)``."""

from mlport.batch.spark import ERROR_COLUMN, SparkScorer, predict_udf

__all__ = ["ERROR_COLUMN", "SparkScorer", "predict_udf"]
