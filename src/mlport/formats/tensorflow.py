"""TensorFlow SavedModels: a folder holding ``saved_model.pb`` (or ``saved_model.pbtxt``), run by TensorFlow.

Every signature of the SavedModel is served. The evaluator's own is ``serving_default`` (or, when the
model has none, the first signature in name order); the others are evaluators of their own, chosen with
TF Serving's ``signature_name`` or OIP's ``parameters: {"signature_name": ...}``.

Signature: input and output names, datatypes and shapes come from the signature's ``TensorSpec``s (an
unknown dimension is ``-1``); string tensors are BYTES and ``bfloat16`` ones are served as FP32. Outputs of
kinds that are not dense tensors of a served datatype are left out (with a warning in the log); an input of
such a kind makes the signature unservable. A tensor of unknown rank takes the shape the model config declares
for it (``signature:``); without one, such an input makes the signature unservable and such an output is left out.
A signature that cannot be served is logged and skipped, unless it is the model's own (then the load fails).

Loading reads a graph and its variables: no Python code from the folder runs, so no trust is needed.
TensorFlow is imported when the first model loads, never when mlport starts. Its thread pools are
process-wide and can be set only before TensorFlow runs anything: the first SavedModel or Keras model
loaded in the process sets them from ``--intra-op-threads`` (or the model options ``intra_op_threads`` and
``inter_op_threads``). ``TF_CPP_MIN_LOG_LEVEL`` defaults to ``2`` (errors only) unless the environment sets it,
and applies to the lines TensorFlow writes while its libraries load too.

Model options (``options:`` in the model config): ``tags`` (the MetaGraph tags to load, default: the only
MetaGraph, else ``serve``), ``intra_op_threads``, ``inter_op_threads``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, MissingExtra, ModelFormat

__all__ = ["SavedModelEvaluator", "SavedModelFormat", "configure_threads", "first_line", "import_tensorflow"]

log = logging.getLogger(__name__)

GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")
DEFAULT_SIGNATURE = "serving_default"
#: Most files and folders checked inside a SavedModel folder (symbolic links must stay inside it).
MAX_FOLDER_ENTRIES = 100_000
#: Most signatures one SavedModel may serve.
MAX_SIGNATURES = 256
_OPTIONS = frozenset({"tags", "intra_op_threads", "inter_op_threads"})

#: TensorFlow dtype names -> served datatype.
TF_TYPES: dict[str, DataType] = {
    "bool": DataType.BOOL,
    "uint8": DataType.UINT8,
    "uint16": DataType.UINT16,
    "uint32": DataType.UINT32,
    "uint64": DataType.UINT64,
    "int8": DataType.INT8,
    "int16": DataType.INT16,
    "int32": DataType.INT32,
    "int64": DataType.INT64,
    "float16": DataType.FP16,
    "bfloat16": DataType.FP32,  # no bfloat16 on the wire: served as FP32, cast at the model's edge
    "float32": DataType.FP32,
    "float64": DataType.FP64,
    "string": DataType.BYTES,
}


# ------------------------------------------------------------------ the TensorFlow runtime, once per process
_runtime_lock = threading.Lock()
_threads: tuple[int, int] | None = None


def first_line(exc: BaseException) -> str:
    """An exception's message as one short line (libraries' messages can span many)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:500]


def import_tensorflow(format_name: str, extra: str) -> Any:
    """Import TensorFlow, quietly; a clear one-line :class:`MissingExtra` when it cannot be imported.

    ``TF_CPP_MIN_LOG_LEVEL`` defaults to ``2`` (TensorFlow's native errors only). TensorFlow writes a few
    lines while its libraries load, before that setting applies; they are held to the same level.
    """
    with _runtime_lock:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            if "tensorflow" in sys.modules:
                import tensorflow as tf
            else:
                tf = _import_filtered(_min_log_level())
        except ImportError as exc:
            raise MissingExtra(
                f"the {format_name} format needs tensorflow, which could not be imported ({first_line(exc)}): "
                f"pip install 'mlport[{extra}]'"
            ) from None
    return tf


