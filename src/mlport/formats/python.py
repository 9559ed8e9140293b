"""Python evaluators: a ``model.py`` the operator wrote, run inside the server (trusted models only).

Files: a file named ``model.py``, or a folder holding one (with whatever else the model reads: weights,
vocabularies, helper modules). Loading imports the file, which runs it, so an untrusted model is refused
before the file is even read (``--trusted`` or ``trusted: true`` in its ``model.yaml``).

The file defines one class (when it defines several, the model option ``class: Name`` picks one)::

    class Model:
        signature = {                                  # optional when model.yaml declares the signature
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
        }

        def load(self, folder):                        # optional: folder is a pathlib.Path
            self.weights = np.load(folder / "weights.npy")

        def predict(self, inputs):                     # dict[str, np.ndarray] -> dict[str, np.ndarray]
            return {"y": np.argmax(inputs["x"] @ self.weights, axis=1)}

- The class is created with no arguments, then ``load(folder)`` is called once with the model's folder.
- ``signature`` lists inputs and outputs as mappings with ``name``, ``datatype`` (``FP32``, ``float32``,
  ``INT64``, ``BYTES``...) and ``shape`` (``-1`` for free dimensions, the batch axis first). A complete
  ``signature:`` section in the model config wins over it; one of the two is required.
- ``predict`` gets every input as a numpy array of its declared datatype (BYTES inputs as object arrays of
  ``bytes`` or ``str``) with the batch on axis 0, and returns a dict holding every declared output as a
  numpy array: numbers are cast to the declared datatype (within their kind: ints to floats, not floats to
  ints), the shape must fit the declared one and batched outputs have one row per input row. Anything
  else is an error that names the output (500). Outputs not declared are dropped.
- ``predict`` raising ``ValueError`` (or :class:`mlport.errors.InvalidInput`) answers 400 with its message;
  any other exception answers 500 with its type and message.
- ``predict`` is called from several threads at once: keep it free of shared mutable state, or lock.
- Helper modules beside ``model.py`` are imported relatively (``from . import helpers``). Each version is
  imported under its own module name, so two versions of one model (or two models) never share modules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, ModelFormat, UntrustedModel

__all__ = ["PythonEvaluator", "PythonFormat", "batch_size", "check_outputs", "parse_signature"]

log = logging.getLogger(__name__)

MODEL_FILE = "model.py"
#: Largest model.py read.
MAX_SOURCE_BYTES = 16 * 1024 * 1024
#: Most inputs or outputs a signature may list, and most dimensions of one tensor.
MAX_TENSORS = 1024
MAX_RANK = 32
#: Longest exception message passed on to a client.
MAX_MESSAGE = 500

_counter = itertools.count(1)
_counter_lock = threading.Lock()

SIGNATURE_EXAMPLE = (
    "signature: {inputs: [{name: x, datatype: FP32, shape: [-1, 4]}], "
    "outputs: [{name: y, datatype: INT64, shape: [-1]}]}"
)


# ------------------------------------------------------------------ helpers shared with other code formats
def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "")[:MAX_MESSAGE]


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def parse_signature(raw: Any, where: str) -> Signature:
    """A signature from its plain form ``{"inputs": [{name, datatype, shape}], "outputs": [...]}``."""
    if isinstance(raw, Signature):
        return raw
    if not isinstance(raw, Mapping) or set(raw) - {"inputs", "outputs"}:
        raise MlportError(f"{where}: signature must be a mapping with 'inputs' and 'outputs' lists")
    groups: list[tuple[TensorSpec, ...]] = []
    for kind in ("inputs", "outputs"):
        items = raw.get(kind)
        if not isinstance(items, list | tuple) or not items or len(items) > MAX_TENSORS:
            raise MlportError(f"{where}: signature {kind} must be a list of 1 to {MAX_TENSORS} tensors")
        specs: list[TensorSpec] = []
        for item in items:
            if not isinstance(item, Mapping) or set(item) != {"name", "datatype", "shape"}:
                raise MlportError(f"{where}: each signature tensor is a mapping with name, datatype and shape; "
                                  f"got {item!r:.200}")
            name, datatype, shape = item["name"], item["datatype"], item["shape"]
            if not isinstance(name, str) or not name or len(name) > 256:
                raise MlportError(f"{where}: signature {kind}: a tensor name must be a non-empty string")
            try:
                dtype = DataType.parse(str(datatype))
            except ValueError as exc:
                raise MlportError(f"{where}: signature tensor '{name}': {exc}") from None
            if (not isinstance(shape, list | tuple) or len(shape) > MAX_RANK
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)):
                raise MlportError(f"{where}: signature tensor '{name}': shape must be a list of at most "
                                  f"{MAX_RANK} sizes or -1, got {shape!r:.200}")
            specs.append(TensorSpec(name, dtype, tuple(shape)))
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise MlportError(f"{where}: signature {kind}: {', '.join(dup)} named more than once")
        groups.append(tuple(specs))
    return Signature(groups[0], groups[1])


def batch_size(signature: Signature, inputs: Arrays) -> int | None:
    """Rows in the batch: axis 0 of the first batched input (``None`` when no input is batched)."""
    for spec in signature.inputs:
        arr = inputs.get(spec.name)
        if spec.batched and arr is not None and arr.ndim > 0:
            return int(arr.shape[0])
    return None


def _broken(message: str) -> MlportError:
    return MlportError(message, ErrorCode.INTERNAL)


def _output(spec: TensorSpec, value: Any, batch: int | None, where: str) -> np.ndarray[Any, Any]:
    name = spec.name
    if not isinstance(value, np.ndarray):
        raise _broken(f"{where}: output '{name}' is a {type(value).__name__}, not a numpy array")
    arr = value
    if spec.datatype is DataType.BYTES:
        if arr.dtype.kind not in "OUS":
            raise _broken(f"{where}: output '{name}' holds {arr.dtype}; the signature declares BYTES")
        if arr.dtype.kind != "O":
            arr = arr.astype(object)
    else:
        want = spec.datatype.numpy
        if arr.dtype.kind not in "biuf" or not np.can_cast(arr.dtype, want, casting="same_kind"):
            raise _broken(f"{where}: output '{name}' holds {arr.dtype}; the signature declares "
                          f"{spec.datatype.value}")
        arr = arr.astype(want, copy=False)
    if not spec.shape_matches(arr.shape):
        raise _broken(f"{where}: output '{name}' has shape {_fmt(arr.shape)}; the signature declares "
                      f"{_fmt(spec.shape)}")
    if batch is not None and spec.batched and arr.shape[0] != batch:
        raise _broken(f"{where}: output '{name}' has {arr.shape[0]} rows for a batch of {batch}")
    return arr


def check_outputs(signature: Signature, outputs: Any, batch: int | None, where: str) -> Arrays:
    """Every declared output, present, a numpy array of the declared datatype, shape and batch size.

    Raises an internal error (500) naming the output: the model broke its own signature.
    """
    if not isinstance(outputs, Mapping):
        raise _broken(f"{where} returned a {type(outputs).__name__}, not a dict of numpy arrays")
    missing = [s.name for s in signature.outputs if s.name not in outputs]
    if missing:
        gave = ", ".join(repr(str(k)) for k in list(outputs)[:20]) or "nothing"
        raise _broken(f"{where} did not return output {', '.join(repr(n) for n in missing)} (it returned {gave})")
    return {s.name: _output(s, outputs[s.name], batch, where) for s in signature.outputs}


# ------------------------------------------------------------------ import
def _module_name(source: Path) -> str:
    digest = hashlib.sha256(str(source).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    with _counter_lock:
        n = next(_counter)
    return f"mlport_model_{digest}_{n}"


def _import(source: Path, folder: Path) -> ModuleType:
    """Import ``source`` as a package rooted at ``folder`` under a name no other model uses."""
    name = _module_name(source)
    spec = importlib.util.spec_from_file_location(name, source, submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise MlportError(f"{source.name} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickle and relative imports look the module up here
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        _forget(name)
        log.debug("importing %s failed", source, exc_info=exc)
        raise MlportError(f"{source.name} could not be imported: {type(exc).__name__}: {_short(exc)}") from None
    return module


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        sys.modules.pop(key, None)


def _model_class(module: ModuleType, source: Path, options: LoadOptions) -> type:
    found = {
        n: obj for n, obj in vars(module).items()
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and callable(getattr(obj, "predict", None))
    }
    wanted = options.options.get("class")
    if wanted is not None:
        cls = found.get(str(wanted))
        if cls is None:
            raise MlportError(f"{source.name} defines no class {wanted!r} with a predict method; "
                              f"it defines: {', '.join(sorted(found)) or 'none'}")
        return cls
    if not found:
        raise MlportError(f"{source.name} defines no class with a predict(self, inputs) method")
    if len(found) > 1:
        raise MlportError(f"{source.name} defines several classes with a predict method "
                          f"({', '.join(sorted(found))}); pick one with the model option class: <name>")
    return next(iter(found.values()))


# ------------------------------------------------------------------ evaluator
class PythonEvaluator(Evaluator):
    platform = "python"

    def __init__(self, source: Path, folder: Path, options: LoadOptions) -> None:
        self._module_name = ""
        module = _import(source, folder)
        self._module_name = module.__name__
        try:
            cls = _model_class(module, source, options)
            self._where = f"{source.name}: {cls.__name__}.predict"
            self.signature = self._signature(cls, source, options)
            try:
                self._instance = cls()
                loader = getattr(self._instance, "load", None)
                if callable(loader):
                    loader(folder)
            except MlportError:
                raise
            except (Exception, SystemExit) as exc:
                log.debug("%s: creating or loading %s failed", source, cls.__name__, exc_info=exc)
                raise MlportError(f"{source.name}: {cls.__name__} failed to load: "
                                  f"{type(exc).__name__}: {_short(exc)}") from None
            self._predict = self._instance.predict
        except BaseException:
            _forget(self._module_name)
            raise

    @staticmethod
    def _signature(cls: type, source: Path, options: LoadOptions) -> Signature:
        if options.signature is not None:
            return options.signature
        raw = getattr(cls, "signature", None)
        if raw is None:
            raise MlportError(
                f"{source.name}: {cls.__name__} has no signature: give the class a signature attribute "
                "({'inputs': [{'name': ..., 'datatype': ..., 'shape': [...]}], 'outputs': [...]}) or declare it "
                f"in the model config: {SIGNATURE_EXAMPLE}"
            )
        return parse_signature(raw, f"{source.name}: {cls.__name__}")

    def predict(self, inputs: Arrays) -> Arrays:
        try:
            raw = self._predict(dict(inputs))
        except MlportError:
            raise
        except ValueError as exc:
            raise InvalidInput(f"{self._where} refused the input: {_short(exc) or type(exc).__name__}") from exc
        except Exception as exc:
            log.debug("%s raised", self._where, exc_info=exc)
            raise MlportError(f"{self._where} raised {type(exc).__name__}: {_short(exc)}",
                              ErrorCode.INTERNAL) from exc
        return check_outputs(self.signature, raw, batch_size(self.signature, inputs), self._where)

    def close(self) -> None:
        closer = getattr(getattr(self, "_instance", None), "close", None)
        if callable(closer):
            try:
                closer()
            except Exception as exc:
                log.warning("%s: close() raised %s: %s", self._module_name, type(exc).__name__, _short(exc))
        self.__dict__.pop("_instance", None)
        self.__dict__.pop("_predict", None)
        if self._module_name:
            _forget(self._module_name)


class PythonFormat(ModelFormat):
    name: ClassVar[str] = "python"
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    #: Loading imports model.py: trusted models only.
    runs_code: ClassVar[bool] = True

    def detect(self, path: Path) -> bool:
        if path.is_dir():
            return (path / MODEL_FILE).is_file()
        return path.name == MODEL_FILE and path.is_file()

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        source = path / MODEL_FILE if path.is_dir() else path
        folder = source.parent
        if not options.trusted:
            # Refused before the file is opened: importing it runs it.
            raise UntrustedModel(
                f"{source.name} is Python code: serving it runs it inside the server; mark the model trusted "
                "(--trusted or 'trusted: true' in its config) if you trust its source"
            )
        try:
            real = source.resolve(strict=True)
            real.relative_to(folder.resolve())
            size = real.stat().st_size
        except FileNotFoundError:
            raise MlportError(f"{source} does not exist") from None
        except ValueError:
            raise MlportError(f"{source.name} links outside its model folder") from None
        if not real.is_file():
            raise MlportError(f"{source.name} is not a file")
        if size > MAX_SOURCE_BYTES:
            raise MlportError(f"{source.name} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB")
        return PythonEvaluator(real, folder.resolve(), options)
