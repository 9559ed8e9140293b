"""The memory a load is expected to need, before it runs (what the budget makes room for)."""

from __future__ import annotations

from pathlib import Path

from mlport.formats.registry import default_registry
from mlport.runtime.budget import RATIO_SAMPLES, MemoryBudget, file_bytes
from mlport.runtime.repository import Repository
from mlport.runtime.states import ModelEntry
from tests.builders import scale_onnx


def test_a_model_not_loaded_before_expects_what_loads_of_its_format_measured(tmp_path: Path) -> None:
    for name in ("a", "b"):
        scale_onnx(tmp_path / name / "1" / "model.onnx", 2.0)
    models = {n: ModelEntry(n, s) for n, s in Repository(tmp_path, default_registry()).scan().items()}
    budget = MemoryBudget(10**9, models, lambda m: None, None)
    a, b = models["a"].source.versions[1], models["b"].source.versions[1]
    files = file_bytes(b)
    assert files > 0 and budget.expected(models["b"], b) == files  # nothing measured yet: the files' size
    budget.learn(a, 3 * file_bytes(a))
    budget.learn(a, 2 * file_bytes(a))
    assert budget.expected(models["b"], b) == 3 * files  # the largest recent ratio of its format
    for _ in range(RATIO_SAMPLES):
        budget.learn(a, 2 * file_bytes(a))
    assert budget.expected(models["b"], b) == 2 * files  # only the last loads count
    models["b"].sizes[1] = 12345
    assert budget.expected(models["b"], b) == 12345  # its own last load wins
