"""A replica's model folder carries the hub's version number."""

from __future__ import annotations

from pathlib import Path

from mlport.deploy.layout import versioned_layout


def test_a_file_becomes_version_n_of_one_model(tmp_path: Path) -> None:
    artifact = tmp_path / "cache" / "iris.onnx"
    artifact.parent.mkdir()
    artifact.write_bytes(b"onnx")
    root = versioned_layout(artifact, tmp_path / "run" / "v3", 3)
    assert root == tmp_path / "run" / "v3"
    assert (root / "3" / "iris.onnx").read_bytes() == b"onnx" and (root / "model.yaml").is_file()
    assert (root / "3" / "iris.onnx").stat().st_ino == artifact.stat().st_ino  # a link, not a copy
    (root / "stale").mkdir()
    again = versioned_layout(artifact, root, 4)
    assert sorted(p.name for p in again.iterdir()) == ["4", "model.yaml"]


def test_a_folders_settings_go_above_its_version(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "sub" / "vocab.txt").write_text("a\n")
    (folder / "model.yaml").write_text("batching: {max_batch_size: 8}\n")
    root = versioned_layout(folder, tmp_path / "run", 7)
    assert (root / "model.yaml").read_text() == "batching: {max_batch_size: 8}\n"
    assert (root / "7" / "model.onnx").is_file() and (root / "7" / "sub" / "vocab.txt").read_text() == "a\n"


def test_a_versioned_model_folder_is_served_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(b"onnx")
    (folder / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    assert versioned_layout(folder, tmp_path / "run", 2) == folder
    assert not (tmp_path / "run").exists()
