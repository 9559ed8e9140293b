"""ONNX models, run by onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, FileSignature, LoadOptions, ModelFormat, as_text

__all__ = ["OnnxEvaluator", "OnnxFormat", "signature_from_file"]

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
#: Largest file read to describe a model without loading it (the whole graph is parsed, weights included).
DESCRIBE_MAX_BYTES = 256 * 1024 * 1024
_OPT_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


#: ONNX's ``TensorProto.DataType`` numbers as onnxruntime names them (the ``tensor(...)`` of :data:`_ORT_TYPES`).
_ONNX_ELEMENTS = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
                  9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64"}


def _tensor(name: str, type_name: str, dims: list[Any]) -> TensorSpec | None:
    """The served spec of one graph input or output (``None``: not a tensor mlport serves): a dimension that is
    not a fixed size (a symbolic name, unknown) is ``-1``."""
    datatype = _ORT_TYPES.get(type_name)
    if datatype is None:
        return None
    return TensorSpec(name, datatype, tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims))


def _spec(node: Any) -> TensorSpec | None:
    """An onnxruntime session's input or output (``NodeArg``)."""
    return _tensor(node.name, node.type, list(node.shape))


def _proto_spec(value: Any) -> TensorSpec | None:
    """A graph's ``ValueInfoProto`` as onnxruntime would give it."""
    if value.type.WhichOneof("value") != "tensor_type":
        return None
    tensor = value.type.tensor_type
    element = _ONNX_ELEMENTS.get(tensor.elem_type)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return _tensor(value.name, f"tensor({element})", dims)


def _signature(name: str, inputs: list[TensorSpec | None], outputs: list[TensorSpec | None]) -> Signature:
    """The served signature: every input must be a tensor; outputs that are not (sklearn's ZipMap sequences of
    maps) are not served."""
    if any(s is None for s in inputs):
        raise MlportError(f"{name}: some inputs are not tensors; mlport serves tensor inputs only")
    served = tuple(s for s in outputs if s is not None)
    if not served:
        raise MlportError(f"{name}: the model has no tensor outputs")
    return Signature(tuple(s for s in inputs if s is not None), served)


def signature_from_file(path: Path) -> Signature | None:
    """The signature onnxruntime would give ``path``, from the graph's declared inputs and outputs (the ``onnx``
    package parses the file; external weights are not read, no session is made); ``None`` when ``onnx`` is not
    installed, the file is larger than :data:`DESCRIBE_MAX_BYTES` or not a graph it reads."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        if path.stat().st_size > DESCRIBE_MAX_BYTES:
            return None
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    graph = model.graph
    weights = {t.name for t in graph.initializer}  # listed as inputs by old graphs; not the session's inputs
    inputs = [_proto_spec(v) for v in graph.input if v.name not in weights]
    try:
        return _signature(path.name, inputs, [_proto_spec(v) for v in graph.output])
    except MlportError:
        return None


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
        self.signature = _signature(path.name, inputs, [_spec(n) for n in self._session.get_outputs()])
        self._output_names = [s.name for s in self.signature.outputs]
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

    def describe_files(self, path: Path, options: LoadOptions) -> FileSignature | None:
        signature = signature_from_file(path)
        return FileSignature(signature, OnnxEvaluator.platform) if signature is not None else None
