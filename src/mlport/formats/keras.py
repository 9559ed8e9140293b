"""Keras models: ``*.keras`` (Keras 3 zip) and ``*.h5``/``*.hdf5`` (legacy HDF5), run by Keras 3 on TensorFlow.

Safe mode: a Keras model file holds a configuration that names the layers to build. Some layers carry
code: a ``Lambda`` layer (Python bytecode), a Python lambda given as an activation, and custom objects
(layers, functions) from modules outside Keras. Before Keras sees the file, its configuration is read
(``config.json`` in the zip, the ``model_config`` attribute of the HDF5 file) and such objects are listed;
an untrusted model holding any is refused with :class:`UntrustedModel`, naming them. Keras then loads with
``safe_mode=True`` unless the model is trusted, a second guard that does not depend on this check.

A trusted model may use custom objects: the modules the configuration names for them (``.keras`` files
record the module of every object), and those of the model option ``modules: [package.module, ...]``
(``.h5`` files record only a registered name), are imported before loading so that their
``@keras.saving.register_keras_serializable`` classes and functions are known.

Signature: the model's inputs, named after their ``Input`` layers (or the keys of a model built on a dict
of inputs), with their dtypes and shapes (``-1`` for the batch axis and other free axes); the outputs are
named after the layers that produce them (or the keys of a dict of outputs). Predict runs the model's
graph through one traced TensorFlow function (``training=False``).

Model options: ``modules`` (see above), ``intra_op_threads``, ``inter_op_threads`` (see
:mod:`mlport.formats.tensorflow`: TensorFlow's thread pools are process-wide).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import zipfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, MissingExtra, ModelFormat, UntrustedModel
from mlport.formats.tensorflow import TF_TYPES, configure_threads, first_line, import_tensorflow

__all__ = ["KerasEvaluator", "KerasFormat", "code_objects", "read_config"]

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")
_ZIP_MAGIC = b"PK\x03\x04"
_H5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Largest model configuration read (the JSON that names the layers; the weights are not counted).
MAX_CONFIG_BYTES = 64 * 1024 * 1024
#: Most objects named in one refusal message.
_MAX_LISTED = 10
#: Modules custom objects may come from without counting as custom: Keras resolves these itself.
_KERAS_PACKAGES = frozenset({"keras", "keras_hub", "keras_cv", "keras_nlp", "builtins"})
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_OPTIONS = frozenset({"modules", "intra_op_threads", "inter_op_threads"})


# ------------------------------------------------------------------ the configuration, read without Keras
def read_config(path: Path) -> Any:
    """The model configuration (parsed JSON) of a ``.keras`` or ``.h5`` file, read without building anything."""
    suffix = path.suffix.lower()
    try:
        raw = _zip_config(path) if suffix in KERAS_SUFFIXES else _h5_config(path)
    except MlportError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise MlportError(f"{path.name} is not a readable Keras model file: {exc}") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MlportError(f"{path.name}: the model configuration is not valid JSON: {exc}") from None


def _zip_config(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo("config.json")
        except KeyError:
            raise MlportError(f"{path.name} is not a Keras 3 model file (it has no config.json)") from None
        if info.file_size > MAX_CONFIG_BYTES:
            raise MlportError(f"{path.name}: the model configuration is larger than "
                              f"{MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
        with zf.open(info) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # the size in the directory may lie
        if len(data) > MAX_CONFIG_BYTES:
            raise MlportError(f"{path.name}: the model configuration is larger than "
                              f"{MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
        return data


def _h5_config(path: Path) -> bytes:
    import h5py

    with h5py.File(path, "r") as f:
        attr = f.attrs.get("model_config")
        if attr is None:
            raise MlportError(f"{path.name} holds no Keras model (no model_config attribute); "
                              "weights-only files cannot be served")
        data = attr.encode("utf-8") if isinstance(attr, str) else bytes(attr)
    if len(data) > MAX_CONFIG_BYTES:
        raise MlportError(f"{path.name}: the model configuration is larger than "
                          f"{MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    return data


def _objects(config: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object (a dict with ``class_name``) of a configuration, without recursion.

    The function of a ``Lambda`` layer is not walked: the layer itself is what gets reported.
    """
    queue = deque([config])
    while queue:
        node = queue.popleft()
        if isinstance(node, dict):
            is_object = isinstance(node.get("class_name"), str)
            if is_object:
                yield node
            if is_object and node["class_name"] == "Lambda":
                continue
            queue.extend(node.values())
        elif isinstance(node, list):
            queue.extend(node)


