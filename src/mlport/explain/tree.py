"""Exact SHAP values of tree ensembles (``shap.TreeExplainer``, path-dependent, no background data needed).

The trees are the model's own (:meth:`mlport.formats.base.Evaluator.tree_model`: an XGBoost or LightGBM booster, a
scikit-learn tree ensemble). Values are in the space the trees add up in, as ``shap.TreeExplainer`` gives them:
the regression value, the class probabilities of a scikit-learn forest, and the log-odds (margin) of boosted
classifiers. ``base_value`` plus the row's values is the ensemble's output for the row (``prediction``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlport.explain.layout import TabularLayout, Target
from mlport.explain.result import Attribution, Budget, Explanation
from mlport.explain.shapload import import_shap

__all__ = ["explain_trees"]

Array = np.ndarray[Any, Any]


def explain_trees(model: Any, layout: TabularLayout, inputs: Mapping[str, Array], outputs: Mapping[str, Array],
                  float_targets: Sequence[Target], budget: Budget) -> Explanation:
    """The tree SHAP values of the rows in ``inputs`` (``outputs``: the model's prediction of them, which tells
    the width of its outputs)."""
    shap = import_shap()
    x = layout.matrix(inputs)
    budget.spend(len(x))
    explainer = shap.TreeExplainer(model)
    values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype=np.float64)
    if values.ndim == 2:
        values = values[:, :, None]
    elif values.ndim == 3 and values.shape[0] != len(x):  # an older layout: [outputs, rows, features]
        values = np.moveaxis(values, 0, -1)
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64)).reshape(-1)
    k = values.shape[2]
    if len(base) != k:
        base = np.broadcast_to(base[:1], (k,))
    targets = _tree_targets(float_targets, k, getattr(model, "classes_", None))
    attributions = []
    for i, target in enumerate(targets):
        v = values[:, :, i]
        attributions.append(Attribution(target.name, target.element, np.full(len(x), base[i]),
                                        base[i] + v.sum(axis=1), values=v))
    return Explanation("tree_shap", layout.names, attributions, rows=len(x))


def _tree_targets(float_targets: Sequence[Target], k: int, classes: Any) -> list[Target]:
    """Which served outputs the ``k`` outputs of the trees stand for: ``k`` classes of a ``[-1, k]`` output, the
    positive class of a binary ``[-1, 2]`` one, or an output of one value per row."""
    by_output: dict[str, list[Target]] = {}
    for t in float_targets:
        by_output.setdefault(t.name, []).append(t)
    names = None if classes is None else [_plain(c) for c in np.asarray(classes).tolist()]
    for name, elements in by_output.items():
        if k > 1 and len(elements) == k:
            return [Target(name, i, names[i] if names and len(names) == k and t.element == i else t.element)
                    for i, t in enumerate(elements)]
    for name, elements in by_output.items():
        if k == 1 and len(elements) == 2:
            positive = elements[1]
            element = names[1] if names and len(names) == 2 and positive.element == 1 else positive.element
            return [Target(name, 1, element)]
    for elements in by_output.values():
        if k == 1 and elements[0].index is None:
            return [elements[0]]
    return [Target("output", i if k > 1 else None, i if k > 1 else None) for i in range(k)]


def _plain(value: Any) -> str | int:
    return value if isinstance(value, int | str) and not isinstance(value, bool) else str(value)