def _min_log_level() -> int:
    try:
        return max(0, min(3, int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))))
    except ValueError:
        return 0


#: A native log line: severity letter, date, time, thread id, source location (absl's layout).
_NATIVE_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+\] ")
_NATIVE_LEVELS = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
_ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _keep(line: bytes, min_level: int) -> bool:
    if line.rstrip(b"\r") == _ABSL_BANNER:
        return min_level == 0
    found = _NATIVE_LINE.match(line)
    return found is None or _NATIVE_LEVELS[found.group(1)] >= min_level


def _forward(read_fd: int, write_fd: int, min_level: int) -> None:
    """Copy lines from ``read_fd`` to ``write_fd`` until end of file, leaving out native lines below the level."""
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if _keep(line, min_level))
        _write_all(write_fd, kept)
    if pending and _keep(pending, min_level):
        _write_all(write_fd, pending)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:
            return


def _import_filtered(min_level: int) -> Any:
    """``import tensorflow`` with the native lines it writes to stderr below ``min_level`` left out.

    Standard error (file descriptor 2) goes through a pipe while the libraries load; every other line written
    meanwhile, by any thread, is passed on unchanged.
    """
    if min_level == 0:
        import tensorflow as tf

        return tf
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except (OSError, ValueError, AttributeError):
        import tensorflow as tf

        return tf
    forwarder = threading.Thread(target=_forward, args=(read_fd, saved, min_level), name="mlport-tf-log",
                                 daemon=True)
    forwarder.start()
    os.dup2(write_fd, 2)
    try:
        import tensorflow as tf
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(write_fd)
        forwarder.join(timeout=5)
        if not forwarder.is_alive():  # else a child process still holds the pipe: the thread ends with it
            os.close(read_fd)
            os.close(saved)
    return tf


def _thread_option(options: LoadOptions, key: str, default: int) -> int:
    raw = options.options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0 or raw > 4096:
        raise InvalidInput(f"the option {key} must be a whole number from 0 (TensorFlow decides) to 4096, got {raw!r}")
    return raw


def configure_threads(tf: Any, options: LoadOptions) -> None:
    """Size TensorFlow's thread pools, once per process and before anything runs.

    Later models that ask for other sizes get a warning: the pools are shared by every model.
    """
    global _threads
    intra = _thread_option(options, "intra_op_threads", options.intra_op_threads)
    inter = _thread_option(options, "inter_op_threads", 0)
    with _runtime_lock:
        if _threads is None:
            try:
                if intra:
                    tf.config.threading.set_intra_op_parallelism_threads(intra)
                if inter:
                    tf.config.threading.set_inter_op_parallelism_threads(inter)
            except RuntimeError as exc:  # something in this process ran TensorFlow first
                log.warning("TensorFlow thread pools keep their sizes: %s", first_line(exc))
            _threads = (intra, inter)
        elif (intra, inter) != _threads and (intra or inter):
            log.warning(
                "TensorFlow thread pools are shared by every model and were sized when the first model loaded "
                "(intra_op_threads=%d, inter_op_threads=%d); this model's request for %d/%d is not applied",
                _threads[0], _threads[1], intra, inter,
            )


# ------------------------------------------------------------------ signatures
def tensor_spec(tf: Any, name: str, spec: Any, kind: str, declared: TensorSpec | None) -> TensorSpec:
    """A served :class:`TensorSpec` from a TensorFlow ``TensorSpec``; MlportError when it cannot be served."""
    if not isinstance(spec, tf.TensorSpec):
        raise MlportError(f"{kind} '{name}' is a {type(spec).__name__}; mlport serves dense tensors only")
    datatype = TF_TYPES.get(spec.dtype.name)
    if datatype is None:
        raise MlportError(f"{kind} '{name}' has dtype {spec.dtype.name}, which mlport does not serve")
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    if dims is None:
        if declared is None:
            raise MlportError(
                f"{kind} '{name}' has an unknown rank: declare its shape in the model config (signature:)"
            )
        return TensorSpec(name, datatype, declared.shape)
    return TensorSpec(name, datatype, tuple(-1 if d is None else int(d) for d in dims))


