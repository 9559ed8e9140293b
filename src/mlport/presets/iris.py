"""The ``iris`` preset: scikit-learn's iris flowers, four measurements -> species.

Input ``input`` FP32 [-1, 4], also callable by field name (``sepal_length``, ``sepal_width``,
``petal_length``, ``petal_width``); outputs ``label`` (the species' name, through ``labels:`` in
model.yaml) and ``probabilities`` FP32 [-1, 3].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlport.presets.common import TEST_SIZE, Trained, save, score, split, to_onnx

__all__ = ["SPECIES", "build", "train"]

SPECIES = ("setosa", "versicolor", "virginica")

CONFIG = f"""\
# Call by field name, e.g.
# {{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}
fields:
  input: {{sepal_length: 0, sepal_width: 1, petal_length: 2, petal_width: 3}}
labels:
  label: [{", ".join(SPECIES)}]
"""


def train(c: float = 1.0, max_iter: int = 1000, standardize: bool = True, test_size: float = TEST_SIZE) -> Trained:
    """A logistic regression on iris (``c``: inverse regularisation strength; ``standardize``: scale the
    measurements first; ``test_size`` 0: train on every row)."""
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = split(x.astype(np.float32), y, test_size)
    steps = [StandardScaler()] if standardize else []
    model = make_pipeline(*steps, LogisticRegression(max_iter=max_iter, C=c)).fit(x_train, y_train)
    onx = to_onnx(model, [("input", FloatTensorType([None, 4]))])
    return Trained(onx, score(model, x_test, y_test), len(y_train), len(y_test),
                   "scikit-learn load_iris (150 flowers, 3 species)", CONFIG)


def build(folder: Path) -> None:
    save("iris", train(), folder)
