"""Tiny real models built in a test's tmp_path (no committed binaries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_graph(graph: object, path: Path, opset: int = 17, ir_version: int = 8) -> Path:
    """Wrap an ONNX graph in a model, check it, and write it to ``path``."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def iris_onnx(path: Path, max_iter: int = 500, c: float = 1.0) -> Path:
    """The iris preset's logistic regression, on the raw measurements and every row: input [-1,4] FP32 ->
    label, probabilities (a smaller ``c`` regularises more: other labels on some rows)."""
    from mlport.presets.iris import train

    model = train(c=c, max_iter=max_iter, standardize=False, test_size=0).onnx_model
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def scale_onnx(path: Path, factor: float, shape: tuple[int | None, ...] = (None, 3), dtype: str = "float32") -> Path:
    """y = x * factor, with input 'x' and output 'y' (a model whose answer tells which version served)."""
    from onnx import TensorProto, helper

    et = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype]
    dims = [d if d is not None else "N" for d in shape]
    x = helper.make_tensor_value_info("x", et, dims)
    y = helper.make_tensor_value_info("y", et, dims)
    k = helper.make_tensor("k", et, [], [factor])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scale", [x], [y], [k])
    return save_graph(graph, path)


def ort_run(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's own answer, to compare the server with."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed), strict=True))


def slow_onnx(path: Path, size: int = 800, repeats: int = 12) -> Path:
    """A compute-heavy model (repeated MatMul on 'x' [size, size]) whose prediction takes a noticeable time."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((size, size)) / size).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])
    init = helper.make_tensor("w", TensorProto.FLOAT, [size, size], w.ravel().tolist())
    nodes, prev = [], "x"
    for i in range(repeats):
        out = "y" if i == repeats - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "slow", [x], [y], [init])
    return save_graph(graph, path)


def scaled_by_input_onnx(path: Path) -> Path:
    """y = x * k with 'x' FP32 [-1, 3] (batched) and 'k' FP32 [] (no batch axis)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scaled", [x, k], [y])
    return save_graph(graph, path)


_COUNTED_MODEL = '''
import time

import numpy as np


class Counted:
    signature = {{"inputs": [{{"name": "x", "datatype": "FP32", "shape": [-1]}}],
                 "outputs": [{{"name": "y", "datatype": "FP32", "shape": [-1]}}]}}

    def load(self, folder):
        with open({loads!r}, "a") as f:
            f.write({name!r} + "\\n")
        time.sleep({load_delay})

    def predict(self, inputs):
        x = inputs["x"]
        if x[0] > 0:
            time.sleep(float(x[0]))
        return {{"y": x + {factor}}}
'''


def counted_python_model(folder: Path, loads: Path, name: str = "model", factor: float = 1.0,
                         load_delay: float = 0.0) -> Path:
    """A Python model (``model.py`` in ``folder``; trusted models only) that appends ``name`` to the file ``loads``
    each time it loads, then sleeps ``load_delay`` s: loads are counted from outside the server.  y = x + factor;
    a request whose x[0] > 0 sleeps that many seconds (a slow request)."""
    import textwrap

    folder.mkdir(parents=True, exist_ok=True)
    source = _COUNTED_MODEL.format(loads=str(loads), name=name, factor=factor, load_delay=load_delay)
    (folder / "model.py").write_text(textwrap.dedent(source).lstrip())
    return folder
