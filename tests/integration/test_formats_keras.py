"""Keras models built and trained here, saved as .keras and .h5, served for real, checked against Keras itself.

Safe mode: a Lambda layer or a custom object is refused unless the model is trusted, for both file kinds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlport.formats.base import LoadOptions, MissingExtra
from mlport.formats.keras import KerasFormat
from tests.builders_tf import iris, keras_custom, keras_iris, keras_lambda, keras_multi
from tests.integration.test_formats_tabular import describe, index_row, mlport_describe
from tests.integration.test_formats_tensorflow import check_instance, check_predictions

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]


def _loss_class() -> Any:
    """A loss class of this module's own: it lands in the saved compile configuration, which serving never builds."""
    import keras

    @keras.saving.register_keras_serializable(package="mlport_test")
    class SquaredError(keras.losses.Loss):
        def call(self, y_true: Any, y_pred: Any) -> Any:
            return keras.ops.mean((y_true - y_pred) ** 2, axis=-1)

    return SquaredError


def keras_predict(path: Path, feed: dict[str, np.ndarray], names: list[str], trusted: bool = False,
                  custom_objects: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Keras' own answer: the saved file loaded by Keras and ``predict`` on ``feed``; outputs named ``names``."""
    import keras

    model = keras.saving.load_model(str(path), compile=False, safe_mode=not trusted, custom_objects=custom_objects)
    x: Any = next(iter(feed.values())) if len(feed) == 1 else feed
    out = model.predict(x, verbose=0)
    flat = list(out) if isinstance(out, list | tuple) else [out]
    return {n: np.asarray(v) for n, v in zip(names, flat, strict=True)}


def check_keras(c: Any, name: str, path: Path, feed: dict[str, np.ndarray], names: list[str], **kw: Any) -> None:
    check_predictions(c, name, feed, keras_predict(path, feed, names, **kw))
    one = {k: v[-1:] for k, v in feed.items()}
    check_instance(c, name, one, keras_predict(path, one, names, **kw))


def _multi_feed() -> dict[str, np.ndarray]:
    x, _ = iris()
    codes = np.asarray([[1, 2, 3], [0, 9, 4], [5, 5, 5], [7, 0, 2]], dtype=np.int32)
    return {"measures": x[[0, 50, 100, 149]], "codes": codes}


# ------------------------------------------------------------------------- models served
def test_keras_models_match_keras(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    model = keras_iris(epochs=5)
    # compiled with a custom loss: the file names its module, yet serving loads without trust (compile=False)
    model.compile(optimizer="adam", loss=_loss_class()())
    model.save(root / "iris.keras")
    model.save(root / "iris_legacy.h5")
    with zipfile.ZipFile(root / "iris.keras") as zf:
        assert f'"module": "{__name__}"' in zf.read("config.json").decode()
    multi = keras_multi()
    multi.save(root / "multi.keras")
    multi.save(root / "multi_legacy.h5")
    (root / "notes.h5").write_bytes(b"not an HDF5 file")  # not claimed: no HDF5 signature

    server = serve(root)
    x, _ = iris()
    batch = x[[0, 60, 120, 149]]
    with server.client() as c:
        names = {r["name"] for r in c.post("/v2/repository/index").json()}
        assert names == {"iris", "iris_legacy", "multi", "multi_legacy"}
        assert c.get("/v2/models/iris").json()["platform"] == "keras"
        for name, path in (("iris", root / "iris.keras"), ("iris_legacy", root / "iris_legacy.h5")):
            d = describe(c, name)
            assert d["inputs"] == [{"name": "features", "type": "float32", "shape": [-1, 4]}]
            assert d["outputs"] == [{"name": "species", "type": "float32", "shape": [-1, 3]}]
            check_keras(c, name, path, {"features": batch}, ["species"])
        # trained: it tells the species apart
        probs = np.asarray(c.post("/models/iris/eval", json={"features": x.tolist()}).json()["species"])
        assert (probs.argmax(axis=1) == iris()[1]).mean() > 0.5

        feed = _multi_feed()
        for name, path in (("multi", root / "multi.keras"), ("multi_legacy", root / "multi_legacy.h5")):
            d = describe(c, name)
            assert d["inputs"] == [{"name": "measures", "type": "float32", "shape": [-1, 4]},
                                   {"name": "codes", "type": "int32", "shape": [-1, 3]}]
            assert d["outputs"] == [{"name": "score", "type": "float32", "shape": [-1, 2]},
                                    {"name": "flag", "type": "float32", "shape": [-1, 1]}]
            check_keras(c, name, path, feed, ["score", "flag"])
        # a missing input and a wrong shape are clear 400s
        r = c.post("/models/multi/eval", json={"measures": feed["measures"].tolist()})
        assert r.status_code == 400 and "codes" in r.json()["error"]
        r = c.post("/models/multi/eval", json={"measures": [[1, 2, 3]], "codes": [[1, 2, 3]]})
        assert r.status_code == 400 and "measures" in r.json()["error"]
    log = server.log()
    assert "oneDNN custom operations" not in log and "Traceback" not in log


# ------------------------------------------------------------------------- safe mode
def test_lambda_layer_needs_trust(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    model = keras_lambda()
    model.save(root / "lam.keras")
    model.save(root / "lam_legacy.h5")
    x, _ = iris()
    batch = x[[1, 51, 101]]

    server = serve(root, wait_ready=False)
    for name, file in (("lam", "lam.keras"), ("lam_legacy", "lam_legacy.h5")):
        row = index_row(server, name)
        assert row["state"] == "UNAVAILABLE"
        assert row["reason"] == (
            f"{file} holds code that loading would run: Lambda layer 'double'; mark the model trusted "
            "(--trusted or 'trusted: true' in its config) if you trust its source"
        )
    with server.client() as c:
        assert c.get("/v2/models/lam/ready").status_code != 200
        r = c.post("/models/lam/eval", json={"features": batch.tolist()})
        assert r.status_code == 503 and "Lambda layer 'double'" in r.json()["error"]
        r = c.post("/v2/repository/models/lam/load")
        assert r.status_code >= 400 and "Lambda layer 'double'" in r.json()["error"]
    assert "Traceback" not in server.log()
    done = mlport_describe(root / "lam_legacy.h5")
    assert done.returncode == 1
    assert "Lambda layer 'double'" in json.loads(done.stdout)["lam_legacy"]["error"]

    # trusted in the model's own config beside the file
    trusted_root = tmp_path / "trusted"
    trusted_root.mkdir()
    (trusted_root / "lam.keras").write_bytes((root / "lam.keras").read_bytes())
    (trusted_root / "lam.model.yaml").write_text("trusted: true\n")
    server = serve(trusted_root)
    with server.client() as c:
        check_keras(c, "lam", trusted_root / "lam.keras", {"features": batch}, ["species"], trusted=True)
    # trusted on the command line
    server = serve(root / "lam_legacy.h5", "--trusted")
    with server.client() as c:
        check_keras(c, "lam_legacy", root / "lam_legacy.h5", {"features": batch}, ["species"], trusted=True)


def test_custom_objects_need_trust_and_their_module(serve, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    model = keras_custom(lib)
    mark = lib / "custom_layers.imported"
    root = tmp_path / "models"
    root.mkdir()
    model.save(root / "scaled.keras")
    model.save(root / "scaled_legacy.h5")
    mark.unlink()
    pythonpath = os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")])

    server = serve(root, wait_ready=False, env={"PYTHONPATH": pythonpath})
    row = index_row(server, "scaled")
    assert row["state"] == "UNAVAILABLE"
    assert "scaled.keras holds code that loading would run: custom object 'custom_layers.Scale'" in row["reason"]
    row = index_row(server, "scaled_legacy")
    assert row["state"] == "UNAVAILABLE"
    assert "custom object 'mlport_test>Scale'" in row["reason"] and "--trusted" in row["reason"]
    assert not mark.exists(), "an untrusted model made the server import its module"

    # trusted: the module named in the .keras file is imported; an .h5 file names it in the model options
    (root / "scaled_legacy.model.yaml").write_text("trusted: true\noptions: {modules: [custom_layers]}\n")
    server = serve(root, "--trusted", env={"PYTHONPATH": pythonpath})
    assert mark.exists()
    x, _ = iris()
    batch = x[[2, 52, 102]]
    import custom_layers  # type: ignore[import-not-found]  # put on sys.path by keras_custom

    objects = {"mlport_test>Scale": custom_layers.Scale}
    with server.client() as c:
        for name, file in (("scaled", "scaled.keras"), ("scaled_legacy", "scaled_legacy.h5")):
            assert describe(c, name)["outputs"] == [{"name": "species", "type": "float32", "shape": [-1, 3]}]
            check_keras(c, name, root / file, {"features": batch}, ["species"], trusted=True,
                        custom_objects=objects)

    # trusted, but the module is nowhere to be imported: a clear error, not a crash (one model file is served with
    # strict readiness, so the server is live but never ready)
    server = serve(root / "scaled.keras", "--trusted", wait_ready=False)
    row = index_row(server, "scaled")
    assert row["state"] == "UNAVAILABLE"
    assert row["reason"] == ("scaled.keras uses custom objects from module 'custom_layers', which could not be "
                             "imported: No module named 'custom_layers'")


# ------------------------------------------------------------------------- missing extra
def test_missing_keras_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "iris.keras"
    keras_iris(epochs=1).save(path)
    monkeypatch.setitem(sys.modules, "keras", None)
    assert not KerasFormat.available()
    with pytest.raises(MissingExtra) as err:
        KerasFormat().load(path, LoadOptions())
    assert str(err.value) == "the keras format needs keras: pip install 'mlport[keras]'"
    script = ("import sys; sys.modules['keras'] = None\n"
              "from mlport.cli.main import main\n"
              f"raise SystemExit(main(['describe', {str(path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["iris"]["error"] == "the keras format needs keras: pip install 'mlport[keras]'"
