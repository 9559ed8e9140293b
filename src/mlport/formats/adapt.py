"""What a model config says over a loaded model: a declared signature (names, datatypes, shapes) and class labels.

:func:`load_adapted` is the one way a model file becomes a served evaluator (the model manager, manifest steps
and ``mlport describe`` all call it): the format loads the file with the options its config gives, and
:func:`adapt` wraps an evaluator so that clients see the declared signature. Inputs arrive in the served
datatypes and are cast (one numpy call per tensor) to the model's own before predict; outputs are cast to
the declared datatypes and renamed; an output of class indices with labels answers the labels instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.formats.base import (
    Arrays,
    ContextEvaluator,
    Evaluator,
    FileSignature,
    LoadOptions,
    ModelFormat,
    RequestContext,
)
from mlport.formats.config import ModelConfig, TensorConfig

__all__ = ["AdaptedContextEvaluator", "AdaptedEvaluator", "adapt", "describe_adapted", "load_adapted"]


def _merge(spec: TensorSpec, declared: TensorConfig, kind: str) -> TensorSpec:
    datatype = DataType.parse(declared.datatype) if declared.datatype else spec.datatype
    shape = spec.shape
    # the shape the model sees: the reshape when there is one, else the served shape
    model_view, what = (declared.reshape, "reshape") if declared.reshape is not None else (declared.shape, "shape")
    if model_view is not None:
        if spec.shape and len(model_view) != len(spec.shape):
            raise InvalidInput(
                f"signature {kind} '{declared.name}': the config gives {what} {list(model_view)}, "
                f"the model has {list(spec.shape)} (a different rank)"
            )
        for want, have in zip(model_view, spec.shape, strict=False):
            if have != -1 and want != have:
                raise InvalidInput(
                    f"signature {kind} '{declared.name}': the config gives {what} {list(model_view)}, "
                    f"which does not fit the model's {list(spec.shape)}"
                )
    if declared.shape is not None:
        shape = declared.shape
    if (datatype is DataType.BYTES) != (spec.datatype is DataType.BYTES) and not (
        kind == "output" and datatype is DataType.BYTES
    ):
        raise InvalidInput(
            f"signature {kind} '{declared.name}': the model's {spec.datatype.value} cannot be served as "
            f"{datatype.value}"
        )
    return TensorSpec(declared.served_name, datatype, shape)


def _declare(model: tuple[TensorSpec, ...], declared: tuple[TensorConfig, ...], kind: str) -> list[TensorSpec]:
    by_name = {t.name: t for t in declared}
    known = {s.name for s in model}
    unknown = [t.name for t in declared if t.name not in known]
    if unknown:
        raise InvalidInput(
            f"the config declares {kind} {', '.join(repr(n) for n in unknown)}, which the model does not have; "
            f"it has: {', '.join(sorted(known))}"
        )
    return [_merge(s, by_name[s.name], kind) if s.name in by_name else s for s in model]


def _reshape(name: str, arr: np.ndarray[Any, Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """``arr`` in ``shape`` (a ``-1`` batch axis keeps the array's own batch size): a view, no copy."""
    target = (arr.shape[0], *shape[1:]) if shape[:1] == (-1,) and arr.ndim else shape
    try:
        return arr.reshape(target)
    except ValueError:
        raise InvalidInput(f"'{name}' with shape {list(arr.shape)} cannot be reshaped to {list(shape)}") from None


class AdaptedEvaluator(Evaluator):
    """An evaluator seen through its model config (signature declared in the config, labels)."""

    def __init__(self, inner: Evaluator, config: ModelConfig) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.signature_name = inner.signature_name
        own = inner.signature
        declared = config.signature
        inputs = _declare(own.inputs, declared.inputs, "input") if declared else list(own.inputs)
        outputs = _declare(own.outputs, declared.outputs, "output") if declared else list(own.outputs)
        reshaped = {t.name: t.reshape for t in (*declared.inputs, *declared.outputs)} if declared else {}
        #: served input name -> (model name, model dtype when a cast is needed, model shape when reshaped)
        self._in: list[tuple[str, str, np.dtype[Any] | None, tuple[int, ...] | None]] = []
        for served, model in zip(inputs, own.inputs, strict=True):
            cast = model.datatype.numpy if served.datatype is not model.datatype else None
            self._in.append((served.name, model.name, cast, reshaped.get(model.name)))
        #: served shapes of the outputs the model gives in another layout
        self._out_shape = {s.name: s.shape for s, m in zip(outputs, own.outputs, strict=True)
                           if reshaped.get(m.name) is not None}
        self._out: list[tuple[str, str, np.dtype[Any] | None, np.ndarray[Any, Any] | None]] = []
        for i, (served, model) in enumerate(zip(outputs, own.outputs, strict=True)):
            names = config.labels.get(served.name) or config.labels.get(model.name)
            table = None
            if names is not None:
                if model.datatype.numpy.kind not in "iu":
                    raise InvalidInput(
                        f"labels are given for output '{served.name}', which is {model.datatype.value}; "
                        "labels name class indices (an integer output)"
                    )
                table = np.asarray(names, dtype=object)
                outputs[i] = served = TensorSpec(served.name, DataType.BYTES, served.shape)
            cast = served.datatype.numpy if served.datatype is not model.datatype and table is None else None
            self._out.append((served.name, model.name, cast, table))
        unknown = set(config.labels) - {o.name for o in outputs} - {o.name for o in own.outputs}
        if unknown:
            raise InvalidInput(f"labels are given for {', '.join(sorted(unknown))}, which the model does not output")
        self.signature = Signature(tuple(inputs), tuple(outputs))

    def predict(self, inputs: Arrays) -> Arrays:
        return self._outputs(self.inner.predict(self._feed(inputs)))

    def _feed(self, inputs: Arrays) -> Arrays:
        feed: Arrays = {}
        for served, model, cast, shape in self._in:
            arr = inputs[served]
            if shape is not None:
                arr = _reshape(served, arr, shape)
            feed[model] = arr.astype(cast, copy=False) if cast is not None else arr
        return feed

    def _outputs(self, raw: Arrays) -> Arrays:
        out: Arrays = {}
        for served, model, cast, table in self._out:
            if model not in raw:
                continue
            arr = np.asarray(raw[model])
            if table is not None:
                if arr.size and (arr.min() < 0 or arr.max() >= len(table)):
                    raise MlportError(
                        f"output '{served}' gave class index {int(arr.min() if arr.min() < 0 else arr.max())}, "
                        f"which has no label (the config gives {len(table)})",
                        ErrorCode.INTERNAL,
                    )
                arr = table[arr]
            elif cast is not None:
                arr = arr.astype(cast, copy=False)
            if served in self._out_shape:
                arr = _reshape(served, arr, self._out_shape[served])
            out[served] = arr
        return out

    def signatures(self) -> Mapping[str, Evaluator]:
        return self.inner.signatures()

    def tree_model(self) -> Any | None:
        return self.inner.tree_model()

    def close(self) -> None:
        self.inner.close()


class AdaptedContextEvaluator(AdaptedEvaluator, ContextEvaluator):
    """A model that reads the request's context (a manifest), seen through its model config."""

    def __init__(self, inner: ContextEvaluator, config: ModelConfig) -> None:
        super().__init__(inner, config)
        self.context_inner = inner

    def predict_in(self, inputs: Arrays, context: RequestContext) -> Arrays:
        return self._outputs(self.context_inner.predict_in(self._feed(inputs), context))

    def feedback(self, request_id: str, reward: float) -> None:
        self.context_inner.feedback(request_id, reward)


def adapt(evaluator: Evaluator, config: ModelConfig) -> Evaluator:
    """``evaluator`` as the config declares it; the evaluator itself when the config declares nothing."""
    if config.signature is None and not config.labels:
        return evaluator
    if isinstance(evaluator, ContextEvaluator):
        return AdaptedContextEvaluator(evaluator, config)
    return AdaptedEvaluator(evaluator, config)


def _options(config: ModelConfig, trusted: bool, intra_op_threads: int) -> LoadOptions:
    return LoadOptions(
        trusted=trusted or config.trusted,
        options=dict(config.options),
        intra_op_threads=intra_op_threads,
        signature=config.signature.complete() if config.signature is not None else None,
    )


class _FilesOnly(Evaluator):
    """The signature a model's files declare, to see it through :func:`adapt`; it predicts nothing."""

    def __init__(self, known: FileSignature) -> None:
        self.signature = known.signature
        self.platform = known.platform

    def predict(self, inputs: Arrays) -> Arrays:
        raise MlportError("a model described from its files is not loaded", ErrorCode.INTERNAL)


def describe_adapted(fmt: ModelFormat, path: Path, config: ModelConfig) -> FileSignature | None:
    """What :func:`load_adapted` would serve, from the files only (:meth:`ModelFormat.describe_files`); ``None``
    when the format cannot tell without loading, or the config does not fit what the files declare (the load
    says why)."""
    known = fmt.describe_files(path, _options(config, False, 0))
    if known is None:
        return None
    try:
        return FileSignature(adapt(_FilesOnly(known), config).signature, known.platform)
    except MlportError:
        return None


def load_adapted(
    fmt: ModelFormat, path: Path, config: ModelConfig, *, trusted: bool = False, intra_op_threads: int = 0
) -> Evaluator:
    """Load ``path`` with ``fmt`` as ``config`` says (trust, library options, declared signature), seen through
    :func:`adapt`. ``trusted`` adds the operator's trust to the config's own; the loaded model is closed when
    the config does not fit it."""
    loaded = fmt.load(path, _options(config, trusted, intra_op_threads))
    try:
        return adapt(loaded, config)
    except BaseException:
        loaded.close()
        raise
