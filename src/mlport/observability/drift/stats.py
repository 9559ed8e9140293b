"""Drift figures of one window of values against a feature's reference profile: pure functions, scipy's tests.

- PSI (population stability index), numeric and categorical: ``sum((a - e) * ln(a / e))`` over the bins of the
  reference histogram (numeric) or its categories plus :data:`~.profile.OTHER` (categorical), where ``a`` and
  ``e`` are the window's and the reference's shares, each at least :data:`EPSILON` (then normalised).
- Kolmogorov-Smirnov, numeric: ``scipy.stats.ks_2samp(reference sample, window)``, statistic and p-value.
- Chi-square, categorical: ``scipy.stats.chisquare`` of the window's counts per category against the
  reference shares (floored at :data:`EPSILON`, normalised) times the window's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlport.observability.drift.features import categories
from mlport.observability.drift.profile import OTHER, FeatureProfile

__all__ = ["EPSILON", "Figure", "category_counts", "chi_square", "figures", "floored", "ks", "numeric_shares", "psi",
           "status_of", "worst"]

Array = np.ndarray[Any, Any]

#: The smallest share a bin or category counts with (an empty bin would make PSI infinite).
EPSILON = 1e-4
STATUSES = ("ok", "warning", "drift")


@dataclass(frozen=True, slots=True)
class Figure:
    """One drift figure: ``method`` is ``psi``, ``ks`` or ``chi2``; ``pvalue`` for the tests."""

    method: str
    value: float
    pvalue: float | None = None


def floored(shares: Array) -> Array:
    """Shares with none below :data:`EPSILON`, summing to 1."""
    out = np.maximum(np.asarray(shares, dtype=np.float64), EPSILON)
    return out / out.sum()  # type: ignore[no-any-return]


def psi(actual: Array, expected: Array) -> float:
    """The population stability index of two share vectors over the same bins."""
    a, e = floored(actual), floored(expected)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_shares(window: Array, feature: FeatureProfile) -> Array:
    """The window's shares of finite values per bin of the feature's reference histogram."""
    assert feature.histogram is not None
    edges = np.asarray(feature.histogram.edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, window, side="left"), minlength=len(edges) + 1)
    return counts / max(len(window), 1)  # type: ignore[no-any-return]


def category_counts(window: Array, feature: FeatureProfile) -> tuple[Array, Array]:
    """``(window counts, reference shares)`` over the reference's categories plus :data:`OTHER` (where every
    category the reference does not know is counted)."""
    freq = feature.frequencies or {}
    names = [k for k in freq if k != OTHER]
    index = {k: i for i, k in enumerate(names)}
    keys = categories(window)
    found, counts = np.unique(keys[keys != ""].astype(str), return_counts=True)
    observed = np.zeros(len(names) + 1, dtype=np.float64)
    for key, count in zip(found.tolist(), counts.tolist(), strict=True):
        observed[index.get(key, len(names))] += count
    expected = np.asarray([freq[k] for k in names] + [freq.get(OTHER, 0.0)], dtype=np.float64)
    return observed, expected


def ks(window: Array, feature: FeatureProfile) -> Figure:
    from scipy import stats

    result = stats.ks_2samp(np.asarray(feature.sample or (), dtype=np.float64), window)
    return Figure("ks", float(result.statistic), float(result.pvalue))


def chi_square(observed: Array, expected: Array) -> Figure:
    from scipy import stats

    result = stats.chisquare(observed, floored(expected) * observed.sum())
    return Figure("chi2", float(result.statistic), float(result.pvalue))


def figures(window: Array, feature: FeatureProfile) -> list[Figure]:
    """Every figure of ``feature`` over ``window`` (values of the feature, missing ones included)."""
    if feature.kind == "categorical":
        observed, expected = category_counts(window, feature)
        if observed.sum() == 0:
            return []
        return [Figure("psi", psi(observed / observed.sum(), expected)), chi_square(observed, expected)]
    x = np.asarray(window, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0 or feature.histogram is None or not feature.sample:
        return []
    return [Figure("psi", psi(numeric_shares(x, feature), np.asarray(feature.histogram.fractions))), ks(x, feature)]


def status_of(fig: Figure, psi_warning: float, psi_drift: float, p_warning: float, p_drift: float) -> str:
    """``ok``, ``warning`` or ``drift`` for one figure."""
    if fig.pvalue is not None:
        return "drift" if fig.pvalue <= p_drift else "warning" if fig.pvalue <= p_warning else "ok"
    return "drift" if fig.value >= psi_drift else "warning" if fig.value >= psi_warning else "ok"


def worst(statuses: list[str]) -> str:
    return max(statuses, key=STATUSES.index, default="ok")
