"""Small real PMML models, built in a test's tmp_path with scikit-learn and exported by sklearn2pmml or nyoka.

Each builder returns a :class:`PmmlCase`: the file, the fitted scikit-learn model it was exported from, the
source table, the signature the server should describe, and the scikit-learn answers to compare with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class PmmlCase:
    name: str
    path: Path
    model: Any
    #: The source table (a pandas DataFrame); missing values are NaN.
    frame: Any
    #: Inputs as ``describe`` lists them: (name, type), in the model's MiningSchema order.
    inputs: list[tuple[str, str]]
    #: Outputs as ``describe`` lists them: (name, type).
    outputs: list[tuple[str, str]]
    #: scikit-learn's answers for some rows of ``frame``, by output name.
    answers: Callable[[Any], dict[str, np.ndarray]]
    #: Send numbers rounded to float32. scikit-learn trees compare float32 values with their thresholds; an
    #: exporter that declares the fields double makes the evaluator compare the double values, which can
    #: fall on the other side of a threshold. Values a float32 holds exactly compare the same in both.
    float32_values: bool = False

    def rows(self, index: list[int]) -> Any:
        part = self.frame.iloc[index]
        if self.float32_values:
            part = part.astype(np.float32).astype(np.float64)
        return part

    def feed(self, index: list[int]) -> dict[str, np.ndarray]:
        """The rows as named tensors in the served types; a missing string is the empty string."""
        part = self.rows(index)
        feed: dict[str, np.ndarray] = {}
        for name, kind in self.inputs:
            col = part[name]
            if kind == "string":
                feed[name] = col.astype(object).where(col.notna(), "").to_numpy(dtype=object)
            else:
                feed[name] = col.to_numpy(dtype={"float32": np.float32, "float64": np.float64,
                                                 "int64": np.int64}[kind])
        return feed

    def want(self, index: list[int]) -> dict[str, np.ndarray]:
        return self.answers(self.rows(index))


# ------------------------------------------------------------------------- exporters
@contextlib.contextmanager
def _converter_knows_sklearn() -> Iterator[None]:
    """Pickle estimators for the sklearn2pmml converter with the minor release of scikit-learn.

    The converter refuses pickles recorded by a scikit-learn release newer than the ones it lists, and a
    patch release (1.x.1) is often newer than the installed converter; its estimators are the same as the
    minor release's (1.x.0), so the pickles handed to the converter record that one.
    """
    import sklearn.base

    real = sklearn.base.__version__
    parts = real.split(".")
    sklearn.base.__version__ = ".".join([*parts[:2], "0"]) if len(parts) >= 3 else real
    try:
        yield
    finally:
        sklearn.base.__version__ = real


def export_sklearn2pmml(pipeline: Any, path: Path) -> Path:
    """A fitted ``PMMLPipeline`` written by sklearn2pmml (its converter runs on Java)."""
    from sklearn2pmml import sklearn2pmml

    path.parent.mkdir(parents=True, exist_ok=True)
    with _converter_knows_sklearn():
        sklearn2pmml(pipeline, str(path))
    return path


def export_nyoka(pipeline: Any, features: list[str], target: str, path: Path) -> Path:
    """A fitted scikit-learn ``Pipeline`` written by nyoka's ``skl_to_pmml``."""
    from nyoka import skl_to_pmml

    path.parent.mkdir(parents=True, exist_ok=True)
    skl_to_pmml(pipeline, features, target, str(path))
    return path


# ------------------------------------------------------------------------- data
def iris_frame() -> tuple[Any, Any]:
    """Iris as a DataFrame with short column names, and the species names as labels."""
    import pandas as pd
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    labels = pd.Series(np.asarray(data.target_names)[data.target], name="species")
    return frame, labels


def diabetes_frame() -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    return data.data, data.target.rename("y")