def _custom_module(obj: dict[str, Any]) -> str | None:
    module = obj.get("module")
    if isinstance(module, str) and module and module.split(".", 1)[0] not in _KERAS_PACKAGES:
        return module
    return None


def code_objects(config: Any) -> tuple[list[str], list[str]]:
    """What loading would run code for, as readable names, and the modules custom objects come from."""
    found: list[str] = []
    modules: list[str] = []
    if isinstance(config, dict):
        # the compile configuration (loss, metrics, optimizer) is never built: models load with compile=False
        config = {k: v for k, v in config.items() if k != "compile_config"}
    for obj in _objects(config):
        cls = obj["class_name"]
        inner = obj.get("config")
        layer = inner.get("name") if isinstance(inner, dict) else None
        module = _custom_module(obj)
        if cls == "Lambda":
            found.append(f"Lambda layer '{layer}'" if isinstance(layer, str) else "a Lambda layer")
        elif cls == "__lambda__":
            found.append("a Python lambda")
        elif module is not None:
            found.append(f"custom object '{module}.{cls}'")
            if module not in modules:
                modules.append(module)
        elif "module" not in obj and ">" in cls and cls.split(">", 1)[0] not in _KERAS_PACKAGES:
            found.append(f"custom object '{cls}'")  # a legacy (.h5) configuration: a registered name only
    return list(dict.fromkeys(found)), modules


def _import_modules(names: list[str], path: Path) -> None:
    """Import the modules of a trusted model's custom objects, so that their registrations run."""
    for name in names:
        if name == "__main__" or not _MODULE_NAME.match(name):
            raise MlportError(f"{path.name} names custom objects from module {name!r}, which cannot be imported; "
                              "load it from a file saved with the module importable")
        try:
            if importlib.util.find_spec(name) is None:
                raise ImportError(f"No module named {name!r}")
            importlib.import_module(name)
        except Exception as exc:
            raise MlportError(f"{path.name} uses custom objects from module {name!r}, which could not be "
                              f"imported: {first_line(exc)}") from None


def _option_modules(options: LoadOptions) -> list[str]:
    raw = options.options.get("modules", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or len(raw) > 64 or not all(isinstance(m, str) and _MODULE_NAME.match(m)
                                                              for m in raw):
        raise InvalidInput("the option modules must list up to 64 importable module names (package.module)")
    return [str(m) for m in raw]


# ------------------------------------------------------------------ evaluator
def _datatype(dtype: Any, what: str) -> DataType:
    name = getattr(dtype, "name", dtype)
    datatype = TF_TYPES.get(str(name))
    if datatype is None:
        raise MlportError(f"{what} has dtype {name}, which mlport does not serve")
    return datatype


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in shape)


def _output_names(model: Any, outputs: list[Any]) -> list[str]:
    """Names for a list of output tensors: the model's output names, else the layers that produce them."""
    names = getattr(model, "output_names", None)
    if isinstance(names, list | tuple) and len(names) == len(outputs) and all(isinstance(n, str) for n in names):
        candidates = [str(n) for n in names]
    else:
        candidates = []
        for t in outputs:
            history = getattr(t, "_keras_history", None)
            op = getattr(history, "operation", None) if history is not None else None
            candidates.append(str(getattr(op, "name", "") or ""))
    if all(candidates) and len(set(candidates)) == len(candidates):
        return candidates
    return [f"output_{i}" for i in range(len(outputs))]


