"""MLflow model folders written by the real ``mlflow`` package, served by ``mlport serve`` and uploaded to the hub."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.builders import ort_run
from tests.conftest import Server, start_server
from tests.hubutil import HubProc

pytestmark = [
    pytest.mark.slow,
    # mlflow's own advice while saving (type hints, input examples) and its pandas deprecations
    pytest.mark.filterwarnings("ignore::Warning:mlflow.*"),
]

PYFUNC_CODE = '''
import mlflow.pyfunc


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["a"] * 2 + model_input["b"]
'''


def _iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True, as_frame=True)
    return x, y


def build(root: Path) -> dict[str, Any]:
    """The folders (and the fitted models, to compare with) of every MLflow flavor the tests serve."""
    import mlflow.onnx
    import mlflow.pyfunc
    import mlflow.sklearn
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x, y = _iris()
    example = x.iloc[:3]
    fitted = LogisticRegression(max_iter=500).fit(x, y)
    mlflow.sklearn.save_model(fitted, str(root / "sk_skops"), serialization_format="skops",
                              signature=infer_signature(x, fitted.predict(x)), input_example=example)
    mlflow.sklearn.save_model(fitted, str(root / "sk_pickle"), serialization_format="cloudpickle",
                              signature=infer_signature(x, fitted.predict(x)))

    booster = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(x, y)
    mlflow.xgboost.save_model(booster, str(root / "xgb"), signature=infer_signature(x, booster.predict_proba(x)),
                              input_example=example)

    onx = to_onnx(fitted, initial_types=[("input", FloatTensorType([None, 4]))],
                  options={id(fitted): {"zipmap": False}}, target_opset=17)
    # columns in the signature, one [N, 4] matrix in the model: mlport stacks the columns
    mlflow.onnx.save_model(onx, str(root / "onnx_columns"), signature=infer_signature(x.astype(np.float32)),
                           input_example=example.astype(np.float32))
    # an unnamed tensor in the signature, with an ndarray example
    matrix = x.to_numpy(np.float32)
    mlflow.onnx.save_model(onx, str(root / "onnx_tensor"), signature=infer_signature(matrix),
                           input_example=matrix[:2])

    code = root.parent / "pyfunc_code"
    code.mkdir(exist_ok=True)
    (code / "doubler_model.py").write_text(PYFUNC_CODE, encoding="utf-8")
    sys.path.insert(0, str(code))
    try:
        import doubler_model

        frame = pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 0.25]})
        mlflow.pyfunc.save_model(str(root / "custom"), python_model=doubler_model.Doubler(),
                                 code_paths=[str(code / "doubler_model.py")],
                                 signature=infer_signature(frame, np.array([2.5, 4.25])))
    finally:
        sys.path.remove(str(code))
    return {"x": x, "sklearn": fitted, "xgb": booster, "onnx": root / "onnx_columns" / "model.onnx"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mlflow") / "models"
    root.mkdir()
    return root, build(root)


@pytest.fixture(scope="module")
def server(built: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(built[0], "--poll-interval", "0", log_dir=tmp_path_factory.mktemp("logs"),
                     wait_ready=False, timeout=120)
    try:
        yield s
    finally:
        s.stop()


def _status(server: Server, name: str) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 120
    with server.client() as client:
        while time.monotonic() < deadline:
            row = client.get(f"/v1/models/{name}").json()["model_version_status"][0]
            if row["state"] in ("AVAILABLE", "END"):
                return row  # type: ignore[no-any-return]
            time.sleep(0.1)
    raise AssertionError(f"{name} did not settle:\n{server.log()}")


def _columns(x: Any, n: int) -> dict[str, list[float]]:
    return {c: x[c].iloc[:n].tolist() for c in x.columns}


def test_flavors_serve_with_the_mlmodel_signature(server: Server, built: tuple[Path, dict[str, Any]]) -> None:
    _, models = built
    x = models["x"]
    for name in ("sk_skops", "xgb", "onnx_columns", "onnx_tensor"):
        assert _status(server, name)["state"] == "AVAILABLE", (name, server.log())
    client = server.client()
    # column-based signatures: one input per column, named as in MLmodel
    for name, own in (("sk_skops", models["sklearn"].predict_proba(x.iloc[:5])),
                      ("xgb", models["xgb"].predict_proba(x.iloc[:5])),
                      ("onnx_columns", ort_run(models["onnx"], {"input": x.iloc[:5].to_numpy(np.float32)})
                       ["probabilities"])):
        described = client.get(f"/models/{name}/describe").json()
        assert [i["name"] for i in described["inputs"]] == list(x.columns), name
        r = client.post(f"/v1/models/{name}:predict", json={"inputs": _columns(x, 5)})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"]["probabilities"], own, rtol=1e-5, atol=1e-6)
        rows = [dict(zip(x.columns, row, strict=True)) for row in x.iloc[:5].to_numpy().tolist()]
        r = client.post(f"/v1/models/{name}:predict", json={"instances": rows})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([p["probabilities"] for p in r.json()["predictions"]], own, rtol=1e-5, atol=1e-6)
    # a tensor-based signature without a name takes the model's input name
    r = client.post("/v1/models/onnx_tensor:predict", json={"inputs": x.iloc[:2].to_numpy().tolist()})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]["label"] == models["sklearn"].predict(x.iloc[:2]).tolist()
    missing = client.post("/v1/models/xgb:predict", json={"inputs": {"sepal length (cm)": [1.0]}})
    assert missing.status_code == 400 and "missing input" in missing.text
    client.close()


def test_code_running_folders_need_trust(server: Server, built: tuple[Path, dict[str, Any]],
                                         tmp_path: Path) -> None:
    pickled = _status(server, "sk_pickle")
    assert pickled["state"] == "END" and "trusted" in pickled["status"]["error_message"]
    custom = _status(server, "custom")
    message = custom["status"]["error_message"]
    assert custom["state"] == "END" and "python_function" in message and "trusted" in message, message

    trusted = start_server(built[0] / "custom", "--trusted", log_dir=tmp_path, timeout=120)
    try:
        with trusted.client() as client:
            r = client.post("/v1/models/custom:predict", json={"inputs": {"a": [1.0, 3.0], "b": [0.5, 1.0]}})
        assert r.status_code == 200, r.text + trusted.log()
        assert r.json()["outputs"] == [2.5, 7.0]
    finally:
        trusted.stop()


def test_a_failing_input_example_stops_the_load(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(built[0] / "xgb", folder)
    (folder / "input_example.json").write_text('{"columns": ["nope"], "data": [[1.0]]}', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "mlport.cli.main", "describe", str(folder)], capture_output=True,
                       text=True, timeout=300)
    assert "input example does not fit" in r.stdout + r.stderr, r.stdout + r.stderr


def test_formats_lists_mlflow() -> None:
    r = subprocess.run([sys.executable, "-m", "mlport.cli.main", "formats"], capture_output=True, text=True,
                       timeout=120)
    assert any(line.split()[:2] == ["mlflow", "available"] for line in r.stdout.splitlines()), r.stdout


def test_hub_upload_of_an_mlflow_folder(hub: HubProc, built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from tests.hubutil import ADMIN_PASSWORD
    from tests.integration.test_hub_cli import mlport, ok_json

    r = mlport(tmp_path, "login", "--hub", hub.url, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    ok_json(tmp_path, "models", "create", "flowers")
    version = ok_json(tmp_path, "versions", "upload", "flowers", str(built[0] / "xgb"))
    assert version["format"] == "mlflow" and version["kind"] == "folder", version
    names = [i["name"] for i in version["signature"]["inputs"]]
    assert names == list(built[1]["x"].columns), version
