"""Python evaluators (model.py) served for real: trust, versions side by side, and models that break."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlport.errors import MlportError
from mlport.formats.base import LoadOptions, UntrustedModel
from mlport.formats.python import PythonFormat
from tests.integration.test_formats_tabular import check_served, describe, index_row, mlport_describe

pytestmark = pytest.mark.slow

# Version 1: nearest class centroid, centroids read from the model folder by load(), a helper module beside it.
CENTROIDS_V1 = '''
import numpy as np

from . import distance


class NearestCentroid:
    signature = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "distances", "datatype": "FP64", "shape": [-1, 3]}],
    }

    def load(self, folder):
        self.centroids = np.load(folder / "centroids.npy")

    def predict(self, inputs):
        d = distance.between(inputs["x"], self.centroids)
        return {"label": np.argmin(d, axis=1), "distances": d}
'''
DISTANCE_V1 = '''
import numpy as np


def between(x, centroids):
    return np.sqrt(((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(axis=2))
'''
# Version 2: same class and helper names, another distance (city block): the two must not share modules.
CENTROIDS_V2 = CENTROIDS_V1
DISTANCE_V2 = '''
import numpy as np


def between(x, centroids):
    return np.abs(x[:, None, :].astype(np.float64) - centroids[None]).sum(axis=2)
'''
# Signature from model.yaml; strings in and out.
SHOUT = '''
import numpy as np


class Shout:
    def predict(self, inputs):
        text = inputs["text"]
        as_str = np.array([t.decode() if isinstance(t, bytes) else t for t in text], dtype=object)
        return {"loud": np.char.upper(as_str.astype(str)).astype(object),
                "length": np.char.str_len(as_str.astype(str)).astype(np.int32)}
'''
SHOUT_YAML = '''
signature:
  inputs:
    - {name: text, datatype: BYTES, shape: [-1]}
  outputs:
    - {name: loud, datatype: BYTES, shape: [-1]}
    - {name: length, datatype: INT64, shape: [-1]}
'''
# Breaks in chosen ways, picked by the first value of the input.
BROKEN = '''
import numpy as np


class Broken:
    signature = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    }

    def predict(self, inputs):
        x = inputs["x"]
        mode = int(x[0, 0])
        if mode == 1:
            raise RuntimeError("boom")
        if mode == 2:
            raise ValueError("x must not start with 2")
        if mode == 3:
            return {"z": x}
        if mode == 4:
            return {"y": x.tolist()}
        if mode == 5:
            return {"y": x[:1]}
        if mode == 6:
            return {"y": np.array(["a"] * x.shape[0])}
        if mode == 7:
            return {"y": x[:, :1]}
        if mode == 8:
            return [x]
        return {"y": x * 2}
'''
MARKER_MODEL = '''
from pathlib import Path

Path({marker!r}).write_text("imported")


class Marked:
    signature = {{"inputs": [{{"name": "x", "datatype": "FP32", "shape": [-1]}}],
                 "outputs": [{{"name": "y", "datatype": "FP32", "shape": [-1]}}]}}

    def predict(self, inputs):
        return {{"y": inputs["x"] + 1}}
'''


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


def _instance(folder: Path, module_name: str) -> Any:
    """The model's class, imported here and called directly: what the server must agree with."""
    spec = importlib.util.spec_from_file_location(module_name, folder / "model.py",
                                                  submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    obj = module.NearestCentroid()
    obj.load(folder)
    return obj


def test_trusted_python_models_serve_and_versions_do_not_clash(serve, tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    centroids = np.stack([x[y == k].mean(axis=0) for k in range(3)])
    root = tmp_path / "models"
    v1 = _write(root / "flowers" / "1", {"model.py": CENTROIDS_V1, "distance.py": DISTANCE_V1})
    v2 = _write(root / "flowers" / "2", {"model.py": CENTROIDS_V2, "distance.py": DISTANCE_V2})
    for folder in (v1, v2):
        np.save(folder / "centroids.npy", centroids)
    (root / "flowers" / "model.yaml").write_text("trusted: true\nversion_policy: {all: true}\n")
    _write(root / "shout" / "1", {"model.py": SHOUT})
    (root / "shout" / "model.yaml").write_text(SHOUT_YAML)

    server = serve(root, "--trusted")
    rows = x[[0, 55, 70, 106, 133, 149]].astype(np.float32)
    direct = {1: _instance(v1, "direct_v1").predict({"x": rows}), 2: _instance(v2, "direct_v2").predict({"x": rows})}
    assert not np.allclose(direct[1]["distances"], direct[2]["distances"])
    with server.client() as c:
        assert c.get("/v2/models/flowers").json()["platform"] == "python"
        assert describe(c, "flowers") == {
            "inputs": [{"name": "x", "type": "float32", "shape": [-1, 4]}],
            "outputs": [{"name": "label", "type": "int64", "shape": [-1]},
                        {"name": "distances", "type": "float64", "shape": [-1, 3]}]}
        check_served(c, "flowers", {"x": rows}, direct[2])
        for version in (1, 2):
            r = c.post(f"/models/flowers/versions/{version}/eval", json={"x": rows.tolist()})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["distances"], direct[version]["distances"], rtol=1e-12)
            assert r.json()["label"] == direct[version]["label"].tolist()

        assert describe(c, "shout") == {
            "inputs": [{"name": "text", "type": "string", "shape": [-1]}],
            "outputs": [{"name": "loud", "type": "string", "shape": [-1]},
                        {"name": "length", "type": "int64", "shape": [-1]}]}
        words = np.array(["hello", "Grün", "ok"], dtype=object)
        check_served(c, "shout", {"text": words},
                     {"loud": np.array(["HELLO", "GRÜN", "OK"], dtype=object), "length": np.array([5, 4, 2])})


def test_untrusted_python_model_never_runs(serve, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    root = tmp_path / "models"
    folder = _write(root / "marked" / "1", {"model.py": MARKER_MODEL.format(marker=str(marker))})

    server = serve(root, wait_ready=False)
    row = index_row(server, "marked")
    assert row["state"] == "UNAVAILABLE"
    assert "model.py is Python code: serving it runs it inside the server" in row["reason"]
    assert "--trusted" in row["reason"]
    with server.client() as c:
        r = c.post("/models/marked/eval", json={"x": [1.0]})
        assert r.status_code == 503 and "is Python code" in r.json()["error"]
    done = mlport_describe(folder / "model.py")
    assert done.returncode != 0 and "is Python code" in done.stdout
    with pytest.raises(UntrustedModel, match="is Python code"):
        PythonFormat().load(folder, LoadOptions())
    assert not marker.exists()
    server.stop()

    # trusted, the file runs (so the check above did prove something)
    trusted = serve(root, "--trusted")
    with trusted.client() as c:
        r = c.post("/models/marked/eval", json={"x": [1.0, 2.5]})
        assert r.status_code == 200 and r.json() == {"y": [2.0, 3.5]}
    assert marker.read_text() == "imported"


def test_broken_python_models_give_clear_errors(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    _write(root / "broken", {"model.py": BROKEN})
    _write(root / "nosig", {"model.py": "class A:\n    def predict(self, inputs):\n        return inputs\n"})
    _write(root / "syntax", {"model.py": "class A:\n    def predict(self inputs):\n        pass\n"})
    _write(root / "crash", {"model.py": "raise SystemExit(3)\n"})
    two = BROKEN + "\n\nclass Other(Broken):\n    pass\n"
    _write(root / "two", {"model.py": two})
    _write(root / "picked" / "1", {"model.py": two})
    (root / "picked" / "model.yaml").write_text("options: {class: Other}\n")
    _write(root / "badload", {"model.py": BROKEN + "\n    def load(self, folder):\n        1 / 0\n"})

    server = serve(root, "--trusted")
    reasons = {n: index_row(server, n) for n in ("nosig", "syntax", "crash", "two", "badload")}
    assert {r["state"] for r in reasons.values()} == {"UNAVAILABLE"}
    assert "model.py: A has no signature" in reasons["nosig"]["reason"]
    assert "signature: {inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]" in reasons["nosig"]["reason"]
    assert "model.py could not be imported: SyntaxError" in reasons["syntax"]["reason"]
    assert "model.py could not be imported: SystemExit: 3" in reasons["crash"]["reason"]
    assert "several classes with a predict method (Broken, Other)" in reasons["two"]["reason"]
    assert "Broken failed to load: ZeroDivisionError: division by zero" in reasons["badload"]["reason"]

    where = "model.py: Broken.predict"
    cases = [
        (1, 500, f"{where} raised RuntimeError: boom"),
        (2, 400, f"{where} refused the input: x must not start with 2"),
        (3, 500, f"{where} did not return output 'y' (it returned 'z')"),
        (4, 500, f"{where}: output 'y' is a list, not a numpy array"),
        (5, 500, f"{where}: output 'y' has 1 rows for a batch of 2"),
        (6, 500, f"{where}: output 'y' holds <U1; the signature declares FP32"),
        (7, 500, f"{where}: output 'y' has shape [2, 1]; the signature declares [-1, 2]"),
        (8, 500, f"{where} returned a list, not a dict of numpy arrays"),
    ]
    with server.client() as c:
        for mode, status, message in cases:
            for model in ("broken", "picked"):
                r = c.post(f"/models/{model}/eval", json={"x": [[mode, 0], [0, 0]]})
                assert r.status_code == status, (mode, r.text)
                want = message if model == "broken" else message.replace("Broken.predict", "Other.predict")
                assert r.json() == {"error": want}
            r = c.post("/v2/models/broken/infer", json={"inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [mode, 0, 0, 0]}]})
            assert r.status_code == status and r.json()["error"] == message
        r = c.post("/models/broken/eval", json={"x": [[0.5, 1], [2, 3]]})
        assert r.status_code == 200 and r.json() == {"y": [[1.0, 2.0], [4.0, 6.0]]}
        assert c.get("/v2/health/live").status_code == 200


def test_python_files_outside_the_folder_are_refused(tmp_path: Path) -> None:
    outside = _write(tmp_path / "elsewhere", {"model.py": BROKEN})
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.py").symlink_to(outside / "model.py")
    assert PythonFormat().detect(folder) and PythonFormat().detect(outside / "model.py")
    assert not PythonFormat().detect(tmp_path / "elsewhere" / "other.py")
    with pytest.raises(MlportError, match=r"model\.py links outside its model folder"):
        PythonFormat().load(folder, LoadOptions(trusted=True))
    ev = PythonFormat().load(outside, LoadOptions(trusted=True))
    out = ev.predict({"x": np.full((3, 2), 0.25, dtype=np.float32)})
    assert out["y"].tolist() == [[0.5, 0.5]] * 3
    ev.close()
