"""Per-row outlier scores: the Mahalanobis distance of a row's numeric inputs from the reference.

Each numeric input feature is scaled by the reference's mean and standard deviation (``z``); the score is
``sqrt(z . P . z)`` with ``P`` the (pseudo-)inverse of the reference's correlation matrix, so a score is in
"standard deviations" whatever the units, and correlated features are not counted twice. A row whose score is
above the threshold (the reference rows' 99.9th percentile, or the model config's ``drift.outlier_threshold``)
is an outlier. Rows with a missing (NaN) value get no score (``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlport.observability.drift.features import values
from mlport.observability.drift.profile import Profile

__all__ = ["OutlierScorer"]

Array = np.ndarray[Any, Any]


class OutlierScorer:
    """Scores rows of a model's inputs against one profile (vectorised: one matrix product per batch)."""

    def __init__(self, profile: Profile, threshold: float | None = None) -> None:
        ref = profile.outliers
        if ref is None:
            raise ValueError("the profile has no outlier reference (no numeric input)")
        by_name = {f.name: f.key for f in profile.features if f.role == "input"}
        self.columns = [by_name[n] for n in ref.features]
        self.mean = np.asarray(ref.mean, dtype=np.float64)
        self.scale = np.asarray(ref.scale, dtype=np.float64)
        self.precision = np.asarray(ref.precision, dtype=np.float64)
        self.threshold = float(threshold if threshold is not None else ref.threshold)

    def scores(self, inputs: Mapping[str, Array]) -> Array | None:
        """One score per row (NaN where a value is missing); ``None`` when the inputs lack a feature."""
        cols = [values(inputs, c) for c in self.columns]
        if any(c is None for c in cols):
            return None
        z = (np.column_stack(cols).astype(np.float64) - self.mean) / self.scale  # type: ignore[arg-type]
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, self.precision, z), 0.0))  # type: ignore[no-any-return]
