"""scikit-learn, XGBoost and LightGBM models trained here, served for real, checked against the libraries."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow

RTOL = 1e-5
ATOL = 1e-7


# ------------------------------------------------------------------------- checks
def _same(got: Any, want: Any, what: str) -> None:
    want = np.asarray(want)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=RTOL, atol=ATOL, err_msg=what)
    else:
        assert np.asarray(got).tolist() == want.tolist(), what


def _py(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _oip_type(declared: dict[str, str], name: str) -> str:
    return {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}[declared[name]]


def check_served(c: httpx.Client, name: str, feed: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """eval (batch and one instance), OIP v2 infer and TF Serving predict all give the library's answers."""
    declared = {i["name"]: i["type"] for i in c.get(f"/models/{name}/describe").json()["inputs"]}
    n = len(next(iter(feed.values())))
    # native eval: a batch
    r = c.post(f"/models/{name}/eval", json={k: v.tolist() for k, v in feed.items()})
    assert r.status_code == 200, r.text
    batch = r.json()
    assert set(batch) == set(want)
    for out, w in want.items():
        _same(batch[out], w, f"{name} eval {out}")
    # native eval: one instance
    r = c.post(f"/models/{name}/eval", json={k: _py(v[-1]) for k, v in feed.items()})
    assert r.status_code == 200, r.text
    for out, w in want.items():
        _same(r.json()[out], w[-1], f"{name} eval single {out}")
    # OIP v2
    body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": _oip_type(declared, k),
                        "data": v.ravel().tolist()} for k, v in feed.items()]}
    r = c.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == set(want)
    for out, w in want.items():
        assert outs[out]["shape"] == list(w.shape)
        _same(np.asarray(outs[out]["data"]).reshape(w.shape), w, f"{name} infer {out}")
    # TF Serving v1, row format
    if list(feed) == ["input"]:
        instances: list[Any] = feed["input"].tolist()
    else:
        instances = [{k: _py(v[i]) for k, v in feed.items()} for i in range(n)]
    r = c.post(f"/v1/models/{name}:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert len(rows) == n
    for out, w in want.items():
        got = [row[out] for row in rows] if len(want) > 1 else rows
        _same(got, w, f"{name} predict {out}")


def describe(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.get(f"/models/{name}/describe")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def index_row(server: Server, name: str, timeout: float = 30) -> dict[str, Any]:
    """The model's row of the OIP repository index once it has settled (READY or UNAVAILABLE)."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = httpx.post(server.url + "/v2/repository/index", timeout=5).json()
        for row in rows:
            if row["name"] == name and row.get("state") in ("READY", "UNAVAILABLE"):
                return row
        time.sleep(0.1)
    raise AssertionError(f"{name} did not settle: {rows}\n{server.log()}")


def mlport_describe(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", "describe", str(path), *args],
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------- scikit-learn
def _iris_frame() -> tuple[Any, np.ndarray]:
    """Iris as a DataFrame with a text column ("size", from the petal length) and text labels."""
    import pandas as pd
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.drop(columns="target").rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["size"] = pd.cut(frame["petal_length"], [0, 2, 5, 10], labels=["small", "medium", "large"]).astype(str)
    frame = frame.drop(columns="petal_length")
    labels = np.asarray(data.target_names)[data.target]
    return frame, labels


def _frame_pipeline() -> tuple[Any, Any]:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, labels = _iris_frame()
    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["size"]),
                                (StandardScaler(), ["sepal_length", "sepal_width", "petal_width"])),
        LogisticRegression(max_iter=500),
    ).fit(frame, labels)
    return pipe, frame


def _frame_feed(frame: Any, rows: list[int]) -> dict[str, np.ndarray]:
    part = frame.iloc[rows]
    return {c: (part[c].to_numpy(dtype=object) if c == "size" else part[c].to_numpy(dtype=np.float64))
            for c in frame.columns}


def test_sklearn_skops_models_match_sklearn(serve, tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier

    root = tmp_path / "models"
    root.mkdir()
    x_iris, y_iris = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x_iris, y_iris)
    sio.dump(forest, root / "iris.skops")
    x_diab, y_diab = load_diabetes(return_X_y=True)
    gbr = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(x_diab, y_diab)
    sio.dump(gbr, root / "diabetes.skops")
    pipe, frame = _frame_pipeline()
    sio.dump(pipe, root / "flowers.skops")

    server = serve(root)
    with server.client() as c:
        d = describe(c, "iris")
        assert d["inputs"] == [{"name": "input", "type": "float32", "shape": [-1, 4]}]
        assert d["outputs"] == [{"name": "label", "type": "int64", "shape": [-1]},
                                {"name": "probabilities", "type": "float32", "shape": [-1, 3]}]
        x = x_iris[[0, 60, 120, 149]].astype(np.float32)
        check_served(c, "iris", {"input": x}, {"label": forest.predict(x), "probabilities": forest.predict_proba(x)})

        d = describe(c, "diabetes")
        assert d["inputs"] == [{"name": "input", "type": "float32", "shape": [-1, 10]}]
        assert d["outputs"] == [{"name": "prediction", "type": "float64", "shape": [-1]}]
        x = x_diab[:5].astype(np.float32)
        check_served(c, "diabetes", {"input": x}, {"prediction": gbr.predict(x)})

        d = describe(c, "flowers")
        assert d["inputs"] == [{"name": "sepal_length", "type": "float64", "shape": [-1]},
                               {"name": "sepal_width", "type": "float64", "shape": [-1]},
                               {"name": "petal_width", "type": "float64", "shape": [-1]},
                               {"name": "size", "type": "string", "shape": [-1]}]
        assert d["outputs"] == [{"name": "label", "type": "string", "shape": [-1]},
                                {"name": "probabilities", "type": "float32", "shape": [-1, 3]}]
        rows = [0, 70, 77, 140]
        part = frame.iloc[rows]
        want = {"label": pipe.predict(part).astype(object), "probabilities": pipe.predict_proba(part)}
        assert set(want["label"]) == {"setosa", "versicolor", "virginica"}
        check_served(c, "flowers", _frame_feed(frame, rows), want)
        # OIP binary-style strings (bytes) reach the DataFrame as text too: a wrong type is refused clearly
        bad = c.post("/models/flowers/eval", json={**{k: v.tolist() for k, v in _frame_feed(frame, rows).items()},
                                                   "sepal_length": ["a", "b", "c", "d"]})
        assert bad.status_code == 400 and "sepal_length" in bad.json()["error"]


def test_sklearn_pickle_needs_trust(serve, tmp_path: Path) -> None:
    import joblib

    pipe, frame = _frame_pipeline()
    model = tmp_path / "flowers.joblib"
    joblib.dump(pipe, model)
    marker = tmp_path / "unpickled"
    # a pickle that would leave a mark when unpickled: refused before any unpickling
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(_marker_pickle(marker))

    server = serve(model, wait_ready=False)
    row = index_row(server, "flowers")
    assert row["state"] == "UNAVAILABLE"
    assert "flowers.joblib is a pickle" in row["reason"] and "--trusted" in row["reason"]
    with server.client() as c:
        r = c.post("/models/flowers/eval", json={k: v.tolist() for k, v in _frame_feed(frame, [0]).items()})
        assert r.status_code == 503 and "is a pickle" in r.json()["error"]

    done = mlport_describe(evil)
    assert done.returncode != 0
    assert "evil.pkl is a pickle: loading it runs code from the file" in done.stdout + done.stderr
    assert not marker.exists()
    done = mlport_describe(model)
    assert done.returncode != 0 and "is a pickle" in done.stdout + done.stderr

    trusted = serve(model, "--trusted")
    with trusted.client() as c:
        rows = [3, 90, 130]
        part = frame.iloc[rows]
        check_served(c, "flowers", _frame_feed(frame, rows),
                     {"label": pipe.predict(part).astype(object), "probabilities": pipe.predict_proba(part)})
    done = mlport_describe(model, "--trusted")
    assert done.returncode == 0, done.stderr
    assert [i["name"] for i in json.loads(done.stdout)["flowers"]["inputs"]] == list(frame.columns)


def _marker_pickle(marker: Path) -> bytes:
    import pickle

    class Mark:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return (Path.touch, (marker,))

    return pickle.dumps(Mark())


def test_skops_with_foreign_types_needs_trust(serve, tmp_path: Path) -> None:
    import skops.io as sio
    import xgboost as xgb
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(x, y)
    path = tmp_path / "boosted.skops"
    sio.dump(model, path)

    server = serve(path, wait_ready=False)
    row = index_row(server, "boosted")
    assert row["state"] == "UNAVAILABLE"
    assert "types from outside scikit-learn, numpy and scipy" in row["reason"]
    assert "xgboost.core.Booster" in row["reason"] and "xgboost.sklearn.XGBClassifier" in row["reason"]
    done = mlport_describe(path)
    assert done.returncode != 0 and "xgboost.sklearn.XGBClassifier" in done.stdout

    trusted = serve(path, "--trusted")
    xf = x[[0, 75, 149]].astype(np.float32)
    with trusted.client() as c:
        want = {"label": model.predict(xf), "probabilities": model.predict_proba(xf)}
        check_served(c, "boosted", {"input": xf}, want)


# ------------------------------------------------------------------------- XGBoost
def test_xgboost_models_match_xgboost(serve, tmp_path: Path) -> None:
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    root = tmp_path / "models"
    root.mkdir()
    x_iris, y_iris = load_iris(return_X_y=True)
    multi = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(x_iris, y_iris)
    multi.save_model(root / "iris.json")
    cancer = load_breast_cancer(as_frame=True)
    binary = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(cancer.data, cancer.target)
    binary.save_model(root / "cancer.ubj")
    x_diab, y_diab = load_diabetes(return_X_y=True)
    reg = xgb.XGBRegressor(n_estimators=8, max_depth=3).fit(x_diab, y_diab)
    reg.save_model(root / "diabetes.json")
    (root / "settings.json").write_text('{"learners": 3, "note": "not a model"}')

    server = serve(root)
    with server.client() as c:
        names = {r["name"] for r in c.post("/v2/repository/index").json()}
        assert names == {"iris", "cancer", "diabetes"}
        assert c.get("/v2/models/iris").json()["platform"] == "xgboost"

        d = describe(c, "iris")
        assert d["inputs"] == [{"name": "input", "type": "float32", "shape": [-1, 4]}]
        assert d["outputs"] == [{"name": "label", "type": "int64", "shape": [-1]},
                                {"name": "probabilities", "type": "float32", "shape": [-1, 3]}]
        x = x_iris[[0, 60, 120, 149]].astype(np.float32)
        check_served(c, "iris", {"input": x}, {"label": multi.predict(x), "probabilities": multi.predict_proba(x)})

        d = describe(c, "cancer")
        assert [i["name"] for i in d["inputs"]] == list(cancer.data.columns)
        assert {i["type"] for i in d["inputs"]} == {"float32"} and {tuple(i["shape"]) for i in d["inputs"]} == {(-1,)}
        assert d["outputs"] == [{"name": "label", "type": "int64", "shape": [-1]},
                                {"name": "probabilities", "type": "float32", "shape": [-1, 2]}]
        part = cancer.data.iloc[[0, 19, 100, 568]].astype(np.float32)
        feed = {col: part[col].to_numpy() for col in part.columns}
        check_served(c, "cancer", feed, {"label": binary.predict(part), "probabilities": binary.predict_proba(part)})

        d = describe(c, "diabetes")
        assert d["outputs"] == [{"name": "prediction", "type": "float32", "shape": [-1]}]
        x = x_diab[:5].astype(np.float32)
        check_served(c, "diabetes", {"input": x}, {"prediction": reg.predict(x).astype(np.float64)})


# ------------------------------------------------------------------------- LightGBM
def test_lightgbm_models_match_lightgbm(serve, tmp_path: Path) -> None:
    import lightgbm as lgb
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    root = tmp_path / "models"
    root.mkdir()
    x_iris, y_iris = load_iris(return_X_y=True)
    multi = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(x_iris, y_iris)
    multi.booster_.save_model(root / "iris.txt")
    cancer = load_breast_cancer(as_frame=True)
    binary = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(cancer.data, cancer.target)
    binary.booster_.save_model(root / "cancer.txt")
    x_diab, y_diab = load_diabetes(return_X_y=True)
    reg = lgb.LGBMRegressor(n_estimators=10, verbose=-1).fit(x_diab, y_diab)
    reg.booster_.save_model(root / "diabetes.txt")
    (root / "notes.txt").write_text("tree\nthis is not a model\n")

    server = serve(root)
    with server.client() as c:
        names = {r["name"] for r in c.post("/v2/repository/index").json()}
        assert names == {"iris", "cancer", "diabetes"}
        assert c.get("/v2/models/iris").json()["platform"] == "lightgbm"

        d = describe(c, "iris")
        assert d["inputs"] == [{"name": "input", "type": "float64", "shape": [-1, 4]}]
        assert d["outputs"] == [{"name": "label", "type": "int64", "shape": [-1]},
                                {"name": "probabilities", "type": "float32", "shape": [-1, 3]}]
        x = x_iris[[0, 60, 120, 149]]
        check_served(c, "iris", {"input": x}, {"label": multi.predict(x), "probabilities": multi.predict_proba(x)})

        d = describe(c, "cancer")
        # LightGBM stores feature names with spaces replaced by underscores
        assert [i["name"] for i in d["inputs"]] == [col.replace(" ", "_") for col in cancer.data.columns]
        assert d["outputs"][1] == {"name": "probabilities", "type": "float32", "shape": [-1, 2]}
        part = cancer.data.iloc[[0, 19, 100, 568]]
        feed = {col.replace(" ", "_"): part[col].to_numpy() for col in part.columns}
        check_served(c, "cancer", feed, {"label": binary.predict(part), "probabilities": binary.predict_proba(part)})

        d = describe(c, "diabetes")
        assert d["outputs"] == [{"name": "prediction", "type": "float64", "shape": [-1]}]
        x = x_diab[:5]
        check_served(c, "diabetes", {"input": x}, {"prediction": reg.predict(x)})


def test_formats_command_lists_the_tabular_formats() -> None:
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "formats"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for name in ("sklearn", "xgboost", "lightgbm"):
        assert "available" in lines[name]
