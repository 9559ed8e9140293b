"""XGBoost and LightGBM models with categorical features (pandas ``category`` columns), served by category value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.test_formats_tabular import check_served, describe

pytestmark = pytest.mark.slow


def _frame(n: int, seed: int) -> tuple[Any, np.ndarray]:
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "color": pd.Categorical(rng.choice(["red", "green", "blue", "violet"], n),
                                categories=["red", "green", "blue", "violet"]),
        "x": rng.normal(size=n),
        "size": pd.Categorical(rng.choice([1, 5, 7], n), categories=[7, 1, 5]),
    })
    y = ((frame["color"] == "red") | (frame["x"] > 1.0) | (frame["size"] == 7)).to_numpy().astype(int)
    return frame, y


def _queries() -> Any:
    """Rows to ask: every category, and a missing color (an empty string on the wire)."""
    import pandas as pd

    colors = ["red", "green", "blue", "violet", None, "blue"]
    return pd.DataFrame({
        "color": pd.Categorical(colors, categories=["red", "green", "blue", "violet"]),
        "x": [0.0, 2.0, -1.0, 0.5, 0.1, -0.3],
        "size": pd.Categorical([1, 5, 7, 1, 5, 7], categories=[7, 1, 5]),
    })


def _wire(frame: Any) -> dict[str, np.ndarray]:
    colors = frame["color"].astype(object).where(frame["color"].notna(), "").to_numpy(dtype=object)
    return {"color": colors, "x": frame["x"].to_numpy(dtype=np.float64),
            "size": frame["size"].astype(int).to_numpy(dtype=np.int64)}


def _check(c: Any, name: str, model: Any, x_type: str) -> None:
    d = describe(c, name)
    assert d["inputs"] == [{"name": "color", "type": "string", "shape": [-1]},
                           {"name": "x", "type": x_type, "shape": [-1]},
                           {"name": "size", "type": "int64", "shape": [-1]}]
    q = _queries()
    feed = _wire(q)
    if x_type == "float32":
        feed["x"] = feed["x"].astype(np.float32)
    check_served(c, name, feed, {"label": model.predict(q), "probabilities": model.predict_proba(q)})
    # a missing number: NaN, which TF Serving's JSON allows
    import pandas as pd

    nan_row = pd.DataFrame({"color": pd.Categorical([None], categories=["red", "green", "blue", "violet"]),
                            "x": [np.nan], "size": pd.Categorical([7], categories=[7, 1, 5])})
    r = c.post(f"/v1/models/{name}:predict", content=b'{"instances": [{"color": "", "x": NaN, "size": 7}]}',
               headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"][0]["probabilities"], model.predict_proba(nan_row)[0],
                               rtol=1e-5)
    # a category the model never saw is refused by name, not guessed
    r = c.post(f"/models/{name}/eval", json={"color": ["red", "purple"], "x": [0.0, 0.0], "size": [1, 1]})
    assert r.status_code == 400, r.text
    assert "'purple'" in r.json()["error"] and "'violet'" in r.json()["error"]
    r = c.post(f"/models/{name}/eval", json={"color": ["red"], "x": [0.0], "size": [3]})
    assert r.status_code == 400 and "size" in r.text


def test_xgboost_and_lightgbm_categorical_features(serve, tmp_path: Path) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    root = tmp_path / "models"
    root.mkdir()
    frame, y = _frame(600, 3)
    booster = xgb.XGBClassifier(n_estimators=10, max_depth=3, enable_categorical=True, tree_method="hist")
    booster.fit(frame, y)
    booster.save_model(root / "xgb.json")
    booster.save_model(root / "xgbu.ubj")
    light = lgb.LGBMClassifier(n_estimators=10, min_child_samples=5, verbose=-1).fit(frame, y)
    light.booster_.save_model(root / "lgb.txt")

    server = serve(root)
    with server.client() as c:
        _check(c, "xgb", booster, "float32")
        _check(c, "xgbu", booster, "float32")
        _check(c, "lgb", light, "float64")