def passengers_frame(n: int = 400, seed: int = 0) -> tuple[Any, Any]:
    """A titanic-like table: text columns (one with missing values), numbers with missing values, a 0/1 target."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], n).astype(object)
    embarked = rng.choice(["S", "C", "Q"], n, p=[0.6, 0.25, 0.15]).astype(object)
    pclass = rng.choice([1.0, 2.0, 3.0], n)
    age = rng.normal(30, 12, n).clip(1, 80)
    fare = rng.gamma(2.0, 15.0, n)
    logit = 1.5 * (sex == "female") - 0.8 * (pclass - 2) - 0.02 * (age - 30) + 0.01 * fare + 0.3 * (embarked == "C")
    survived = (rng.random(n) < 1 / (1 + np.exp(-logit.astype(float)))).astype(np.int64)
    age[rng.random(n) < 0.15] = np.nan
    embarked[rng.random(n) < 0.1] = np.nan
    frame = pd.DataFrame({"sex": sex, "embarked": embarked, "pclass": pclass, "age": age, "fare": fare})
    return frame, pd.Series(survived, name="survived")


def _classifier_answers(model: Any, proba: list[str], label: str | None) -> Callable[[Any], dict[str, np.ndarray]]:
    def answers(rows: Any) -> dict[str, np.ndarray]:
        p = model.predict_proba(rows)
        out = {name: p[:, i] for i, name in enumerate(proba)}
        if label is not None:
            pred = np.asarray(model.predict(rows))
            out[label] = pred.astype(object) if pred.dtype.kind in "OU" else pred
        return out

    return answers


# ------------------------------------------------------------------------- models
def iris_logistic_sklearn2pmml(root: Path) -> PmmlCase:
    """Multinomial logistic regression (RegressionModel, softmax); Output lists probabilities only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn2pmml.pipeline import PMMLPipeline

    frame, labels = iris_frame()
    pipe = PMMLPipeline([("classifier", LogisticRegression(max_iter=1000))]).fit(frame, labels)
    path = export_sklearn2pmml(pipe, root / "iris_logistic.pmml")
    proba = [f"probability({c})" for c in pipe.classes_]
    return PmmlCase("iris_logistic", path, pipe, frame, [(c, "float64") for c in frame.columns],
                    [*((p, "float64") for p in proba), ("species", "string")],
                    _classifier_answers(pipe, proba, "species"))


def iris_tree_sklearn2pmml(root: Path) -> PmmlCase:
    """A decision tree (TreeModel) on float (FP32) fields, as scikit-learn trees compare in float32."""
    from sklearn.tree import DecisionTreeClassifier
    from sklearn2pmml.pipeline import PMMLPipeline

    frame, labels = iris_frame()
    pipe = PMMLPipeline([("classifier", DecisionTreeClassifier(max_depth=4, random_state=0))]).fit(frame, labels)
    path = export_sklearn2pmml(pipe, root / "iris_tree.pmml")
    proba = [f"probability({c})" for c in pipe.classes_]
    used = [c for c in frame.columns if c in _active_fields(path)]
    return PmmlCase("iris_tree", path, pipe, frame, [(c, "float32") for c in used],
                    [*((p, "float64") for p in proba), ("species", "string")],
                    _classifier_answers(pipe, proba, "species"))


def iris_boosting_sklearn2pmml(root: Path) -> PmmlCase:
    """Gradient boosting (a MiningModel chain of summed trees and a softmax regression)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn2pmml.pipeline import PMMLPipeline

    frame, labels = iris_frame()
    pipe = PMMLPipeline([("classifier", GradientBoostingClassifier(n_estimators=15, max_depth=2, random_state=0))])
    pipe.fit(frame, labels)
    path = export_sklearn2pmml(pipe, root / "iris_boosting.pmml")
    proba = [f"probability({c})" for c in pipe.classes_]
    used = [c for c in frame.columns if c in _active_fields(path)]
    return PmmlCase("iris_boosting", path, pipe, frame, [(c, "float32") for c in used],
                    [*((p, "float64") for p in proba), ("species", "string")],
                    _classifier_answers(pipe, proba, "species"))


def diabetes_linear_sklearn2pmml(root: Path) -> PmmlCase:
    """Linear regression without an Output element: the target is the output."""
    from sklearn.linear_model import LinearRegression
    from sklearn2pmml.pipeline import PMMLPipeline

    frame, target = diabetes_frame()
    pipe = PMMLPipeline([("regressor", LinearRegression())]).fit(frame, target)
    path = export_sklearn2pmml(pipe, root / "diabetes_linear.pmml")
    return PmmlCase("diabetes_linear", path, pipe, frame, [(c, "float64") for c in frame.columns],
                    [("y", "float64")], lambda rows: {"y": pipe.predict(rows)})


def passengers_sklearn2pmml(root: Path) -> PmmlCase:
    """Text categories and missing values: imputers, one-hot encoding and scaling before a logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn2pmml.pipeline import PMMLPipeline

    frame, target = passengers_frame()
    prep = ColumnTransformer([
        ("text", Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", OneHotEncoder())]),
         ["sex", "embarked"]),
        ("numbers", Pipeline([("impute", SimpleImputer(strategy="mean")), ("scale", StandardScaler())]),
         ["age", "fare", "pclass"]),
    ])
    pipe = PMMLPipeline([("prep", prep), ("classifier", LogisticRegression(max_iter=1000))]).fit(frame, target)
    path = export_sklearn2pmml(pipe, root / "passengers.pmml")
    return PmmlCase("passengers", path, pipe, frame,
                    [("sex", "string"), ("embarked", "string"), ("age", "float64"), ("fare", "float64"),
                     ("pclass", "float64")],
                    [("probability(0)", "float64"), ("probability(1)", "float64"), ("survived", "int64")],
                    _classifier_answers(pipe, ["probability(0)", "probability(1)"], "survived"))


