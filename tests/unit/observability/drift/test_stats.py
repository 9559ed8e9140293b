"""Drift figures against direct computations: scipy's tests on the same values, PSI by its formula."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from mlport.observability.drift import build_profile
from mlport.observability.drift.features import Column
from mlport.observability.drift.profile import OTHER, FeatureProfile
from mlport.observability.drift.stats import EPSILON, figures, status_of


def _numeric(rng: np.random.Generator) -> FeatureProfile:
    ref = rng.normal(size=(4000, 1))
    return build_profile([Column("a", "x", None, "input")], {"input": {"x": ref}}, 4000).features[0]


def _psi(actual: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(actual, EPSILON)
    e = np.maximum(expected, EPSILON)
    a, e = a / a.sum(), e / e.sum()
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.0])
def test_numeric_figures_equal_scipy_and_the_psi_formula(shift: float) -> None:
    rng = np.random.default_rng(3)
    feature = _numeric(rng)
    window = rng.normal(loc=shift, size=700)
    psi, ks = figures(window, feature)
    assert feature.sample is not None and feature.histogram is not None
    want = sps.ks_2samp(np.asarray(feature.sample), window)
    assert ks.method == "ks"
    assert ks.value == pytest.approx(want.statistic, abs=1e-15)
    assert ks.pvalue == pytest.approx(want.pvalue, rel=1e-12, abs=1e-300)
    # the window's shares per bin of the reference histogram: bin i holds edges[i-1] < x <= edges[i]
    edges = np.asarray(feature.histogram.edges)
    counts = np.array([np.sum(window <= edges[0])]
                      + [np.sum((window > lo) & (window <= hi)) for lo, hi in itertools.pairwise(edges)]
                      + [np.sum(window > edges[-1])])
    assert psi.value == pytest.approx(_psi(counts / len(window), np.asarray(feature.histogram.fractions)), rel=1e-12)
    # the scipy form of the same figure: PSI is the symmetrised Kullback-Leibler divergence
    a, e = np.maximum(counts / len(window), EPSILON), np.maximum(np.asarray(feature.histogram.fractions), EPSILON)
    assert psi.value == pytest.approx(float(sps.entropy(a, e) + sps.entropy(e, a)), rel=1e-9)
    if shift >= 2.0:
        assert status_of(psi, 0.1, 0.25, 0.01, 0.001) == "drift"
        assert status_of(ks, 0.1, 0.25, 0.01, 0.001) == "drift"
    if shift == 0.0:
        assert status_of(psi, 0.1, 0.25, 0.01, 0.001) == "ok"


def test_categorical_figures_equal_scipy_chisquare() -> None:
    rng = np.random.default_rng(4)
    ref = rng.choice(np.array([b"red", b"green", b"blue"], dtype=object), size=3000, p=[0.5, 0.3, 0.2])
    feature = build_profile([Column("colour", "colour", None, "input")], {"input": {"colour": ref}}, 3000).features[0]
    assert feature.kind == "categorical" and feature.frequencies is not None
    window = rng.choice(np.array(["red", "green", "blue", "purple"], dtype=object), size=500,
                        p=[0.2, 0.3, 0.3, 0.2])
    psi, chi2 = figures(window, feature)
    names = [k for k in feature.frequencies if k != OTHER]
    observed = np.array([np.sum(window == k) for k in names] + [np.sum(~np.isin(window, names))], dtype=float)
    shares = np.array([feature.frequencies[k] for k in names] + [0.0])
    expected = np.maximum(shares, EPSILON)
    expected = expected / expected.sum() * observed.sum()
    want = sps.chisquare(observed, expected)
    assert chi2.value == pytest.approx(want.statistic, rel=1e-12)
    assert chi2.pvalue == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    assert psi.value == pytest.approx(_psi(observed / observed.sum(), shares), rel=1e-12)
    assert status_of(chi2, 0.1, 0.25, 0.01, 0.001) == "drift"


def test_integer_codes_are_categorical_and_many_distinct_integers_numeric() -> None:
    rng = np.random.default_rng(5)
    cols = [Column("code", "code", None, "input"), Column("count", "count", None, "input")]
    arrays = {"input": {"code": rng.integers(0, 4, 500), "count": rng.integers(0, 10_000, 500)}}
    code, count = build_profile(cols, arrays, 500).features
    assert code.kind == "categorical" and set(code.frequencies or {}) == {"0", "1", "2", "3"}
    assert count.kind == "numeric"
