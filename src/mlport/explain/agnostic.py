"""Model-agnostic SHAP values: ``shap.KernelExplainer`` over the served model, for every format.

The model is run through :class:`~mlport.explain.result.ModelFunction` (its own evaluator, inputs checked as a
prediction's are), on background rows that stand for "a feature unknown": rows sampled from the version's reference
profile (``profile.json``, each feature from its own sample) or rows the request gives (parameter ``background``).
``base_value`` is the model's mean score over the background; ``base_value`` plus a row's values is the model's
score for the row (Kernel SHAP's additivity constraint), which is ``prediction``.

Cost: ``nsamples`` coalitions per row, each run on every background row, so ``rows * nsamples * background`` model
evaluations (plus the background once). ``nsamples`` defaults to shap's own (``2 * features + 2048``), lowered to
what ``max_evaluations`` allows, and to every coalition (``2 ** features - 2``, then the values are exact) when
there are fewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlport.errors import InvalidInput, PayloadTooLarge, Unprocessable
from mlport.explain.layout import TabularLayout, Target, scores
from mlport.explain.params import ExplainParams
from mlport.explain.result import Attribution, Explanation, ModelFunction
from mlport.explain.shapload import import_shap
from mlport.observability.drift.profile import OTHER, Profile

__all__ = ["NO_BACKGROUND", "explain_kernel", "profile_background", "request_background"]

Array = np.ndarray[Any, Any]

NO_BACKGROUND = ("model-agnostic explanations need background rows: give the version a reference profile "
                 "(mlport profile DATA --model MODEL -o VERSION_FOLDER/profile.json) or send rows of feature values "
                 "in the request's parameter 'background'")


def explain_kernel(fn: ModelFunction, layout: TabularLayout, x: Array, predicted: Array, targets: Sequence[Target],
                   background: Array, params: ExplainParams) -> Explanation:
    """Kernel SHAP values of the rows of ``x`` (``predicted``: the model's scores of them, ``[rows, targets]``)."""
    shap = import_shap()
    nsamples = _nsamples(x.shape[1], len(x), len(background), fn.budget.max_evaluations - fn.budget.used, params)

    def score(matrix: Array) -> Array:
        return scores(fn(layout.inputs(np.asarray(matrix, dtype=np.float64))), targets)

    explainer = shap.KernelExplainer(score, background, link="identity")
    fn.budget.check_time()
    raw = explainer.shap_values(x, nsamples=nsamples, l1_reg=False, silent=True)
    values = np.asarray(raw, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, :, None]
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64)).reshape(-1)
    out = [Attribution(t.name, t.element, np.full(len(x), base[i]), predicted[:, i], values=values[:, :, i])
           for i, t in enumerate(targets)]
    return Explanation("kernel_shap", layout.names, out, rows=len(x))


def _nsamples(features: int, rows: int, background: int, left: int, params: ExplainParams) -> int:
    """Coalitions per row: the request's, else shap's default, within the evaluations left (413 when too few)."""
    every = 2 ** features - 2 if features < 30 else 1 << 30
    wanted = min(params.nsamples or 2 * features + 2048, max(every, 1))
    affordable = (left - background - rows) // max(1, rows * background)
    least = min(max(every, 1), 2 * features + 1)
    if params.nsamples is None:
        wanted = min(wanted, affordable)
    if wanted > affordable or wanted < least:
        need = rows * background * max(least, params.nsamples or 0) + background + rows
        raise PayloadTooLarge(
            f"explaining {rows} row(s) of {features} features over {background} background rows needs about {need} "
            f"model evaluations; the bound is {params.max_evaluations}: send fewer rows, fewer background rows "
            "(parameter 'background_rows') or a smaller 'nsamples'")
    return max(wanted, least)


def profile_background(profile: Profile, layout: TabularLayout, rows: int, seed: int = 0) -> Array:
    """``rows`` background rows drawn from the reference profile, each feature from its own sample (numeric) or
    its category frequencies (categorical codes); 422 when the profile lacks a feature."""
    rng = np.random.default_rng(seed)
    by_key = {(f.tensor, f.column): f for f in profile.features if f.role == "input"}
    columns = []
    for feature in layout.features:
        found = by_key.get((feature.tensor, feature.column))
        if found is None and feature.column is None:
            found = by_key.get((feature.tensor, 0))
        if found is not None and found.sample:
            columns.append(rng.choice(np.asarray(found.sample, dtype=np.float64), rows))
            continue
        codes = _codes(found.frequencies if found is not None else None)
        if codes is None:
            raise Unprocessable(f"the reference profile holds no values of feature '{feature.name}'; "
                                f"{NO_BACKGROUND[NO_BACKGROUND.index('give'):]}")
        values, weights = codes
        columns.append(rng.choice(values, rows, p=weights))
    return np.column_stack(columns)


def _codes(frequencies: dict[str, float] | None) -> tuple[Array, Array] | None:
    """Numeric category codes and their shares (``None`` when there are none or they are not numbers)."""
    if not frequencies:
        return None
    kept = {k: v for k, v in frequencies.items() if k != OTHER}
    try:
        values = np.asarray([float(k) for k in kept], dtype=np.float64)
    except ValueError:
        return None
    weights = np.asarray(list(kept.values()), dtype=np.float64)
    if not len(values) or weights.sum() <= 0:
        return None
    return values, weights / weights.sum()


def request_background(raw: list[Any], layout: TabularLayout, max_rows: int) -> Array:
    """The request's ``background`` rows as ``[rows, features]`` (400 when malformed, 413 beyond ``max_rows``)."""
    if not raw:
        raise InvalidInput("parameter 'background' is empty; give rows of feature values")
    if len(raw) > max_rows:
        raise PayloadTooLarge(f"parameter 'background' has {len(raw)} rows; the bound is {max_rows}")
    n = len(layout.features)
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"parameter 'background' must be rows of {n} numbers each "
                           f"({', '.join(layout.names[:8])}{'...' if n > 8 else ''})") from None
    if arr.ndim == 1 and n == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise InvalidInput(f"parameter 'background' must be rows of {n} numbers each (features "
                           f"{', '.join(layout.names[:8])}{'...' if n > 8 else ''}), got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise InvalidInput("parameter 'background' holds a value that is not a finite number")
    return arr
