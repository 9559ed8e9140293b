"""PyTorch models: TorchScript archives (``*.pt``, ``*.ts``) and ``torch.export`` programs (``*.pt2``).

Trust: every PyTorch file loads only for trusted models (``--trusted`` or ``trusted: true`` in its config).

- ``torch.jit.load``: PyTorch documents that malicious pickle data can execute arbitrary code during
  ``torch.jit.load`` and says to load only data you trust. A TorchScript archive holds TorchScript code and
  pickled constants and attributes, read by torch's own unpickler; its safety for untrusted files is not
  guaranteed by PyTorch, so mlport does not claim it either.
- ``torch.export.load``: documented to use pickle under the hood ("never load data from an untrusted
  source"); it unpickles weights, constants and example inputs of the archive with ``weights_only=False``.
- ``torch.save`` files (``.pt``/``.pth`` pickles of a state dict or of an ``nn.Module``) run code when
  unpickled. Trusted, a pickled ``nn.Module`` is loaded with ``torch.load(weights_only=False)`` (its class
  must be importable by the server) and served like TorchScript; a state dict holds weights without the
  model's code and cannot be served.

What a file holds is told from its zip directory, without unpickling anything, so that a refusal says what
the file is. The file suffix does not decide it.

Signature:

- ``torch.export`` programs record their inputs and outputs: inputs are the program's user inputs (named as
  ``forward``'s parameters), with the dtypes and shapes of the example inputs; dynamic dimensions
  (``torch.export.Dim``) are ``-1``. Outputs are named after the structure ``forward`` returns: ``output``
  for one tensor, ``output_0``, ``output_1``... for a tuple or list, the keys of a dict (nested: joined
  with ``_``).
- TorchScript archives (and pickled modules) do not record dtypes or shapes: the model config must declare
  a complete ``signature:`` (every input and output with ``datatype`` and ``shape``); without one, loading
  fails with the config line to write. Declared inputs are passed by name when they are ``forward``'s
  parameter names, else by position in the declared order. ``forward`` may return a tensor (one declared
  output), a tuple or list of tensors (the declared outputs in order) or a dict of tensors (by name).

Running: under ``torch.inference_mode()`` on CPU. Inputs become tensors with ``torch.from_numpy`` (shared
memory; copied only when read-only, not C-contiguous or not in native byte order); ``bfloat16`` tensors of an
exported program are served as FP32. Outputs are checked against the signature (present, datatype, shape,
batch size) and an output that breaks it is an error naming it.

PyTorch 2.13 marks TorchScript (``torch.jit.script``/``trace``/``save``/``load``) deprecated in favour of
``torch.export``; both are served. Files load one at a time: ``torch.export.load`` keeps its deserializer in
a global and fails when two loads overlap.

Threads: ``torch.set_num_threads`` is process-wide: the first PyTorch model loaded sets it from
``--intra-op-threads`` (0 keeps PyTorch's default); the per-model ``intra_op_threads`` option does not
apply to PyTorch.
"""

from __future__ import annotations

import inspect
import logging
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import ErrorCode, MlportError
from mlport.formats.base import (
    Arrays,
    Evaluator,
    FileSignature,
    LoadOptions,
    MissingExtra,
    ModelFormat,
    UntrustedModel,
)
from mlport.formats.python import batch_size, check_outputs

__all__ = ["TorchEvaluator", "TorchFormat"]

log = logging.getLogger(__name__)

TORCHSCRIPT = "TorchScript archive"
EXPORTED = "torch.export program"
PICKLE = "torch.save pickle"

_ZIP_MAGIC = b"PK\x03\x04"
_SUFFIXES = (".pt", ".pth", ".ts", ".pt2")
#: Most entries a PyTorch zip archive may hold.
MAX_ARCHIVE_ENTRIES = 1_000_000
#: Most inputs or outputs one model may have.
MAX_TENSORS = 1024

_TRUST_HINT = "mark the model trusted (--trusted or 'trusted: true' in its config) if you trust its source"

