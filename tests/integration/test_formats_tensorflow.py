"""TensorFlow SavedModels built here (tf.Module with several signatures, strings, a Keras export), served for real.

Every answer is checked against TensorFlow's own: the loaded SavedModel's signature called in this process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlport.errors import MlportError
from mlport.formats.base import LoadOptions, MissingExtra
from mlport.formats.tensorflow import SavedModelFormat
from tests.builders_tf import iris, keras_iris, text_module, two_signature_module
from tests.integration.test_formats_tabular import describe, index_row

pytestmark = pytest.mark.slow

RTOL = 1e-5
ATOL = 1e-6
_OIP = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64", "object": "BYTES"}


# ------------------------------------------------------------------------- checks
def _plain(value: Any) -> Any:
    """A library value as JSON would carry it: bytes as text, numpy as lists."""
    arr = np.asarray(value)
    if arr.dtype.kind in "OS":
        return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(arr).tolist()
    return arr.tolist()


def same(got: Any, want: Any, what: str) -> None:
    want = np.asarray(want)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=RTOL, atol=ATOL, err_msg=what)
    else:
        assert (got.tolist() if isinstance(got, np.ndarray) else got) == _plain(want), what


def _py(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _oip_inputs(feed: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{"name": k, "shape": list(v.shape), "datatype": _OIP[str(v.dtype)], "data": v.ravel().tolist()}
            for k, v in feed.items()]


def _rows(feed: dict[str, np.ndarray]) -> list[Any]:
    n = len(next(iter(feed.values())))
    if len(feed) == 1:
        return _py(next(iter(feed.values())))
    return [{k: _py(v[i]) for k, v in feed.items()} for i in range(n)]


def check_predictions(c: httpx.Client, name: str, feed: dict[str, np.ndarray], want: dict[str, np.ndarray],
                      signature: str | None = None) -> None:
    """OIP v2 infer and TF Serving predict (row and columnar) give ``want``; eval too for the default signature."""
    n = len(next(iter(feed.values())))
    extra = {"signature_name": signature} if signature else {}
    # OIP v2
    body: dict[str, Any] = {"inputs": _oip_inputs(feed)}
    if signature:
        body["parameters"] = {"signature_name": signature}
    r = c.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == set(want)
    for out, w in want.items():
        assert outs[out]["shape"] == list(w.shape), out
        data = np.asarray(outs[out]["data"], dtype=object if w.dtype.kind in "OS" else None)
        same(data.reshape(w.shape), w, f"{name} infer {out}")
    # TF Serving, row format
    r = c.post(f"/v1/models/{name}:predict", json={"instances": _rows(feed), **extra})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert len(rows) == n
    for out, w in want.items():
        same([row[out] for row in rows] if len(want) > 1 else rows, w, f"{name} predict rows {out}")
    # TF Serving, columnar format
    columns: Any = {k: _py(v) for k, v in feed.items()}
    r = c.post(f"/v1/models/{name}:predict", json={"inputs": columns, **extra})
    assert r.status_code == 200, r.text
    got = r.json()["outputs"]
    for out, w in want.items():
        same(got[out] if len(want) > 1 else got, w, f"{name} predict columns {out}")
    if signature:
        return
    # native eval: a batch
    r = c.post(f"/models/{name}/eval", json={k: _py(v) for k, v in feed.items()})
    assert r.status_code == 200, r.text
    for out, w in want.items():
        same(r.json()[out], w, f"{name} eval {out}")


def check_instance(c: httpx.Client, name: str, one: dict[str, np.ndarray], want: dict[str, np.ndarray],
                   signature: str | None = None) -> None:
    """One instance (a batch of one, and for eval the bare instance) gives ``want`` (the library on that batch)."""
    check_predictions(c, name, one, want, signature)
    if signature:
        return
    r = c.post(f"/models/{name}/eval", json={k: _py(v[0]) for k, v in one.items()})
    assert r.status_code == 200, r.text
    for out, w in want.items():
        same(r.json()[out], w[0], f"{name} eval single {out}")


def run_signature(path: Path, signature: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TensorFlow's own answer: the SavedModel's signature called on ``feed``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures[signature]
    out = fn(**{k: tf.constant(v, dtype=tf.string if v.dtype == object else None) for k, v in feed.items()})
    return {k: v.numpy() for k, v in out.items()}


def check_model(c: httpx.Client, name: str, path: Path, feed: dict[str, np.ndarray],
                signature: str = "serving_default", default: bool = True) -> None:
    """A batch and a single instance of ``feed``, against the library."""
    chosen = None if default else signature
    check_predictions(c, name, feed, run_signature(path, signature, feed), chosen)
    one = {k: v[-1:] for k, v in feed.items()}
    check_instance(c, name, one, run_signature(path, signature, one), chosen)


# ------------------------------------------------------------------------- SavedModels
def test_savedmodels_serve_every_signature(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    iris_path = two_signature_module(root / "iris" / "1")
    text_path = text_module(root / "text")  # an unversioned model folder
    exported = root / "exported" / "1"
    keras_model = keras_iris(epochs=3)
    keras_model.export(str(exported))
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"\x08\x01 this is not a graph")

    server = serve(root)
    x, _ = iris()
    batch = x[[0, 60, 120, 149]]
    with server.client() as c:
        assert c.get("/v2/models/iris").json()["platform"] == "tensorflow_savedmodel"
        d = describe(c, "iris")
        assert d["inputs"] == [{"name": "x", "type": "float32", "shape": [-1, 4]}]
        assert d["outputs"] == [{"name": "label", "type": "int64", "shape": [-1]},
                                {"name": "probabilities", "type": "float32", "shape": [-1, 3]}]
        check_model(c, "iris", iris_path, {"x": batch})
        temperature = np.asarray([1.0, 2.0, 0.5, 4.0], dtype=np.float32)
        check_model(c, "iris", iris_path, {"features": batch, "temperature": temperature}, "scores", default=False)
        # the labels are iris species, as the regression says
        assert c.post("/models/iris/eval", json={"x": batch.tolist()}).json()["label"] == [0, 1, 2, 2]

        # TF Serving metadata lists both signatures with their own tensors
        meta = c.get("/v1/models/iris/metadata").json()["metadata"]["signature_def"]["signature_def"]
        assert set(meta) == {"serving_default", "scores"}
        assert set(meta["scores"]["inputs"]) == {"features", "temperature"}
        assert meta["scores"]["inputs"]["temperature"]["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in meta["scores"]["inputs"]["features"]["tensor_shape"]["dim"]] == ["-1", "4"]
        assert set(meta["scores"]["outputs"]) == {"logits"}
        assert set(meta["serving_default"]["outputs"]) == {"label", "probabilities"}

        # an unknown signature is a clear 400 on both APIs; the inputs of the other signature are refused
        r = c.post("/v1/models/iris:predict", json={"signature_name": "nope", "instances": batch.tolist()})
        assert r.status_code == 400
        assert "signature 'nope' is not served" in r.json()["error"] and "'scores'" in r.json()["error"]
        r = c.post("/v2/models/iris/infer", json={"inputs": _oip_inputs({"x": batch}),
                                                  "parameters": {"signature_name": "nope"}})
        assert r.status_code == 400 and "'serving_default'" in r.json()["error"]
        r = c.post("/v2/models/iris/infer", json={"inputs": _oip_inputs({"x": batch}),
                                                  "parameters": {"signature_name": "scores"}})
        assert r.status_code == 400 and "'x'" in r.json()["error"]

        # strings in and out (BYTES), including non-ASCII text and an empty string
        d = describe(c, "text")
        assert d["inputs"] == [{"name": "text", "type": "string", "shape": [-1]}]
        assert d["outputs"] == [{"name": "bucket", "type": "int64", "shape": [-1]},
                                {"name": "length", "type": "int32", "shape": [-1]},
                                {"name": "upper", "type": "string", "shape": [-1]}]
        words = np.asarray(["setosa", "Grüße", "", "versicolor"], dtype=object)
        check_model(c, "text", text_path, {"text": words})

        # a Keras model exported as a SavedModel (signatures serving_default and serve)
        meta = c.get("/v1/models/exported/metadata").json()["metadata"]["signature_def"]["signature_def"]
        assert set(meta) == {"serving_default", "serve"}
        d = describe(c, "exported")
        assert d["inputs"] == [{"name": "features", "type": "float32", "shape": [-1, 4]}]
        check_model(c, "exported", exported, {"features": batch})
        check_model(c, "exported", exported, {"features": batch}, "serve", default=False)

    row = index_row(server, "broken")
    assert row["state"] == "UNAVAILABLE"
    assert "TensorFlow could not load the SavedModel" in row["reason"] and "\n" not in row["reason"]
    log = server.log()
    assert "model iris version 1 ready (tensorflow" in log
    # TensorFlow's start-up lines stay out of the server log (TF_CPP_MIN_LOG_LEVEL defaults to 2)
    assert "oneDNN custom operations" not in log and "absl::InitializeLog" not in log
    assert "Traceback" not in log


def test_savedmodel_links_stay_inside_the_folder(serve, tmp_path: Path) -> None:
    outside = two_signature_module(tmp_path / "elsewhere")
    model = tmp_path / "models" / "linked"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes((outside / "saved_model.pb").read_bytes())
    (model / "variables").symlink_to(outside / "variables", target_is_directory=True)
    with pytest.raises(MlportError, match="links outside the model folder"):
        SavedModelFormat().load(model, LoadOptions())


def test_thread_pools_and_quiet_start(tmp_path: Path) -> None:
    """The first load sizes TensorFlow's pools from intra_op_threads; start-up lines obey TF_CPP_MIN_LOG_LEVEL."""
    model = two_signature_module(tmp_path / "iris")
    script = (
        "from pathlib import Path\n"
        "from mlport.formats.base import LoadOptions\n"
        "from mlport.formats.tensorflow import SavedModelFormat\n"
        f"ev = SavedModelFormat().load(Path({str(model)!r}), LoadOptions(intra_op_threads=1, "
        "options={'inter_op_threads': 2}))\n"
        "import tensorflow as tf\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2"]
    assert "oneDNN custom operations" not in done.stderr and "absl::InitializeLog" not in done.stderr
    # the operator's own setting wins: level 0 shows TensorFlow's informational lines
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert done.returncode == 0, done.stderr
    assert re.search(r"^I\d{4} ", done.stderr, re.MULTILINE), done.stderr