def _input_structure(model: Any, name: str) -> tuple[str, list[str], list[Any], list[str] | None]:
    """How the model takes its inputs ("dict", "list" or "one"), their names and tensors, and the names of
    its outputs (``None`` when they come as a dict)."""
    structure = _structure(model, "input")
    outputs = _structure(model, "output")
    if structure is None or outputs is None:
        raise MlportError(f"{name}: the model has no defined inputs or outputs; build it on keras.Input "
                          "(or call it once) before saving")
    if isinstance(structure, list | tuple) and len(structure) == 1:
        structure = structure[0]
    if isinstance(structure, dict):
        kind, in_names, tensors = "dict", [str(k) for k in structure], list(structure.values())
    elif isinstance(structure, list | tuple):
        kind, tensors = "list", list(structure)
        in_names = [str(t.name) for t in tensors]
    else:
        kind, tensors, in_names = "one", [structure], [str(structure.name)]
    if len(set(in_names)) != len(in_names):
        raise MlportError(f"{name}: the model has several inputs named alike: {in_names}")
    if isinstance(outputs, dict):
        return kind, in_names, tensors, None
    out_list = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
    return kind, in_names, tensors, _output_names(model, out_list)


class KerasEvaluator(Evaluator):
    """A Keras model traced once into a TensorFlow function over its input structure."""

    platform = "keras"

    def __init__(self, tf: Any, model: Any, name: str) -> None:
        self._tf = tf
        self._model: Any = model
        kind, in_names, tensors, out_keys = _input_structure(model, name)
        inputs = [TensorSpec(n, _datatype(t.dtype, f"input '{n}'"), _shape(t.shape))
                  for n, t in zip(in_names, tensors, strict=True)]
        self._in_names = in_names
        self._in_dtypes = {n: tf.as_dtype(str(getattr(t.dtype, "name", t.dtype)))
                           for n, t in zip(in_names, tensors, strict=True)}

        def run(feed: dict[str, Any]) -> dict[str, Any]:
            if kind == "dict":
                x: Any = feed
            elif kind == "list":
                x = [feed[n] for n in in_names]
            else:
                x = feed[in_names[0]]
            out = model(x, training=False)
            if isinstance(out, dict):
                return {str(k): v for k, v in out.items()}
            flat = list(out) if isinstance(out, list | tuple) else [out]
            keys = out_keys or [f"output_{i}" for i in range(len(flat))]
            return dict(zip(keys, flat, strict=True))

        specs = {n: tf.TensorSpec(_shape_or_none(t.shape), self._in_dtypes[n], name=n)
                 for n, t in zip(in_names, tensors, strict=True)}
        try:
            self._fn: Any = tf.function(run, autograph=False).get_concrete_function(specs)
        except Exception as exc:
            raise MlportError(f"{name}: the model could not be traced into a TensorFlow function: "
                              f"{first_line(exc)}") from None
        out_specs = self._fn.structured_outputs
        self._out_names = sorted(out_specs) if out_keys is None else out_keys
        self._bfloat16_out: set[str] = set()
        served = [self._served_output(tf, name, n, out_specs[n]) for n in self._out_names]
        self.signature = Signature(tuple(inputs), tuple(served))

    def _served_output(self, tf: Any, name: str, out: str, t: Any) -> TensorSpec:
        """The spec of one output of the traced function (bfloat16 ones are noted: they are served as float32)."""
        if not isinstance(t, tf.Tensor | tf.TensorSpec):
            raise MlportError(f"{name}: output '{out}' is not a dense tensor")
        if t.shape.rank is None:
            raise MlportError(f"{name}: output '{out}' has an unknown rank")
        if t.dtype == tf.bfloat16:
            self._bfloat16_out.add(out)
        return TensorSpec(out, _datatype(t.dtype, f"output '{out}'"), _shape(t.shape.as_list()))

    def predict(self, inputs: Arrays) -> Arrays:
        tf = self._tf
        fn = self._fn
        if fn is None:
            raise MlportError("the model was closed")
        feed: dict[str, Any] = {}
        for n in self._in_names:
            dtype = self._in_dtypes[n]
            arr = inputs[n]
            if dtype == tf.bfloat16:
                feed[n] = tf.cast(tf.constant(arr), tf.bfloat16)
            else:
                feed[n] = tf.constant(arr, dtype=dtype)
        out = fn(feed)
        result: Arrays = {}
        for n in self._out_names:
            tensor = out[n]
            if n in self._bfloat16_out:
                tensor = tf.cast(tensor, tf.float32)
            result[n] = np.asarray(tensor.numpy())
        return result

    def close(self) -> None:
        self._fn = None
        self._model = None


