"""The interface every model format implements."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import Signature
from mlport.errors import ErrorCode, InvalidInput, MlportError

__all__ = [
    "ContextEvaluator",
    "Evaluator",
    "FileSignature",
    "LoadOptions",
    "MissingExtra",
    "ModelFormat",
    "RequestContext",
    "UntrustedModel",
    "as_text",
    "send_feedback",
]

Arrays = dict[str, np.ndarray[Any, Any]]


def _text(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, bytes) else v


_as_text_elements = np.frompyfunc(_text, 1, 1)


def as_text(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A string tensor as an object array of ``str`` (bytes decoded as UTF-8; raises UnicodeDecodeError).

    One call per element: numpy has no exact vectorised UTF-8 decode for object arrays.
    """
    if arr.dtype.kind == "U":
        return arr.astype(object)
    if arr.dtype == object and set(map(type, arr.ravel().tolist())) <= {str}:
        return arr.copy()  # text already: one look at the element types (in C), no call per element
    out: np.ndarray[Any, Any] = _as_text_elements(arr)
    return out.reshape(arr.shape) if isinstance(out, np.ndarray) else np.array(out, dtype=object)


class MissingExtra(MlportError):
    """The library a format needs is not installed."""

    code = ErrorCode.FAILED_PRECONDITION


class UntrustedModel(MlportError):
    """Loading the model would run code from the file, and the operator has not trusted it."""

    code = ErrorCode.FAILED_PRECONDITION


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What the operator said about one model: trust, and options for the format's library."""

    trusted: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: Threads the format's library may use for one prediction (0: the library decides).
    intra_op_threads: int = 0
    #: The signature the model config declares (``signature:`` in model.yaml, or a Triton config.pbtxt),
    #: for formats whose files do not carry one (TorchScript); ``None`` when there is none.
    signature: Signature | None = None


@dataclass(frozen=True, slots=True)
class FileSignature:
    """A model's signature and platform as its files tell them, without loading it."""

    signature: Signature
    #: What the loaded evaluator's ``platform`` would be.
    platform: str


@dataclass(slots=True)
class RequestContext:
    """What a request tells a model beyond its tensors, and what the model tells back."""

    #: The request's id (OIP ``id``, or the ``X-Request-Id`` header), for feedback on routed requests.
    request_id: str | None = None
    #: A key that pins the request to one route of a router (``X-Routing-Key``, or ``routing_key``).
    routing_key: str | None = None
    #: Response parameters the model sets (which route or cascade stage answered...).
    parameters: dict[str, Any] = field(default_factory=dict)


class Evaluator(ABC):
    """A loaded model: a signature and a vectorised predict over a batch on axis 0."""

    signature: Signature
    #: A short name of the library/platform, shown in metadata (``onnxruntime``...).
    platform: str = ""
    #: The name of :attr:`signature` among the model's signatures (TF Serving's ``signature_name``).
    signature_name: str = "serving_default"

    @abstractmethod
    def predict(self, inputs: Arrays) -> Arrays:
        """Run the model on validated inputs (dtypes and shapes match the signature)."""

    def signatures(self) -> Mapping[str, Evaluator]:
        """The model's other named signatures (a SavedModel may have several), each an evaluator of its own.

        The evaluators share this one's resources; :meth:`close` of this evaluator releases them all.
        """
        return {}

    def for_signature(self, name: str | None) -> Evaluator:
        """The evaluator of signature ``name`` (``None`` or ``""``: this one)."""
        if not name or name == self.signature_name:
            return self
        found = self.signatures().get(name)
        if found is None:
            known = ", ".join(repr(s) for s in [self.signature_name, *self.signatures()])
            raise InvalidInput(f"signature '{name}' is not served by this model; signatures: {known}")
        return found

    def tree_model(self) -> Any | None:
        """The native tree ensemble behind this evaluator, for exact tree explanations (``shap.TreeExplainer``):
        an XGBoost or LightGBM booster, or a scikit-learn tree ensemble, that takes the model's inputs as one
        matrix of numbers (columns in input order); ``None`` for every other model."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the model holds; called once, after its last request."""


class ContextEvaluator(Evaluator):
    """A model that reads or writes the request's context (manifests that route or cascade): it runs one
    request per call (never batched), and may learn from rewards sent back for its answers."""

    @abstractmethod
    def predict_in(self, inputs: Arrays, context: RequestContext) -> Arrays:
        """:meth:`predict` with the request's context (its id and routing key; parameters to answer)."""

    def predict(self, inputs: Arrays) -> Arrays:
        return self.predict_in(inputs, RequestContext())

    def feedback(self, request_id: str, reward: float) -> None:
        """A reward for the answer to ``request_id`` (bandit routers learn from it)."""
        raise InvalidInput(_NO_FEEDBACK)


_NO_FEEDBACK = "this model takes no feedback: only manifests with a bandit router learn from rewards"


def send_feedback(evaluator: Evaluator, request_id: str, reward: float) -> None:
    """Give ``reward`` for the answer to ``request_id`` to a model that learns from rewards (400 otherwise)."""
    if not isinstance(evaluator, ContextEvaluator):
        raise InvalidInput(_NO_FEEDBACK)
    evaluator.feedback(request_id, reward)


class ModelFormat(ABC):
    """Detects files of one kind and loads them into evaluators."""

    #: Short unique name (``onnx``).
    name: ClassVar[str]
    #: The pip extra that brings the library, or ``None`` when it is a core dependency.
    extra: ClassVar[str | None] = None
    #: Importable modules the format needs.
    requires: ClassVar[tuple[str, ...]] = ()
    #: True when loading runs code from the file (pickles, Python sources): trusted models only.
    runs_code: ClassVar[bool] = False

    @abstractmethod
    def detect(self, path: Path) -> bool:
        """True when ``path`` (a file or folder) is a model of this format."""

    @abstractmethod
    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        """Load the model at ``path``; raise :class:`MlportError` with a clear message on failure."""

    @classmethod
    def missing(cls) -> list[str]:
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    @classmethod
    def available(cls) -> bool:
        return not cls.missing()

    def describe_files(self, path: Path, options: LoadOptions) -> FileSignature | None:
        """The signature a load of ``path`` would give, read from its files without loading the model (no session
        of the format's library, no code from the files run), or ``None`` when the format cannot tell without
        loading (the default).  Called in a worker thread for models not loaded yet (``--lazy``); a file the
        format cannot read this way also gives ``None`` (its load then says what is wrong)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the format holds for the models it loaded (a runtime process...).

        The server calls it when it stops, after closing its models; a later :meth:`load` may start again.
        """

    def check_loadable(self, options: LoadOptions) -> None:
        """Raise the clear error for a missing extra or an untrusted code-running model."""
        missing = self.missing()
        if missing:
            extra = f"pip install 'mlport[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
            raise MissingExtra(f"the {self.name} format needs {', '.join(missing)}: {extra}")
        if self.runs_code and not options.trusted:
            raise UntrustedModel(
                f"loading a {self.name} model runs code from the file; "
                "mark the model trusted (--trusted or 'trusted: true' in its config) if you trust its source"
            )
