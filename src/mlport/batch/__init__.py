"""Batch scoring: apply a model to whole files (CSV, Parquet, JSON Lines, image folders) in mini-batches, with the
same loading, signature mapping and preprocessing as ``mlport serve``."""

from mlport.batch.model import ScoringModel, load_model
from mlport.batch.run import ScoreJob, Summary, score

__all__ = ["ScoreJob", "ScoringModel", "Summary", "load_model", "score"]
