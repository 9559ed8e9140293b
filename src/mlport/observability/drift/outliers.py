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
        unknown = [n for n in ref.features if n not in by_name]
        if unknown:
            raise ValueError(f"the outlier reference names features the profile lacks: {', '.join(unknown)}")
        columns = [by_name[n] for n in ref.features]
        #: Per tensor, the positions of its scored columns (in the reference's order, tensor by tensor).
        self.tensors: list[tuple[str, Array]] = []
        order: list[int] = []
        for tensor in dict.fromkeys(c.tensor for c in columns):
            picked = [i for i, c in enumerate(columns) if c.tensor == tensor]
            order.extend(picked)
            self.tensors.append((tensor, np.asarray([columns[i].column or 0 for i in picked], dtype=np.intp)))
        perm = np.asarray(order, dtype=np.intp)
        self.mean = np.asarray(ref.mean, dtype=np.float64)[perm]
        self.inv_scale = 1.0 / np.asarray(ref.scale, dtype=np.float64)[perm]
        self.precision = np.asarray(ref.precision, dtype=np.float64)[np.ix_(perm, perm)]
        self.threshold = float(threshold if threshold is not None else ref.threshold)

    def scores(self, inputs: Mapping[str, Array]) -> Array | None:
        """One score per row (NaN where a value is missing); ``None`` when the inputs lack a feature."""
        parts = []
        for tensor, index in self.tensors:
            found = inputs.get(tensor)
            if found is None:
                return None
            arr = np.asarray(found)
            flat = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
            if flat.shape[1] <= index[-1] or flat.dtype.kind not in "biuf":
                return None
            parts.append(flat[:, index])
        z = (parts[0] if len(parts) == 1 else np.hstack(parts)).astype(np.float64)
        z -= self.mean
        z *= self.inv_scale
        q = np.einsum("ij,ij->i", z @ self.precision, z)
        np.maximum(q, 0.0, out=q)
        scores: Array = np.sqrt(q, out=q)
        return scores