def iris_forest_nyoka(root: Path) -> PmmlCase:
    """A random forest (MiningModel averaging trees), by nyoka."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    frame, labels = iris_frame()
    pipe = Pipeline([("classifier", RandomForestClassifier(n_estimators=7, max_depth=4, random_state=0))])
    pipe.fit(frame, labels)
    path = export_nyoka(pipe, list(frame.columns), "species", root / "iris_forest.pmml")
    proba = [f"probability_{c}" for c in pipe.classes_]
    return PmmlCase("iris_forest", path, pipe, frame, [(c, "float64") for c in frame.columns],
                    [*((p, "float64") for p in proba), ("predicted_species", "string")],
                    _classifier_answers(pipe, proba, "predicted_species"), float32_values=True)


def iris_mlp_nyoka(root: Path) -> PmmlCase:
    """A neural network (NeuralNetwork) behind a standard scaler (derived fields), by nyoka."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame, labels = iris_frame()
    pipe = Pipeline([("scale", StandardScaler()),
                     ("classifier", MLPClassifier(hidden_layer_sizes=(8,), max_iter=3000, random_state=0))])
    pipe.fit(frame, labels)
    path = export_nyoka(pipe, list(frame.columns), "species", root / "iris_mlp.pmml")
    proba = [f"probability_{c}" for c in pipe.classes_]
    return PmmlCase("iris_mlp", path, pipe, frame, [(c, "float64") for c in frame.columns],
                    [*((p, "float64") for p in proba), ("predicted_species", "string")],
                    _classifier_answers(pipe, proba, "predicted_species"))


def diabetes_boosting_nyoka(root: Path) -> PmmlCase:
    """Gradient boosting regression (a MiningModel of summed trees), by nyoka."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    frame, target = diabetes_frame()
    pipe = Pipeline([("regressor", GradientBoostingRegressor(n_estimators=15, max_depth=3, random_state=0))])
    pipe.fit(frame, target)
    path = export_nyoka(pipe, list(frame.columns), "y", root / "diabetes_boosting.pmml")
    return PmmlCase("diabetes_boosting", path, pipe, frame, [(c, "float64") for c in frame.columns],
                    [("predicted_y", "float64")], lambda rows: {"predicted_y": pipe.predict(rows)},
                    float32_values=True)


def _active_fields(path: Path) -> set[str]:
    """Names of the top model's active MiningFields (a converter may drop features a tree never uses)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    ns = {"p": root.tag.partition("}")[0].lstrip("{")}
    for child in root:
        schema = child.find("p:MiningSchema", ns)
        if schema is not None:
            return {f.get("name", "") for f in schema.findall("p:MiningField", ns)
                    if f.get("usageType", "active") == "active"}
    return set()


TYPED_FIELDS = """<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header description="boolean and integer fields, and outputs derived from the prediction"/>
  <DataDictionary>
    <DataField name="flag" optype="categorical" dataType="boolean">
      <Value value="true"/><Value value="false"/>
    </DataField>
    <DataField name="count" optype="continuous" dataType="integer"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema>
      <MiningField name="flag"/>
      <MiningField name="count"/>
      <MiningField name="y" usageType="target"/>
    </MiningSchema>
    <Output>
      <OutputField name="yhat" optype="continuous" dataType="double" feature="predictedValue"/>
      <OutputField name="big" optype="categorical" dataType="boolean" feature="transformedValue">
        <Apply function="greaterThan"><FieldRef field="yhat"/><Constant dataType="double">5</Constant></Apply>
      </OutputField>
      <OutputField name="doubled" optype="continuous" dataType="integer" feature="transformedValue">
        <Apply function="*"><FieldRef field="count"/><Constant dataType="integer">2</Constant></Apply>
      </OutputField>
    </Output>
    <RegressionTable intercept="1.5">
      <NumericPredictor name="count" coefficient="2"/>
      <CategoricalPredictor name="flag" value="true" coefficient="10"/>
    </RegressionTable>
  </RegressionModel>
</PMML>
"""


def typed_fields_pmml(root: Path) -> Path:
    """A hand-written regression over a boolean and an integer field (y = 1.5 + 2 count + 10 flag)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "typed.pmml"
    path.write_text(TYPED_FIELDS, encoding="utf-8")
    return path


def typed_fields_answers(flag: np.ndarray, count: np.ndarray) -> dict[str, np.ndarray]:
    yhat = 1.5 + 2.0 * count + 10.0 * flag
    return {"yhat": yhat, "big": yhat > 5, "doubled": count * 2}
