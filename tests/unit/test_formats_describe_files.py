"""Describing a model from its files without loading it: the ONNX graph read by ``onnx`` gives the signature an
onnxruntime session gives, and formats that cannot tell say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from mlport.formats.adapt import describe_adapted, load_adapted
from mlport.formats.base import LoadOptions
from mlport.formats.config import ModelConfig
from mlport.formats.onnx import OnnxFormat, signature_from_file
from mlport.formats.registry import default_registry
from tests.builders import iris_onnx, save_graph, scale_onnx


def _zipmap_classifier(path: Path) -> Path:
    """skl2onnx's default classifier: a probabilities output that is a sequence of maps (not served)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    model = to_onnx(LogisticRegression().fit(x, [0, 1, 1, 0]), x[:1])
    path.write_bytes(model.SerializeToString())
    return path


def _old_graph_with_weights_as_inputs(path: Path) -> Path:
    """IR version 3: initializers are listed among the graph's inputs (a session does not ask for them)."""
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 2])
    w = helper.make_tensor_value_info("w", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", 2])
    init = helper.make_tensor("w", TensorProto.INT64, [2], [3, 4])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "old", [x, w], [y], [init])
    return save_graph(graph, path, opset=8, ir_version=3)


@pytest.mark.parametrize("build", [
    lambda p: iris_onnx(p),
    lambda p: scale_onnx(p, 2.0, shape=(None, 3), dtype="float64"),
    lambda p: scale_onnx(p, 2.0, shape=(4, 3)),
    _zipmap_classifier,
    _old_graph_with_weights_as_inputs,
])
def test_the_files_signature_is_the_sessions(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = build(tmp_path / "model.onnx")
    loaded = OnnxFormat().load(path, LoadOptions())
    try:
        assert signature_from_file(path) == loaded.signature
        described = OnnxFormat().describe_files(path, LoadOptions())
        assert described is not None and described.platform == loaded.platform
    finally:
        loaded.close()


def test_a_config_is_applied_as_a_load_applies_it(tmp_path: Path) -> None:
    path = scale_onnx(tmp_path / "model.onnx", 2.0)
    config = ModelConfig.model_validate({"signature": {"outputs": [{"name": "y", "alias": "doubled",
                                                                    "datatype": "FP64"}]}})
    fmt = default_registry().get("onnx")
    loaded = load_adapted(fmt, path, config)
    try:
        described = describe_adapted(fmt, path, config)
        assert described is not None and described.signature == loaded.signature
        assert described.signature.outputs[0].name == "doubled"
    finally:
        loaded.close()
    wrong = ModelConfig.model_validate({"signature": {"outputs": [{"name": "nope"}]}})
    assert describe_adapted(fmt, path, wrong) is None  # the load says why


def test_files_that_are_not_a_graph_and_formats_that_cannot_tell_give_none(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph" * 10)
    assert signature_from_file(bad) is None
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    out = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    graph = helper.make_graph([helper.make_node("SequenceLength", ["s"], ["n"])], "seq", [seq], [out])
    assert signature_from_file(save_graph(graph, tmp_path / "seq.onnx")) is None  # an input that is not a tensor
    sklearn = default_registry().get("sklearn")
    assert sklearn.describe_files(tmp_path / "model.pkl", LoadOptions()) is None
