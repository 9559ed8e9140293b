"""model.yaml over a served model: a declared signature (renames, datatypes, shapes) and class labels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http
from sklearn.datasets import load_iris

from tests.builders import iris_onnx, ort_run
from tests.conftest import Server

SPECIES = ["setosa", "versicolor", "virginica"]


def _iris_repo(root: Path, config: str) -> Path:
    folder = root / "iris"
    model = iris_onnx(folder / "1" / "model.onnx")
    (folder / "model.yaml").write_text(config)
    return model


def _index(server: Server) -> dict[str, dict[str, str]]:
    with server.client() as c:
        return {r["name"]: r for r in c.post("/v2/repository/index").json()}


def test_declared_signature_and_labels(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    model = _iris_repo(root, """
signature:
  inputs:
    - name: input
      alias: measurements
      datatype: FP64
      shape: [-1, 4]
  outputs:
    - name: label
      alias: species
    - name: probabilities
      datatype: FP64
labels:
  species: species.txt
""")
    (root / "iris" / "species.txt").write_text("\n".join(SPECIES) + "\n")
    x, _ = load_iris(return_X_y=True)
    rows = x[::15]
    want = ort_run(model, {"input": rows.astype(np.float32)})
    server = serve(root)
    with server.client() as c:
        d = c.get("/models/iris/describe").json()
        assert d["inputs"] == [{"name": "measurements", "type": "float64", "shape": [-1, 4]}]
        assert {o["name"]: o["type"] for o in d["outputs"]} == {"species": "string", "probabilities": "float64"}

        r = c.post("/models/iris/eval", json={"measurements": rows.tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["species"] == [SPECIES[i] for i in want["label"]]
        np.testing.assert_allclose(body["probabilities"], want["probabilities"], rtol=1e-5)

        # the model's own names are not served any more
        r = c.post("/models/iris/eval", json={"input": rows.tolist()})
        assert r.status_code == 400 and "measurements" in r.text

        meta = c.get("/v2/models/iris").json()
        assert meta["inputs"] == [{"name": "measurements", "datatype": "FP64", "shape": [-1, 4]}]

    # an existing client sends FP64 and gets the labels as BYTES
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        inp = triton_http.InferInput("measurements", list(rows.shape), "FP64")
        inp.set_data_from_numpy(rows.astype(np.float64), binary_data=True)
        result = client.infer("iris", [inp])
        got = result.as_numpy("species")
        assert [v.decode() for v in got.ravel()] == [SPECIES[i] for i in want["label"]]
        assert result.as_numpy("probabilities").dtype == np.float64
    finally:
        client.close()


def test_invalid_declarations_fail_at_load_with_a_clear_reason(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    cases = {
        "unknown": "signature:\n  inputs:\n    - name: nope\n",
        "rank": "signature:\n  inputs:\n    - name: input\n      shape: [-1, 4, 1]\n",
        "fixed": "signature:\n  inputs:\n    - name: input\n      shape: [-1, 5]\n",
        "float_labels": "labels:\n  probabilities: [a, b, c]\n",
        "escape": "labels:\n  label: ../../outside.txt\n",
        "badtype": "signature:\n  inputs:\n    - name: input\n      datatype: FLOAT128\n",
    }
    (tmp_path / "outside.txt").write_text("a\nb\nc\n")
    for name, config in cases.items():
        folder = root / name
        iris_onnx(folder / "1" / "model.onnx")
        (folder / "model.yaml").write_text(config)
    iris_onnx(root / "good" / "1" / "model.onnx")
    server = serve(root)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        index = _index(server)
        if all(index.get(n, {}).get("state") != "LOADING" for n in cases):
            break
        time.sleep(0.2)
    reasons = {n: (index.get(n) or {}).get("reason", "") for n in cases}
    assert index["good"]["state"] == "READY"
    assert "'nope'" in reasons["unknown"] and "input" in reasons["unknown"]
    assert "rank" in reasons["rank"]
    assert "[-1, 5]" in reasons["fixed"]
    assert "integer output" in reasons["float_labels"]
    assert "outside the model folder" in reasons["escape"]
    assert "FLOAT128" in reasons["badtype"]
    for n in cases:
        assert index[n]["state"] != "READY", n


def test_labels_out_of_range_is_an_error_not_a_crash(tmp_path: Path, serve) -> None:
    root = tmp_path / "repo"
    _iris_repo(root, "labels:\n  label: [setosa, versicolor]\n")
    server = serve(root)
    x, _ = load_iris(return_X_y=True)
    with server.client() as c:
        r = c.post("/models/iris/eval", json={"input": x[:2].tolist()})
        assert r.status_code == 200 and r.json()["label"] == ["setosa", "setosa"]
        r = c.post("/models/iris/eval", json={"input": x[-2:].tolist()})
        # the config is wrong, not the request: a server error that says why
        assert r.status_code == 500 and "no label" in r.text
        assert c.get("/v2/health/live").status_code == 200
