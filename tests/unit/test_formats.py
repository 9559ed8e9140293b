"""The tabular formats without a server: detection, trust, missing extras, signatures by objective."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from mlport.core.types import DataType
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import LoadOptions, MissingExtra, UntrustedModel
from mlport.formats.lightgbm import LightGBMFormat
from mlport.formats.registry import FormatRegistry
from mlport.formats.sklearn import SklearnFormat
from mlport.formats.xgboost import XGBoostFormat

TRUSTED = LoadOptions(trusted=True)


class _Mark:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


# ------------------------------------------------------------------------- registry and detection
def test_registry_finds_the_tabular_formats_by_entry_point() -> None:
    names = {f.name for f in FormatRegistry.discover().formats}
    assert {"onnx", "sklearn", "xgboost", "lightgbm"} <= names


def test_detection_by_suffix_and_content(tmp_path: Path) -> None:
    files = {
        "a.skops": b"PK", "b.joblib": b"x", "c.pkl": b"x",
        "xgb.json": b'{"learner":{"attributes":{}', "spaced.json": b' {\n  "learner" : {"x": 1}}',
        "other.json": b'{"name": "config", "learner": {}}', "list.json": b"[1, 2]",
        "xgb.ubj": b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner{L", "short.ubj": b"{i\x07learner{",
        "other.ubj": b"{i\x04name", "lgb.txt": b"tree\nversion=v4\nnum_class=1\n",
        "notes.txt": b"tree\nthis is a note\n", "later.txt": b"hello\ntree\nversion=v4\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.json").mkdir()
    registry = FormatRegistry([SklearnFormat(), XGBoostFormat(), LightGBMFormat()])
    found = {p.name: (fmt.name if (fmt := registry.detect(p)) else None) for p in tmp_path.iterdir()}
    assert found == {
        "a.skops": "sklearn", "b.joblib": "sklearn", "c.pkl": "sklearn",
        "xgb.json": "xgboost", "spaced.json": "xgboost", "other.json": None, "list.json": None,
        "xgb.ubj": "xgboost", "short.ubj": "xgboost", "other.ubj": None, "lgb.txt": "lightgbm",
        "notes.txt": None, "later.txt": None, "folder.json": None,
    }


def test_content_detection_reads_a_bounded_prefix(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b'{"data": "' + b"x" * 2_000_000 + b'", "learner": {}}')
    reads: list[int] = []
    real_open = Path.open

    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read

        def read(n: int = -1) -> Any:
            reads.append(n)
            return real_read(n)

        handle.read = read
        return handle

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "open", spy)
        assert not XGBoostFormat().detect(big)
    assert reads and all(0 < n <= 4096 for n in reads)


# ------------------------------------------------------------------------- missing extras
class _NoXGBoost(XGBoostFormat):
    requires: ClassVar[tuple[str, ...]] = ("mlport_test_absent_module",)


class _NoSklearn(SklearnFormat):
    requires: ClassVar[tuple[str, ...]] = ("mlport_test_absent_module", "skops")


def test_missing_library_gives_the_install_line(tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    model.write_text('{"learner": {}}')
    with pytest.raises(MissingExtra) as err:
        _NoXGBoost().load(model, TRUSTED)
    message = str(err.value)
    assert "\n" not in message
    assert message == ("the xgboost format needs mlport_test_absent_module: pip install 'mlport[xgboost]'")
    assert not _NoXGBoost.available()
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(b"not read")
    with pytest.raises(MissingExtra, match=r"pip install 'mlport\[sklearn\]'"):
        _NoSklearn().load(pkl, TRUSTED)


def test_missing_extra_is_checked_for_lightgbm_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LightGBMFormat, "requires", ("mlport_test_absent_module",))
    model = tmp_path / "m.txt"
    model.write_text("tree\nversion=v4\n")
    with pytest.raises(MissingExtra, match=r"pip install 'mlport\[lightgbm\]'$"):
        LightGBMFormat().load(model, TRUSTED)


# ------------------------------------------------------------------------- trust
def test_untrusted_pickle_is_refused_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "was-unpickled"
    for name in ("model.pkl", "model.joblib", "model.pickle"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Mark(marker)))
        with pytest.raises(UntrustedModel) as err:
            SklearnFormat().load(path, LoadOptions())
        assert f"{name} is a pickle: loading it runs code from the file" in str(err.value)
        assert "--trusted" in str(err.value)
    assert not marker.exists()
    # trusted, it is unpickled (and then refused: it is no estimator)
    with pytest.raises(MlportError, match="no predict method"):
        SklearnFormat().load(tmp_path / "model.pkl", TRUSTED)
    assert marker.exists()


def test_skops_names_the_foreign_types(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=2).fit([[0.0], [1.0], [2.0]], [0, 1, 1])
    path = tmp_path / "mixed.skops"
    sio.dump({"tree": tree, "counts": Counter(a=1)}, path)
    with pytest.raises(UntrustedModel) as err:
        SklearnFormat().load(path, LoadOptions())
    message = str(err.value)
    assert "types from outside scikit-learn, numpy and scipy: collections.Counter;" in message
    assert "sklearn.tree" not in message  # scikit-learn's own types are accepted
    with pytest.raises(MlportError, match="holds a dict, which has no predict method"):
        SklearnFormat().load(path, TRUSTED)
    broken = tmp_path / "broken.skops"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(MlportError, match=r"broken\.skops is not a readable skops file"):
        SklearnFormat().load(broken, LoadOptions())


# ------------------------------------------------------------------------- scikit-learn signatures
def _frame() -> tuple[Any, np.ndarray]:
    import pandas as pd

    frame = pd.DataFrame({
        "age": [22, 35, 58, 41, 19, 63, 30, 47],
        "fare": [7.25, 71.3, 26.0, 8.05, 13.0, 51.9, 10.5, 30.1],
        "port": ["S", "C", "S", "Q", "S", "C", "Q", "S"],
        "deck": [1, 2, 3, 1, 2, 3, 1, 2],
    })
    return frame, np.array([0, 1, 1, 0, 0, 1, 0, 1])


def test_dataframe_pipeline_signature_and_predict(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    frame, y = _frame()
    pipe = make_pipeline(
        make_column_transformer(
            (make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), [2]),
            (OrdinalEncoder(), ["deck"]),
            remainder="passthrough",
        ),
        LogisticRegression(),
    ).fit(frame, y)
    path = tmp_path / "pipe.skops"
    sio.dump(pipe, path)
    ev = SklearnFormat().load(path, LoadOptions())
    types = {s.name: (s.datatype, s.shape) for s in ev.signature.inputs}
    assert types == {"age": (DataType.FP64, (-1,)), "fare": (DataType.FP64, (-1,)),
                     "port": (DataType.BYTES, (-1,)), "deck": (DataType.INT64, (-1,))}
    assert [(s.name, s.datatype, s.shape) for s in ev.signature.outputs] == [
        ("label", DataType.INT64, (-1,)), ("probabilities", DataType.FP32, (-1, 2))]
    feed = {"age": frame["age"].to_numpy(np.float64), "fare": frame["fare"].to_numpy(),
            # bytes (binary protocols) and str both reach the estimator as text
            "port": np.array([p.encode() if i % 2 else p for i, p in enumerate(frame["port"])], dtype=object),
            "deck": frame["deck"].to_numpy()}
    out = ev.predict(feed)
    assert out["label"].tolist() == pipe.predict(frame).tolist()
    np.testing.assert_allclose(out["probabilities"], pipe.predict_proba(frame), rtol=1e-6)
    ev.close()

    overridden = SklearnFormat().load(path, LoadOptions(options={"feature_types": {"age": "int64"}}))
    assert overridden.signature.input("age").datatype is DataType.INT64  # type: ignore[union-attr]
    with pytest.raises(InvalidInput, match="feature_types names column 'nope'"):
        SklearnFormat().load(path, LoadOptions(options={"feature_types": {"nope": "int64"}}))


def test_regressor_clusterer_and_multioutput_outputs(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LinearRegression
    from sklearn.tree import DecisionTreeRegressor

    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    cases = {
        "reg.skops": (LinearRegression().fit(x, x[:, 0] * 2), ("prediction", DataType.FP64, (-1,))),
        "multi.skops": (DecisionTreeRegressor().fit(x, x), ("prediction", DataType.FP64, (-1, 2))),
        "km.skops": (KMeans(n_clusters=2, n_init=1, random_state=0).fit(x), ("label", DataType.INT64, (-1,))),
    }
    for name, (est, spec) in cases.items():
        sio.dump(est, tmp_path / name)
        ev = SklearnFormat().load(tmp_path / name, TRUSTED)
        assert [(s.name, s.datatype, s.shape) for s in ev.signature.outputs] == [spec]
        assert [(s.name, s.datatype, s.shape) for s in ev.signature.inputs] == [("input", DataType.FP32, (-1, 2))]
        got = ev.predict({"input": x.astype(np.float32)})[spec[0]]
        np.testing.assert_allclose(got, est.predict(x), rtol=1e-6)


def test_transformer_without_predict_is_refused(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import StandardScaler

    sio.dump(StandardScaler().fit([[1.0], [2.0]]), tmp_path / "scaler.skops")
    with pytest.raises(MlportError, match="StandardScaler, which has no predict method"):
        SklearnFormat().load(tmp_path / "scaler.skops", LoadOptions())


# ------------------------------------------------------------------------- XGBoost objectives
def _xgb(tmp_path: Path, name: str, params: dict[str, Any], y: np.ndarray, x: np.ndarray) -> Path:
    import xgboost as xgb

    booster = xgb.train({**params, "max_depth": 2}, xgb.DMatrix(x, label=y), num_boost_round=3)
    path = tmp_path / name
    booster.save_model(path)
    return path


def test_xgboost_outputs_follow_the_objective(tmp_path: Path) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y3 = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    yb = (x[:, 0] > 0).astype(int)
    cases = [
        ("softmax.json", {"objective": "multi:softmax", "num_class": 3}, y3, [("label", DataType.INT64, (-1,))]),
        ("hinge.ubj", {"objective": "binary:hinge"}, yb, [("label", DataType.INT64, (-1,))]),
        ("raw.json", {"objective": "binary:logitraw"}, yb, [("prediction", DataType.FP32, (-1,))]),
        ("quantiles.json", {"objective": "reg:quantileerror", "quantile_alpha": [0.1, 0.9]}, x[:, 0],
         [("prediction", DataType.FP32, (-1, 2))]),
    ]
    for name, params, y, outputs in cases:
        path = _xgb(tmp_path, name, params, y, x)
        assert XGBoostFormat().detect(path)
        ev = XGBoostFormat().load(path, LoadOptions(intra_op_threads=1))
        assert [(s.name, s.datatype, s.shape) for s in ev.signature.outputs] == outputs
        got = ev.predict({"input": x})[outputs[0][0]]
        want = xgb.Booster(model_file=str(path)).predict(xgb.DMatrix(x))
        np.testing.assert_allclose(got, want, rtol=1e-6)
        ev.close()


def test_xgboost_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"learner": {"oops": true}}')
    with pytest.raises(MlportError, match=r"xgboost could not load bad\.json"):
        XGBoostFormat().load(path, LoadOptions())


# ------------------------------------------------------------------------- LightGBM objectives
def test_lightgbm_regression_and_named_features(tmp_path: Path) -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    y = x[:, 0] * 3 + x[:, 1]
    data = lgb.Dataset(x, label=y, feature_name=["speed", "load"])
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 4}, data, num_boost_round=5)
    path = tmp_path / "reg.txt"
    booster.save_model(path)
    ev = LightGBMFormat().load(path, LoadOptions(intra_op_threads=1))
    assert [(s.name, s.datatype, s.shape) for s in ev.signature.inputs] == [
        ("speed", DataType.FP64, (-1,)), ("load", DataType.FP64, (-1,))]
    assert [(s.name, s.datatype, s.shape) for s in ev.signature.outputs] == [("prediction", DataType.FP64, (-1,))]
    got = ev.predict({"speed": x[:5, 0], "load": x[:5, 1]})["prediction"]
    np.testing.assert_allclose(got, booster.predict(x[:5]), rtol=1e-12)
    broken = tmp_path / "broken.txt"
    broken.write_text("tree\nversion=v4\nnum_class=oops\n")
    with pytest.raises(MlportError, match=r"lightgbm could not load broken\.txt"):
        LightGBMFormat().load(broken, LoadOptions())
