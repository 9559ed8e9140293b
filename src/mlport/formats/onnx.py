"""ONNX models, run by onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, ModelFormat, as_text

__all__ = ["OnnxEvaluator", "OnnxFormat"]

_ORT_TYPES = {
    "tensor(bool)": DataType.BOOL,
    "tensor(uint8)": DataType.UINT8,
    "tensor(uint16)": DataType.UINT16,
    "tensor(uint32)": DataType.UINT32,
    "tensor(uint64)": DataType.UINT64,
    "tensor(int8)": DataType.INT8,
    "tensor(int16)": DataType.INT16,
    "tensor(int32)": DataType.INT32,
    "tensor(int64)": DataType.INT64,
    "tensor(float16)": DataType.FP16,
    "tensor(float)": DataType.FP32,
    "tensor(double)": DataType.FP64,
    "tensor(string)": DataType.BYTES,
}
_OPT_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


def _spec(node: Any) -> TensorSpec | None:
    datatype = _ORT_TYPES.get(node.type)
    if datatype is None:
        return None
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, datatype, shape)


class OnnxEvaluator(Evaluator):
    platform = "onnxruntime_onnx"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        opts = options.options
        intra = int(opts.get("intra_op_threads", options.intra_op_threads))
        if intra > 0:
            so.intra_op_num_threads = intra
        inter = int(opts.get("inter_op_threads", 0))
        if inter > 0:
            so.inter_op_num_threads = inter
        level = str(opts.get("graph_optimization_level", "all"))
        if level not in _OPT_LEVELS:
            raise InvalidInput(f"graph_optimization_level must be one of {', '.join(_OPT_LEVELS)}, got {level!r}")
        so.graph_optimization_level = ort.GraphOptimizationLevel(_OPT_LEVELS[level])
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise MlportError(f"onnxruntime could not load {path.name}: {exc}") from exc
        inputs = [_spec(n) for n in self._session.get_inputs()]
        if any(s is None for s in inputs):
            bad = [n.name for n in self._session.get_inputs() if _spec(n) is None]
            raise MlportError(f"{path.name}: inputs {bad} are not tensors; mlport serves tensor inputs only")
        # Non-tensor outputs (e.g. sklearn's ZipMap sequences of maps) are not served.
        outputs = [s for s in (_spec(n) for n in self._session.get_outputs()) if s is not None]
        if not outputs:
            raise MlportError(f"{path.name}: the model has no tensor outputs")
        self.signature = Signature(tuple(s for s in inputs if s is not None), tuple(outputs))
        self._output_names = [s.name for s in outputs]
        self._string_inputs = {s.name for s in self.signature.inputs if s.datatype is DataType.BYTES}

    def predict(self, inputs: Arrays) -> Arrays:
        feed = inputs
        if self._string_inputs:
            # onnxruntime's string tensors hold text: bytes from binary protocols are decoded here
            # (one call per element: numpy has no exact vectorised UTF-8 decode for object arrays).
            feed = dict(inputs)
            for name in self._string_inputs:
                try:
                    feed[name] = as_text(feed[name])
                except UnicodeDecodeError:
                    raise InvalidInput(f"input '{name}' holds bytes that are not UTF-8 text") from None
        results = self._session.run(self._output_names, feed)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        del self._session


class OnnxFormat(ModelFormat):
    name: ClassVar[str] = "onnx"
    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".onnx"

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        return OnnxEvaluator(path, options)