def _structure(model: Any, kind: str) -> Any:
    """The model's input (or output) structure: a tensor, a list or a dict; ``None`` when it has none."""
    for attr in (kind, f"{kind}s"):  # a Sequential model knows only its list of inputs/outputs
        try:
            found = getattr(model, attr)
        except (AttributeError, ValueError):
            continue
        if found is not None and (not isinstance(found, list | tuple | dict) or len(found) > 0):
            return found
    return None


def _shape_or_none(shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


# ------------------------------------------------------------------ format
def _has_magic(path: Path, magic: bytes) -> bool:
    with path.open("rb") as f:
        return f.read(len(magic)) == magic


class KerasFormat(ModelFormat):
    name: ClassVar[str] = "keras"
    extra: ClassVar[str | None] = "keras"
    requires: ClassVar[tuple[str, ...]] = ("tensorflow", "keras", "h5py")
    #: Plain Keras layers load without running code from the file; Lambda layers and custom objects are
    #: refused unless the model is trusted (checked in :meth:`load`).
    runs_code: ClassVar[bool] = False

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        suffix = path.suffix.lower()
        if suffix in KERAS_SUFFIXES:
            return _has_magic(path, _ZIP_MAGIC)
        if suffix in H5_SUFFIXES:
            return _has_magic(path, _H5_MAGIC)
        return False

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        unknown = sorted(set(options.options) - _OPTIONS)
        if unknown:
            raise InvalidInput(f"the keras format has no option {', '.join(repr(k) for k in unknown)}; "
                               f"its options: {', '.join(sorted(_OPTIONS))}")
        extra_modules = _option_modules(options)
        config = read_config(path)
        found, modules = code_objects(config)
        if found and not options.trusted:
            listed = ", ".join(found[:_MAX_LISTED]) + (f" and {len(found) - _MAX_LISTED} more"
                                                         if len(found) > _MAX_LISTED else "")
            raise UntrustedModel(
                f"{path.name} holds code that loading would run: {listed}; mark the model trusted "
                "(--trusted or 'trusted: true' in its config) if you trust its source"
            )
        tf = import_tensorflow(self.name, self.extra or self.name)
        configure_threads(tf, options)
        keras = _import_keras()
        if options.trusted:
            _import_modules([*extra_modules, *modules], path)
        try:
            model = keras.saving.load_model(str(path), compile=False, safe_mode=not options.trusted)
        except Exception as exc:
            text = first_line(exc)
            if not options.trusted and ("safe_mode" in text or "arbitrary code" in text):
                raise UntrustedModel(
                    f"{path.name}: Keras refused to load it in safe mode ({text}); mark the model trusted "
                    "(--trusted or 'trusted: true' in its config) if you trust its source"
                ) from None
            raise MlportError(f"Keras could not load {path.name}: {text}") from None
        if not isinstance(model, keras.Model):
            raise MlportError(f"{path.name} holds a {type(model).__name__}, not a Keras model")
        return KerasEvaluator(tf, model, path.name)


def _import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras
    except ImportError as exc:
        raise MissingExtra(f"the keras format needs keras, which could not be imported ({first_line(exc)}): "
                           "pip install 'mlport[keras]'") from None
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise MlportError(f"Keras runs on the {backend} backend here; mlport serves Keras models on TensorFlow "
                          "(set KERAS_BACKEND=tensorflow)")
    return keras
