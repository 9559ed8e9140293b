"""Manifest errors seen through the real CLI: cycles through ``model:`` steps, unknown step types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.builders import scale_onnx


def _describe(path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "describe", str(path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ})
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads(done.stdout)


def test_manifests_that_name_each_other_as_models_are_a_cycle(tmp_path: Path) -> None:
    scale_onnx(tmp_path / "x2.onnx", 2.0)
    (tmp_path / "a.yaml").write_text("flow:\n  - model: x2.onnx\n  - {model: b.yaml, inputs: {x: y}}\n")
    (tmp_path / "b.yaml").write_text("flow:\n  - model: a.yaml\n")
    done, doc = _describe(tmp_path / "a.yaml")
    assert done.returncode == 1
    error = doc["a"]["error"]
    assert "manifests include each other in a cycle: a.yaml -> b.yaml -> a.yaml" in error, error
    assert "step 2 'b'" in error  # the step of the outer manifest that starts the cycle


def test_a_manifest_that_names_itself_as_a_model_is_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "self.yaml").write_text("router:\n  children: [{model: self.yaml, name: again}]\n")
    done, doc = _describe(tmp_path / "self.yaml")
    assert done.returncode == 1
    assert "cycle: self.yaml -> self.yaml" in doc["self"]["error"]


def test_manifests_nest_as_models_until_the_depth_limit(tmp_path: Path) -> None:
    scale_onnx(tmp_path / "x2.onnx", 2.0)
    (tmp_path / "m0.yaml").write_text("flow:\n  - model: x2.onnx\n")
    for i in range(1, 20):
        (tmp_path / f"m{i}.yaml").write_text(f"flow:\n  - model: m{i - 1}.yaml\n")
    done, doc = _describe(tmp_path / "m3.yaml")
    assert done.returncode == 0, doc
    assert doc["m3"]["outputs"][0]["name"] == "y"
    done, doc = _describe(tmp_path / "m19.yaml")
    assert done.returncode == 1 and "manifests nest deeper than 16" in doc["m19"]["error"]


def test_an_unknown_step_type_is_named_by_the_steps_name(tmp_path: Path) -> None:
    scale_onnx(tmp_path / "x1.onnx", 1.0)
    scale_onnx(tmp_path / "x2.onnx", 2.0)
    (tmp_path / "m.yaml").write_text(
        "flow:\n  - {model: x1.onnx}\n  - {predictor: x2.onnx, name: second}\n")
    done, doc = _describe(tmp_path / "m.yaml")
    assert done.returncode == 1
    error = doc["m"]["error"]
    assert "step 2 'second'" in error and "unknown step type 'predictor'" in error, error
    # like every other error of a named step
    (tmp_path / "m.yaml").write_text("flow:\n  - {model: x1.onnx}\n  - {model: nothere.onnx, name: second}\n")
    done, doc = _describe(tmp_path / "m.yaml")
    assert "step 2 'second'" in doc["m"]["error"]