_threads_lock = threading.Lock()
_threads_set = False
#: torch.export.load keeps its deserializer in a global: loads run one at a time.
_load_lock = threading.Lock()


# ------------------------------------------------------------------ what the file holds
def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4)


def file_kind(path: Path) -> str:
    """TORCHSCRIPT, EXPORTED or PICKLE, from the file's zip directory (nothing is unpickled)."""
    try:
        head = _head(path)
    except OSError as exc:
        raise MlportError(f"cannot read {path.name}: {exc}") from None
    if head[:1] == b"\x80":  # a pickle stream: torch.save with the legacy (non-zip) serialization
        return PICKLE
    if head != _ZIP_MAGIC:
        raise MlportError(f"{path.name} is not a PyTorch file (a TorchScript archive, a torch.export program "
                          "or a torch.save file)")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise MlportError(f"{path.name} is not a readable zip archive: {exc}") from None
    if len(infos) > MAX_ARCHIVE_ENTRIES:
        raise MlportError(f"{path.name} holds more than {MAX_ARCHIVE_ENTRIES} files")
    # every entry sits under one top folder named by the archive
    parts = {info.filename.split("/", 1)[1] if "/" in info.filename else info.filename for info in infos}
    if "constants.pkl" in parts or any(p.startswith("code/") for p in parts):
        return TORCHSCRIPT
    if ("archive_format" in parts or "serialized_exported_program.json" in parts
            or any(p.startswith("models/") and p.endswith(".json") for p in parts)):
        return EXPORTED
    if "data.pkl" in parts:
        return PICKLE
    raise MlportError(f"{path.name} is a zip archive, but not a TorchScript archive, a torch.export program "
                      "or a torch.save file")


def _refusal(path: Path, kind: str) -> UntrustedModel:
    if kind == PICKLE:
        return UntrustedModel(
            f"{path.name} is a torch.save pickle, not a TorchScript archive: unpickling it runs code from the "
            f"file; {_TRUST_HINT} (a pickled nn.Module then loads; a state dict alone cannot be served), or "
            "save the model with torch.jit.save or torch.export.save"
        )
    why = ("PyTorch documents that torch.jit.load can execute code from crafted files" if kind == TORCHSCRIPT
           else "torch.export.load unpickles parts of it, which can run code")
    return UntrustedModel(f"{path.name} is a {kind}: {why}; {_TRUST_HINT}")


# ------------------------------------------------------------------ datatypes and threads
def _datatypes() -> dict[Any, DataType]:
    import torch

    table: dict[Any, DataType] = {
        torch.float32: DataType.FP32, torch.float64: DataType.FP64, torch.float16: DataType.FP16,
        torch.bfloat16: DataType.FP32,  # served as FP32: numpy has no bfloat16
        torch.int8: DataType.INT8, torch.int16: DataType.INT16, torch.int32: DataType.INT32,
        torch.int64: DataType.INT64, torch.uint8: DataType.UINT8, torch.bool: DataType.BOOL,
    }
    for name, datatype in (("uint16", DataType.UINT16), ("uint32", DataType.UINT32), ("uint64", DataType.UINT64)):
        if hasattr(torch, name):
            table[getattr(torch, name)] = datatype
    return table


def _set_threads(count: int) -> None:
    global _threads_set
    import torch

    with _threads_lock:
        if _threads_set or count <= 0:
            return
        torch.set_num_threads(count)
        _threads_set = True
        log.info("PyTorch models: torch.set_num_threads(%d)", count)


def _tensor(arr: np.ndarray[Any, Any], cast: Any) -> Any:
    import torch

    if not (arr.flags.writeable and arr.flags.c_contiguous and arr.dtype.isnative):
        arr = np.array(arr, order="C", dtype=arr.dtype.newbyteorder("="))
    t = torch.from_numpy(arr)
    return t.to(cast) if cast is not None else t