# ------------------------------------------------------------------------- missing extra
def test_missing_tensorflow_says_how_to_install(serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "models" / "iris"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"not read")
    # not installed: found by nobody
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert not SavedModelFormat.available()
    with pytest.raises(MissingExtra) as err:
        SavedModelFormat().load(model, LoadOptions())
    assert str(err.value) == "the tensorflow format needs tensorflow: pip install 'mlport[tensorflow]'"
    script = ("import sys; sys.modules['tensorflow'] = None\n"
              "from mlport.cli.main import main\n"
              f"raise SystemExit(main(['describe', {str(model)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["iris"]["error"] == (
        "the tensorflow format needs tensorflow: pip install 'mlport[tensorflow]'")

    # installed but not importable (a broken install): the server says the same, in one line, and keeps running
    shadow = tmp_path / "shadow" / "tensorflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('libtensorflow_framework.so.2: cannot open shared file')\n")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    server = serve(model, wait_ready=False, env={"PYTHONPATH": path})
    row = index_row(server, "iris")
    assert row["state"] == "UNAVAILABLE"
    assert row["reason"] == (
        "the tensorflow format needs tensorflow, which could not be imported "
        "(libtensorflow_framework.so.2: cannot open shared file): pip install 'mlport[tensorflow]'"
    )
    with server.client() as c:
        r = c.post("/models/iris/eval", json={"x": [[1, 2, 3, 4]]})
        assert r.status_code == 503 and "pip install 'mlport[tensorflow]'" in r.json()["error"]
    assert "Traceback" not in server.log()
