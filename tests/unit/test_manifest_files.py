"""The files a manifest uses, found without loading it, and a manifest file staged for an image with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlport.deploy.packaging import stage_model
from mlport.formats.base import LoadOptions
from mlport.formats.manifest import ManifestError
from mlport.formats.manifest.files import manifest_files
from mlport.formats.registry import default_registry
from mlport.runtime.repository import Repository
from tests.builders import iris_onnx, scale_onnx


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pipeline"
    (root / "steps" / "iris").mkdir(parents=True)
    scale_onnx(root / "steps" / "x2.onnx", 2.0, shape=(None, 4))
    (root / "steps" / "x2.model.yaml").write_text("format: onnx\n")
    iris_onnx(root / "steps" / "iris" / "model.onnx")
    (root / "steps" / "iris" / "model.model.yaml").write_text("labels: {label: names.txt}\n")
    (root / "steps" / "iris" / "names.txt").write_text("setosa\nversicolor\nvirginica\n")
    (root / "inner.yaml").write_text("flow:\n  - model: steps/iris/model.onnx\n    inputs: {input: y}\n")
    (root / "unused.onnx").write_bytes(b"not used")
    (root / "pipeline.yaml").write_text(
        "flow:\n  - {model: steps/x2.onnx, inputs: {x: input}}\n  - manifest: inner.yaml\n")
    return root


def test_every_used_file_and_no_other(folder: Path) -> None:
    used = manifest_files(folder / "pipeline.yaml")
    names = [p.relative_to(folder).as_posix() for p in used.files]
    assert names[0] == "pipeline.yaml"
    assert sorted(names) == ["inner.yaml", "pipeline.yaml", "steps/iris/model.model.yaml", "steps/iris/model.onnx",
                             "steps/iris/names.txt", "steps/x2.model.yaml", "steps/x2.onnx"]
    assert sorted((p.relative_to(folder).as_posix(), f) for p, f in used.leaves) == [
        ("steps/iris/model.onnx", "onnx"), ("steps/x2.onnx", "onnx")]


def test_paths_outside_the_folder_and_cycles_are_refused(folder: Path, tmp_path: Path) -> None:
    scale_onnx(tmp_path / "outside.onnx", 1.0)
    (folder / "escape.yaml").write_text("flow:\n  - model: ../outside.onnx\n")
    with pytest.raises(ManifestError, match="outside the manifest's folder"):
        manifest_files(folder / "escape.yaml")
    (folder / "a.yaml").write_text("flow:\n  - manifest: b.yaml\n")
    (folder / "b.yaml").write_text("flow:\n  - manifest: a.yaml\n")
    with pytest.raises(ManifestError, match="include each other"):
        manifest_files(folder / "a.yaml")
    (folder / "gone.yaml").write_text("flow:\n  - model: steps/nothing.onnx\n")
    with pytest.raises(ManifestError, match="does not exist"):
        manifest_files(folder / "gone.yaml")


def test_a_staged_manifest_file_is_the_one_model_of_its_folder(folder: Path, tmp_path: Path) -> None:
    used = manifest_files(folder / "pipeline.yaml")
    root = stage_model(folder / "pipeline.yaml", tmp_path / "context", "pipe", single=True, uses=used.files)
    assert not (root / "pipe" / "1" / "unused.onnx").exists()
    models = Repository(root, default_registry()).scan()
    assert list(models) == ["pipe"]
    version = models["pipe"].versions[1]
    assert version.format == "manifest" and version.path.name == "pipeline.yaml"
    fmt = default_registry().get("manifest")
    ev = fmt.load(version.path, LoadOptions())
    x = np.array([[5.1, 3.5, 1.4, 0.2], [3.0, 1.5, 3.0, 1.0]], dtype=np.float32)
    direct = fmt.load(folder / "pipeline.yaml", LoadOptions())
    np.testing.assert_array_equal(ev.predict({"input": x})["label"], direct.predict({"input": x})["label"])
    ev.close()
    direct.close()