def _array(value: Any, name: str, where: str) -> np.ndarray[Any, Any]:
    import torch

    if not isinstance(value, torch.Tensor):
        raise MlportError(f"{where}: output '{name}' is a {type(value).__name__}, not a tensor", ErrorCode.INTERNAL)
    t = value.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    try:
        out: np.ndarray[Any, Any] = t.cpu().numpy()
    except (TypeError, RuntimeError) as exc:
        raise MlportError(f"{where}: output '{name}' cannot become a numpy array: {exc}", ErrorCode.INTERNAL) from None
    return out


# ------------------------------------------------------------------ torch.export programs
def _path_name(path: Sequence[Any]) -> str:
    if not path:
        return "output"
    pieces = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    name = "_".join(pieces)
    return f"output_{name}" if hasattr(path[0], "idx") else name


def _exported(ep: Any, where: str) -> tuple[Signature, list[Any], Any, list[str]]:
    """The program's signature, per-input casts, input tree spec and output names (in flattened order)."""
    import torch
    from torch.utils import _pytree as pytree

    types = _datatypes()
    nodes = {n.name: n for n in ep.graph.nodes}
    user_inputs = list(ep.graph_signature.user_inputs)
    in_spec = ep.call_spec.in_spec
    if in_spec is None or in_spec.num_leaves != len(user_inputs) or len(user_inputs) > MAX_TENSORS:
        raise MlportError(f"{where}: the program takes arguments that are not tensors; mlport feeds tensors only")

    def spec(name: str, what: str) -> tuple[TensorSpec, Any]:
        node = nodes.get(name)
        val = node.meta.get("val") if node is not None else None
        if not isinstance(val, torch.Tensor):
            raise MlportError(f"{where}: {what} '{name}' is not a tensor; mlport serves tensors only")
        datatype = types.get(val.dtype)
        if datatype is None:
            raise MlportError(f"{where}: {what} '{name}' is {val.dtype}, which mlport does not serve")
        shape = tuple(int(d) if isinstance(d, int) else -1 for d in val.shape)
        return TensorSpec(name, datatype, shape), (val.dtype if val.dtype == torch.bfloat16 else None)

    inputs = [spec(str(n), "input") for n in user_inputs]
    out_spec = ep.call_spec.out_spec
    user_outputs = list(ep.graph_signature.user_outputs)
    if out_spec is None or out_spec.num_leaves != len(user_outputs) or not user_outputs:
        raise MlportError(f"{where}: the program's outputs are not a tensor, or a tuple, list or dict of tensors")
    if len(user_outputs) > MAX_TENSORS:
        raise MlportError(f"{where}: the program has more than {MAX_TENSORS} outputs")
    shaped = pytree.tree_unflatten(list(range(len(user_outputs))), out_spec)
    names = [_path_name(p) for p, _ in pytree.tree_flatten_with_path(shaped)[0]]
    if len(set(names)) != len(names):
        raise MlportError(f"{where}: the program's outputs do not have distinct names: {names}")
    outputs = []
    for name, node_name in zip(names, user_outputs, strict=True):
        if node_name is None:
            raise MlportError(f"{where}: output '{name}' is a constant, not a tensor; mlport serves tensors only")
        found, _ = spec(str(node_name), "output")
        outputs.append(TensorSpec(name, found.datatype, found.shape))
    signature = Signature(tuple(s for s, _ in inputs), tuple(outputs))
    return signature, [c for _, c in inputs], in_spec, names