def _input_order(fn: Any, names: list[str]) -> list[str]:
    """Input names in the function's argument order when it tells it, else by name."""
    keywords = getattr(fn, "_arg_keywords", None)
    if isinstance(keywords, list | tuple) and sorted(str(k) for k in keywords) == sorted(names):
        return [str(k) for k in keywords]
    return sorted(names)


class _Shared:
    """What every signature of one loaded SavedModel shares."""

    def __init__(self, loaded: Any) -> None:
        self.loaded: Any = loaded
        self.evaluators: dict[str, SavedModelEvaluator] = {}
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for ev in self.evaluators.values():
            ev._fn = None
        self.evaluators = {}
        self.loaded = None


class SavedModelEvaluator(Evaluator):
    """One signature of a SavedModel: a concrete function called with tensors built from numpy arrays."""

    platform = "tensorflow_savedmodel"

    def __init__(self, tf: Any, shared: _Shared, name: str, fn: Any, declared: Signature | None) -> None:
        self._tf = tf
        self._shared = shared
        self._fn: Any = fn
        self.signature_name = name
        args, kwargs = fn.structured_input_signature
        if args:
            raise MlportError(f"signature '{name}' takes positional arguments; a signature takes named tensors")
        if not isinstance(kwargs, dict) or not isinstance(fn.structured_outputs, dict):
            raise MlportError(f"signature '{name}' does not map names to tensors")
        if len(kwargs) > 1024 or len(fn.structured_outputs) > 1024:
            raise MlportError(f"signature '{name}' has more than 1024 inputs or outputs")
        inputs: list[TensorSpec] = []
        #: input name -> the function's dtype, when a served array must be cast to it (bfloat16)
        self._in_types: dict[str, Any] = {}
        self._string_inputs: set[str] = set()
        for key in _input_order(fn, [str(k) for k in kwargs]):
            spec = kwargs[key]
            served = tensor_spec(tf, key, spec, "input", declared.input(key) if declared else None)
            inputs.append(served)
            self._in_types[key] = spec.dtype
            if served.datatype is DataType.BYTES:
                self._string_inputs.add(key)
        outputs: list[TensorSpec] = []
        for key in sorted(str(k) for k in fn.structured_outputs):
            try:
                outputs.append(tensor_spec(tf, key, fn.structured_outputs[key], "output",
                                           declared.output(key) if declared else None))
            except MlportError as exc:
                log.warning("signature '%s': output left out: %s", name, exc)
        if not outputs:
            raise MlportError(f"signature '{name}' has no output mlport can serve")
        self._bfloat16_out = {
            s.name for s in outputs if fn.structured_outputs[s.name].dtype == tf.bfloat16
        }
        self._out_names = [s.name for s in outputs]
        self.signature = Signature(tuple(inputs), tuple(outputs))

    def _tensor(self, name: str, arr: np.ndarray[Any, Any]) -> Any:
        tf = self._tf
        want = self._in_types[name]
        if name in self._string_inputs:
            # object arrays of bytes or str: TensorFlow converts them in one call (str as UTF-8)
            return tf.constant(arr, dtype=tf.string)
        if want == tf.bfloat16:
            return tf.cast(tf.constant(arr), tf.bfloat16)
        return tf.constant(arr, dtype=want)

    def predict(self, inputs: Arrays) -> Arrays:
        fn = self._fn
        if fn is None:
            raise MlportError(f"signature '{self.signature_name}' was closed")
        feed = {name: self._tensor(name, arr) for name, arr in inputs.items()}
        out = fn(**feed)
        result: Arrays = {}
        for name in self._out_names:
            tensor = out[name]
            if name in self._bfloat16_out:
                tensor = self._tf.cast(tensor, self._tf.float32)
            result[name] = tensor.numpy()
        return result

    def signatures(self) -> Mapping[str, Evaluator]:
        return {k: e for k, e in self._shared.evaluators.items() if k != self.signature_name}

    def close(self) -> None:
        self._shared.close()


