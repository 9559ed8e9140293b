"""The scikit-learn presets (iris, digits, titanic) built into one repository, served by a real server and
checked against onnxruntime; ``mlport presets`` builds them."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlport import presets
from mlport.cli.main import main
from mlport.presets.iris import SPECIES
from tests.builders import ort_run
from tests.conftest import Server

pytestmark = pytest.mark.slow

EXAMPLES = ("iris", "digits", "titanic")
SURVIVAL = ("died", "survived")
IRIS_FIELDS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TITANIC_INPUTS = ["fare", "sex", "embarked", "pclass", "age"]
TITANIC_BATCH = {"fare": [[7], [9]], "sex": [["male"], ["female"]], "embarked": [["Q"], ["S"]],
                 "pclass": [["3"], ["2"]], "age": [[27], [38]]}
TITANIC_SINGLE = {"fare": 7, "sex": "male", "embarked": "Q", "pclass": "3", "age": 27}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return presets.build_all(tmp_path_factory.mktemp("presets"), list(EXAMPLES))


def model_file(repo: Path, name: str) -> Path:
    return repo / name / "1" / "model.onnx"


def check_outputs(got: dict[str, Any], want: dict[str, np.ndarray], labels: tuple[str, ...] | None = None) -> None:
    """``got`` answers what onnxruntime gives, with class indices as ``labels`` when the model names them."""
    assert sorted(got) == ["label", "probabilities"]
    expected = np.asarray(labels)[want["label"]] if labels else want["label"]
    np.testing.assert_array_equal(np.asarray(got["label"]), expected)
    probabilities = np.asarray(got["probabilities"], dtype=np.float32)
    np.testing.assert_allclose(probabilities, want["probabilities"], rtol=1e-6, atol=1e-7)


def unbatched(want: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in want.items()}


def oip_infer(client: Any, name: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    r = client.post(f"/v2/models/{name}/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    return {n: np.asarray(o["data"]).reshape(o["shape"]) for n, o in outputs.items()}


def eval_json(client: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/models/{name}/eval", json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_layout_and_about(repo: Path) -> None:
    for name in EXAMPLES:
        assert model_file(repo, name).is_file()
        assert (repo / name / "model.yaml").is_file()
        assert re.search(r"Held-out accuracy 0\.\d{4} \(\d+ train / \d+ test", (repo / name / "ABOUT.md").read_text())
    about = (repo / "titanic" / "ABOUT.md").read_text()
    assert "titanic3" in about or "SYNTHESIZED" in about
    assert (repo / "digits" / "digit.png").is_file()


def test_iris(serve: Callable[..., Server], repo: Path) -> None:
    path = model_file(repo, "iris")
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
    want = ort_run(path, {"input": x})
    want_one = ort_run(path, {"input": x[:1]})
    server = serve(repo)
    with server.client() as c:
        described = c.get("/models/iris/describe").json()
        assert described["inputs"] == [{"name": f, "type": "float32", "shape": [-1]} for f in IRIS_FIELDS]
        assert described["outputs"] == [
            {"name": "label", "type": "string", "shape": [-1]},  # the species' name
            {"name": "probabilities", "type": "float32", "shape": [-1, 3]},
        ]
        check_outputs(eval_json(c, "iris", {"input": x.tolist()}), want, SPECIES)
        check_outputs(eval_json(c, "iris", {"input": x[0].tolist()}), unbatched(want_one), SPECIES)
        fields = {f: x[:, i].tolist() for i, f in enumerate(IRIS_FIELDS)}
        check_outputs(eval_json(c, "iris", fields), want, SPECIES)
        one = {f: float(x[0, i]) for i, f in enumerate(IRIS_FIELDS)}
        got = eval_json(c, "iris", one)
        assert got["label"] == "setosa"  # the first row is one
        check_outputs(got, unbatched(want_one), SPECIES)
        got = oip_infer(c, "iris", [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "data": x.ravel().tolist()}])
    check_outputs(got, want, SPECIES)


def test_digits(serve: Callable[..., Server], repo: Path) -> None:
    from sklearn.datasets import load_digits

    path = model_file(repo, "digits")
    digits = load_digits()
    images = digits.images[:5].astype(np.float32)[..., np.newaxis]  # [5, 8, 8, 1], values 0..16
    want = ort_run(path, {"image": images})
    want_one = ort_run(path, {"image": images[:1]})
    assert (want["label"] == digits.target[:5]).sum() >= 4
    server = serve(repo)
    with server.client() as c:
        described = c.get("/models/digits/describe").json()
        assert described["inputs"] == [{"name": "image", "type": "float32", "shape": [-1, 8, 8, 1]}]
        assert [o["name"] for o in described["outputs"]] == ["label", "probabilities"]
        assert described["outputs"][1]["shape"] == [-1, 10]
        check_outputs(eval_json(c, "digits", {"image": images.tolist()}), want)
        check_outputs(eval_json(c, "digits", {"image": images[0].tolist()}), unbatched(want_one))
        check_outputs(eval_json(c, "digits", {"image": images[0, ..., 0].tolist()}), unbatched(want_one))
        got = oip_infer(c, "digits", [{"name": "image", "shape": list(images.shape), "datatype": "FP32",
                                       "data": images.ravel().tolist()}])
    check_outputs(got, want)


def titanic_feed(body: dict[str, Any]) -> dict[str, np.ndarray]:
    feed: dict[str, np.ndarray] = {}
    for name, value in body.items():
        arr = np.asarray(value).reshape(-1, 1)
        feed[name] = arr.astype(object) if arr.dtype.kind in "UO" else arr.astype(np.float32)
    return feed


def test_titanic(serve: Callable[..., Server], repo: Path) -> None:
    path = model_file(repo, "titanic")
    want = ort_run(path, titanic_feed(TITANIC_BATCH))
    want_one = ort_run(path, titanic_feed(TITANIC_SINGLE))
    server = serve(repo)
    with server.client() as c:
        described = c.get("/models/titanic/describe").json()
        assert described["inputs"] == [
            {"name": n, "type": "float32" if n in ("fare", "age") else "string", "shape": [-1, 1]}
            for n in TITANIC_INPUTS
        ]
        assert described["outputs"] == [
            {"name": "label", "type": "string", "shape": [-1]},  # died or survived
            {"name": "probabilities", "type": "float32", "shape": [-1, 2]},
        ]
        got = eval_json(c, "titanic", TITANIC_BATCH)
        check_outputs(got, want, SURVIVAL)
        assert got["label"] == ["died", "survived"]  # a young third-class man from Queenstown; a second-class woman
        got = eval_json(c, "titanic", TITANIC_SINGLE)
        assert got["label"] == "died"
        check_outputs(got, unbatched(want_one), SURVIVAL)
        feed = titanic_feed(TITANIC_BATCH)
        inputs = [
            {"name": n, "shape": [2, 1], "datatype": "BYTES" if feed[n].dtype == object else "FP32",
             "data": feed[n].ravel().tolist()}
            for n in TITANIC_INPUTS
        ]
        got = oip_infer(c, "titanic", inputs)
    check_outputs(got, want, SURVIVAL)


def test_existing_models_are_kept(repo: Path) -> None:
    before = {name: model_file(repo, name).stat().st_mtime_ns for name in EXAMPLES}
    assert presets.build_all(repo, list(EXAMPLES)) == repo
    assert {name: model_file(repo, name).stat().st_mtime_ns for name in EXAMPLES} == before


def test_force_rebuilds_the_same_bytes(repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    for name in EXAMPLES:
        model_file(copy, name).write_bytes(b"stale")
    presets.build_all(copy, list(EXAMPLES), force=True)
    for name in EXAMPLES:
        assert model_file(copy, name).read_bytes() == model_file(repo, name).read_bytes()


def test_missing_extra_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    assert main(["presets", "build", "iris", "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'mlport[examples]'" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_digit_png_beside_the_model_is_scaled_onto_the_training_range(serve: Callable[..., Server],
                                                                          repo: Path) -> None:
    from PIL import Image

    png = (repo / "digits" / "digit.png").read_bytes()
    pixels = np.asarray(Image.open(repo / "digits" / "digit.png"))
    assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
    digit = int(re.findall(r"`digit.png` is a held-out (\d)", (repo / "digits" / "ABOUT.md").read_text())[0])
    scaled = (pixels.astype(np.float32) * np.float32(0.0627451))[np.newaxis, ..., np.newaxis]
    want = ort_run(model_file(repo, "digits"), {"image": scaled})
    server = serve(repo)
    with server.client() as c:
        r = c.post("/models/digits/eval", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["label"] == digit == want["label"][0]
    np.testing.assert_allclose(got["probabilities"], want["probabilities"][0], rtol=1e-5, atol=1e-6)