# ------------------------------------------------------------------ TorchScript and pickled modules
def _parameters(module: Any) -> tuple[list[str], set[str]] | None:
    """``forward``'s parameter names and the required ones, or ``None`` when they cannot be told."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:  # TorchScript
        args = list(schema.arguments)[1:]  # without self
        return [a.name for a in args], {a.name for a in args if not a.has_default_value()}
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    return [p.name for p in params], {p.name for p in params if p.default is p.empty}


def _output_count(module: Any) -> int:
    schema = getattr(getattr(module, "forward", None), "schema", None)
    try:
        elements = schema.returns[0].type.elements() if schema is not None else None
    except (AttributeError, IndexError, RuntimeError):
        elements = None
    return len(elements) if elements else 1


def _needs_signature(path: Path, kind: str, module: Any) -> MlportError:
    found = _parameters(module)
    names = found[0] if found else ["input"]
    n_out = _output_count(module)
    outs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    example = ("signature: {inputs: [" + ", ".join(f"{{name: {n}, datatype: FP32, shape: [-1, 4]}}" for n in names)
               + "], outputs: [" + ", ".join(f"{{name: {n}, datatype: FP32, shape: [-1, 3]}}" for n in outs) + "]}")
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return MlportError(
        f"{path.name} is a {kind}, which does not record the datatypes and shapes of its inputs and outputs: "
        f"declare them in the model config ({stem}.model.yaml beside the file, or model.yaml in its model "
        f"folder), e.g. {example} (write the model's own datatypes and shapes)"
    )


def _by_name(signature: Signature, module: Any, where: str) -> bool:
    """True when the declared inputs are passed by name, False by position; raises when they cannot fit."""
    found = _parameters(module)
    declared = signature.input_names
    if found is None:
        return False
    params, required = found
    if set(declared) <= set(params) and required <= set(declared):
        return True
    if len(required) <= len(declared) <= len(params):
        return False
    takes = ", ".join(params) or "nothing"
    raise MlportError(f"{where}: the model config declares inputs {', '.join(declared)}, but forward takes {takes}")


def _named_outputs(raw: Any, names: list[str], where: str) -> dict[str, Any]:
    """What forward returned, mapped onto the declared outputs."""
    import torch

    if isinstance(raw, torch.Tensor):
        if len(names) != 1:
            raise MlportError(f"{where}: forward returned one tensor; the signature declares {len(names)} outputs "
                              f"({', '.join(names)})", ErrorCode.INTERNAL)
        return {names[0]: raw}
    if isinstance(raw, list | tuple):
        if len(raw) != len(names):
            raise MlportError(f"{where}: forward returned {len(raw)} values; the signature declares "
                              f"{len(names)} outputs ({', '.join(names)})", ErrorCode.INTERNAL)
        return dict(zip(names, raw, strict=True))
    if isinstance(raw, Mapping):
        missing = [n for n in names if n not in raw]
        if missing:
            gave = ", ".join(repr(str(k)) for k in list(raw)[:20])
            raise MlportError(f"{where}: forward returned no {', '.join(repr(n) for n in missing)} "
                              f"(it returned {gave})", ErrorCode.INTERNAL)
        return {n: raw[n] for n in names}
    raise MlportError(f"{where}: forward returned a {type(raw).__name__}; mlport serves a tensor, or a tuple, "
                      "list or dict of tensors", ErrorCode.INTERNAL)


# ------------------------------------------------------------------ evaluator
class TorchEvaluator(Evaluator):
    """A TorchScript module, a pickled ``nn.Module`` or an exported program, run on CPU."""

    def __init__(self, path: Path, kind: str, options: LoadOptions) -> None:
        import torch

        self._where = path.name
        self._kind = kind
        self._casts: list[Any] = []
        self._program: Any = None
        try:
            with _load_lock:
                if kind == EXPORTED:
                    self._program = torch.export.load(str(path))
                    module = self._program.module()
                elif kind == TORCHSCRIPT:
                    module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
                else:
                    module = torch.load(str(path), map_location="cpu", weights_only=False)
        except MlportError:
            raise
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            detail = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]
            hint = "; the pickled module's class must be importable by the server" if kind == PICKLE else ""
            raise MlportError(f"torch could not load {path.name} ({kind}): {detail}{hint}") from None
        if kind == EXPORTED:
            self.platform = "pytorch_export"
            self.signature, self._casts, self._in_spec, self._out_names = _exported(self._program, path.name)
        else:
            if kind == PICKLE:
                self._check_module(module, path)
            self.platform = "pytorch_libtorch" if kind == TORCHSCRIPT else "pytorch"
            module.eval()
            if options.signature is None:
                raise _needs_signature(path, kind if kind == TORCHSCRIPT else "pickled nn.Module", module)
            self.signature = self._declared(options.signature, path.name)
            self._casts = [None] * len(self.signature.inputs)
            self._keywords = _by_name(self.signature, module, path.name)
        self._module = module
        self._in_names = self.signature.input_names

    @staticmethod
    def _check_module(obj: Any, path: Path) -> None:
        import torch

        if isinstance(obj, torch.nn.Module):
            return
        if isinstance(obj, Mapping):
            raise MlportError(
                f"{path.name} holds a state dict or checkpoint ({type(obj).__name__}): weights without the "
                "model's code, which cannot be served: save the model itself with "
                "torch.jit.save(torch.jit.script(model), ...) or torch.export.save(torch.export.export(model, ...))"
            )
        raise MlportError(f"{path.name} holds a {type(obj).__name__}, not an nn.Module")

    @staticmethod
    def _declared(signature: Signature, where: str) -> Signature:
        if len(signature.inputs) > MAX_TENSORS or len(signature.outputs) > MAX_TENSORS:
            raise MlportError(f"{where}: the signature declares more than {MAX_TENSORS} inputs or outputs")
        for spec in (*signature.inputs, *signature.outputs):
            if spec.datatype is DataType.BYTES:
                raise MlportError(f"{where}: '{spec.name}' is declared BYTES; PyTorch models take and give "
                                  "numeric tensors")
        return signature

    def predict(self, inputs: Arrays) -> Arrays:
        import torch

        tensors = [_tensor(inputs[n], c) for n, c in zip(self._in_names, self._casts, strict=True)]
        with torch.inference_mode():
            if self._kind == EXPORTED:
                from torch.utils import _pytree as pytree

                args, kwargs = pytree.tree_unflatten(tensors, self._in_spec)
                leaves = pytree.tree_leaves(self._module(*args, **kwargs))
                if len(leaves) != len(self._out_names):
                    raise MlportError(f"{self._where}: the program returned {len(leaves)} values, its signature "
                                      f"{len(self._out_names)}", ErrorCode.INTERNAL)
                raw = dict(zip(self._out_names, leaves, strict=True))
            else:
                if self._keywords:
                    result = self._module(**dict(zip(self._in_names, tensors, strict=True)))
                else:
                    result = self._module(*tensors)
                raw = _named_outputs(result, self.signature.output_names, self._where)
            arrays = {n: _array(v, n, self._where) for n, v in raw.items()}
        return check_outputs(self.signature, arrays, batch_size(self.signature, inputs), self._where)

    def close(self) -> None:
        self.__dict__.pop("_module", None)
        self._program = None


class TorchFormat(ModelFormat):
    name: ClassVar[str] = "torch"
    extra: ClassVar[str | None] = "torch"
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    #: TorchScript, torch.export and torch.save files all unpickle data when loaded: trusted models only.
    runs_code: ClassVar[bool] = True

    def detect(self, path: Path) -> bool:
        if path.suffix.lower() not in _SUFFIXES or not path.is_file():
            return False
        head = _head(path)
        return head == _ZIP_MAGIC or head[:1] == b"\x80"

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        missing = self.missing()
        if missing:
            raise MissingExtra(f"the {self.name} format needs {', '.join(missing)}: pip install 'mlport[torch]' "
                               "(install the CPU build of torch first: pip install torch --index-url "
                               "https://download.pytorch.org/whl/cpu)")
        kind = file_kind(path)
        if not options.trusted:
            raise _refusal(path, kind)
        if "intra_op_threads" in options.options:
            log.warning("%s: the intra_op_threads option does not apply to PyTorch (its thread count is "
                        "process-wide: use --intra-op-threads)", path.name)
        _set_threads(options.intra_op_threads)
        return TorchEvaluator(path, kind, options)

    def describe_files(self, path: Path, options: LoadOptions) -> FileSignature | None:
        """A TorchScript or pickled module serves the signature its config declares (an exported program's is in
        the program, read only by loading it)."""
        if options.signature is None:
            return None
        try:
            kind = file_kind(path)
        except MlportError:
            return None
        if kind == EXPORTED:
            return None
        return FileSignature(options.signature, "pytorch_libtorch" if kind == TORCHSCRIPT else "pytorch")