# ------------------------------------------------------------------ loading
def _check_inside(folder: Path) -> None:
    """Refuse a SavedModel folder whose files (or symbolic links) lead outside it."""
    root = folder.resolve()
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for entry in (*dirnames, *filenames):
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise MlportError(f"{folder.name} holds more than {MAX_FOLDER_ENTRIES} files")
            target = Path(dirpath, entry)
            if target.is_symlink():
                try:
                    target.resolve().relative_to(root)
                except ValueError:
                    raise MlportError(
                        f"{folder.name}: {target.relative_to(folder)} links outside the model folder"
                    ) from None


def _tags(options: LoadOptions) -> list[str] | None:
    raw = options.options.get("tags")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [t.strip() for t in raw.split(",") if t.strip()]
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t for t in raw):
        raise InvalidInput("the option tags must name the MetaGraph tags to load (e.g. [serve])")
    return [str(t) for t in raw]


def _load_graph(tf: Any, path: Path, tags: list[str] | None) -> Any:
    try:
        return tf.saved_model.load(str(path), tags=tags)
    except Exception as first:
        if tags is None and "tags" in str(first).lower():
            # several MetaGraphs and none chosen: the serving one, as TF Serving loads
            try:
                return tf.saved_model.load(str(path), tags=["serve"])
            except Exception:
                pass
        raise MlportError(f"TensorFlow could not load the SavedModel {path.name}: {first_line(first)}") from None


def _unknown_options(options: LoadOptions, allowed: frozenset[str], format_name: str) -> None:
    unknown = sorted(set(options.options) - allowed)
    if unknown:
        raise InvalidInput(
            f"the {format_name} format has no option {', '.join(repr(k) for k in unknown)}; "
            f"its options: {', '.join(sorted(allowed))}"
        )


class SavedModelFormat(ModelFormat):
    name: ClassVar[str] = "tensorflow"
    extra: ClassVar[str | None] = "tensorflow"
    requires: ClassVar[tuple[str, ...]] = ("tensorflow",)
    #: A SavedModel is a graph and variables: loading it runs no Python code from the folder.
    runs_code: ClassVar[bool] = False

    def detect(self, path: Path) -> bool:
        return path.is_dir() and any((path / f).is_file() for f in GRAPH_FILES)

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        _unknown_options(options, _OPTIONS, self.name)
        tags = _tags(options)
        _check_inside(path)
        tf = import_tensorflow(self.name, self.extra or self.name)
        configure_threads(tf, options)
        loaded = _load_graph(tf, path, tags)
        functions = dict(loaded.signatures.items())
        if not functions:
            raise MlportError(
                f"the SavedModel {path.name} has no signatures; save it with "
                "tf.saved_model.save(obj, path, signatures=...) or model.export(path)"
            )
        if len(functions) > MAX_SIGNATURES:
            raise MlportError(f"the SavedModel {path.name} has {len(functions)} signatures; the limit is "
                              f"{MAX_SIGNATURES}")
        names = sorted(functions)
        main = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in functions else names[0]
        shared = _Shared(loaded)
        try:
            first = SavedModelEvaluator(tf, shared, main, functions[main], options.signature)
        except MlportError as exc:
            raise MlportError(f"{path.name}: {exc}") from None
        shared.evaluators[main] = first
        for name in names:
            if name == main:
                continue
            try:
                shared.evaluators[name] = SavedModelEvaluator(tf, shared, name, functions[name], None)
            except MlportError as exc:
                log.warning("%s: signature '%s' is not served: %s", path.name, name, exc)
        return first
