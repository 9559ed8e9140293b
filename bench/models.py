"""The benchmark's models and request bodies, built from data that scikit-learn ships and from random weights.

- ``iris``: scikit-learn LogisticRegression on iris, exported with skl2onnx (input FP32 [-1, 4]).
- ``cnn``: a small convolutional network (eight 3x3 convolutions, four of them strided, about 1.2 GFLOP per
  image; global pooling, a 1000-way dense layer and softmax) with input FP32 [-1, 3, 224, 224] and random
  weights: it costs what a small image model costs, which is all a throughput benchmark needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
CNN_SHAPE = (1, 3, 224, 224)


def iris_onnx(path: Path) -> Path:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(model, initial_types=[("input", FloatTensorType([None, 4]))],
                  options={id(model): {"zipmap": False}}, target_opset=17)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path


def cnn_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev, channels = "input", 3
    layers = ((32, 2), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))
    for i, (out_ch, stride) in enumerate(layers):
        w = (rng.standard_normal((out_ch, channels, 3, 3)) * np.sqrt(2.0 / (channels * 9))).astype(np.float32)
        b = np.zeros(out_ch, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                      strides=[stride, stride], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, channels = f"r{i}", out_ch
    dense = (rng.standard_normal((channels, 1000)) / np.sqrt(channels)).astype(np.float32)
    inits += [numpy_helper.from_array(dense, "dense"), numpy_helper.from_array(np.zeros(1000, np.float32), "bias")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "dense", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def cnn_input() -> np.ndarray:
    return np.random.default_rng(1).random(CNN_SHAPE, dtype=np.float32)


def write_bodies(folder: Path) -> dict[str, tuple[Path, int | None]]:
    """Request bodies for wrk: name -> (file, Inference-Header-Content-Length or None)."""
    folder.mkdir(parents=True, exist_ok=True)
    bodies: dict[str, tuple[Path, int | None]] = {}

    def write(name: str, data: bytes, header_length: int | None = None) -> None:
        path = folder / f"{name}.body"
        path.write_bytes(data)
        bodies[name] = (path, header_length)

    write("iris-json", json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                               "data": IRIS_ROW}]}).encode())
    x = cnn_input()
    write("cnn-json", json.dumps({"inputs": [{"name": "input", "shape": list(CNN_SHAPE), "datatype": "FP32",
                                              "data": [round(float(v), 6) for v in x.ravel()]}]}).encode())
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(CNN_SHAPE), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    write("cnn-binary", header + raw, len(header))
    return bodies


def build(folder: Path) -> dict[str, Path]:
    """Both models under ``folder`` (built once; delete the folder to rebuild)."""
    models = {"iris": folder / "iris.onnx", "cnn": folder / "cnn-8conv.onnx"}
    if not models["iris"].exists():
        iris_onnx(models["iris"])
    if not models["cnn"].exists():
        cnn_onnx(models["cnn"])
    return models
