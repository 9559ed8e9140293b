"""The per-model configuration file (``model.yaml`` in a model folder, ``<stem>.model.yaml`` beside a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlport.core.logconfig import RequestLogConfig
from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.yamlfile import problems, read_mapping
from mlport.errors import InvalidInput

__all__ = [
    "BatchingConfig",
    "DriftConfig",
    "DriftThresholds",
    "ImageOptions",
    "LevelQueueConfig",
    "ModelConfig",
    "SignatureConfig",
    "TensorConfig",
    "VersionPolicy",
    "load_model_config",
]

#: Most class labels one output may carry, and the largest labels file read.
MAX_LABELS = 100_000
MAX_LABELS_FILE_BYTES = 16 * 1024 * 1024


class VersionPolicy(BaseModel):
    """Which versions of a model serve: the latest N (default 1), all, or specific ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latest: int | None = Field(default=None, ge=1)
    all: bool = False
    specific: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        kinds = sum([self.latest is not None, self.all, self.specific is not None])
        if kinds > 1:
            raise ValueError("version_policy takes one of latest, all, specific")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve, highest first (a pure function of what exists)."""
        ordered = sorted(set(available), reverse=True)
        if self.all:
            return ordered
        if self.specific is not None:
            wanted = set(self.specific)
            return [v for v in ordered if v in wanted]
        return ordered[: self.latest or 1]


class ImageOptions(BaseModel):
    """How an image sent to the model is turned into its input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Resize images to the input's height and width when they differ (default: refuse with 400).
    resize: bool = False
    #: Multiply pixel values (0..255) by this before feeding a float input.
    scale: float = 1.0


class TensorConfig(BaseModel):
    """One tensor of a declared signature: the model's own name, and what the server says of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The tensor's name in the model file.
    name: str = Field(min_length=1, max_length=256)
    #: The name clients use (default: ``name``).
    alias: str | None = Field(default=None, min_length=1, max_length=256)
    #: Datatype served (``FP32``, ``float32``, ``TYPE_FP32``...); requests are cast to the model's own.
    datatype: str | None = None
    #: Shape served, ``-1`` for free dimensions (with the batch axis).
    shape: tuple[int, ...] | None = Field(default=None, max_length=32)
    #: The model's own shape when it differs from ``shape`` in layout only (Triton's ``reshape``), with
    #: the batch axis: inputs are reshaped to it before predict, outputs back to ``shape``.
    reshape: tuple[int, ...] | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _check(self) -> TensorConfig:
        if self.datatype is not None:
            DataType.parse(self.datatype)  # ValueError names it
        for what, dims in (("dimensions", self.shape), ("reshape dimensions", self.reshape)):
            if dims is not None and any(d < -1 for d in dims):
                raise ValueError(f"tensor '{self.name}': {what} are sizes or -1 (free), got {list(dims)}")
        if self.reshape is not None:
            if self.shape is None:
                raise ValueError(f"tensor '{self.name}': a reshape needs the served shape too")
            if (self.shape[:1] == (-1,)) != (self.reshape[:1] == (-1,)):
                raise ValueError(f"tensor '{self.name}': shape and reshape must both have the batch axis, or neither")
            inner = self.reshape[1:] if self.reshape[:1] == (-1,) else self.reshape
            if inner.count(-1) > 1:
                raise ValueError(f"tensor '{self.name}': a reshape may leave one dimension free")
        return self

    @property
    def served_name(self) -> str:
        return self.alias or self.name


class SignatureConfig(BaseModel):
    """A signature declared in the model config: it overrides (or, where the file has none, gives) the model's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: tuple[TensorConfig, ...] = Field(default=(), max_length=1024)
    outputs: tuple[TensorConfig, ...] = Field(default=(), max_length=1024)

    @model_validator(mode="after")
    def _unique(self) -> SignatureConfig:
        for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            for attr in ("name", "served_name"):
                names = [getattr(t, attr) for t in tensors]
                dup = sorted({n for n in names if names.count(n) > 1})
                if dup:
                    raise ValueError(f"signature {kind}: {', '.join(dup)} named more than once")
        return self

    def complete(self) -> Signature | None:
        """The declared signature as served, when every tensor has a datatype and shape; else ``None``."""
        tensors = (*self.inputs, *self.outputs)
        if not self.inputs or not self.outputs or any(t.datatype is None or t.shape is None for t in tensors):
            return None

        def spec(t: TensorConfig) -> TensorSpec:
            return TensorSpec(t.name, DataType.parse(t.datatype or ""), tuple(t.shape or ()))

        return Signature(tuple(spec(t) for t in self.inputs), tuple(spec(t) for t in self.outputs))


class BatchingConfig(BaseModel):
    """Adaptive batching: concurrent requests merged along axis 0 into one predict call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Largest merged batch (rows); 0 turns batching off.
    max_batch_size: int = Field(default=0, ge=0, le=65_536)
    #: Longest a request waits for others to join its batch.
    max_delay_ms: float = Field(default=1.0, ge=0.0, le=10_000.0)
    #: Batch sizes the model runs best at; a batch is cut at the largest one reached.
    preferred_batch_sizes: tuple[int, ...] = Field(default=(), max_length=64)

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


class DriftThresholds(BaseModel):
    """Where a drift figure turns a feature to ``warning`` and to ``drift``: PSI at or above ``psi_*``; the
    Kolmogorov-Smirnov and chi-square tests at a p-value at or below ``pvalue_*``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi_warning: float = Field(default=0.1, gt=0.0, le=100.0)
    psi_drift: float = Field(default=0.25, gt=0.0, le=100.0)
    pvalue_warning: float = Field(default=0.001, gt=0.0, lt=1.0)
    pvalue_drift: float = Field(default=0.0001, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> DriftThresholds:
        if self.psi_drift < self.psi_warning:
            raise ValueError("drift thresholds: psi_drift must be at least psi_warning")
        if self.pvalue_drift > self.pvalue_warning:
            raise ValueError("drift thresholds: pvalue_drift must be at most pvalue_warning")
        return self


class DriftConfig(BaseModel):
    """Drift of the requests against the model's reference profile (``profile.json``), computed off the
    request path over a sliding window: the last ``window_rows`` rows, and (if given) of the last
    ``window_seconds`` only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Watch drift when the model has a profile (false: never).
    enabled: bool = True
    window_rows: int = Field(default=1000, ge=10, le=100_000)
    window_seconds: float | None = Field(default=None, gt=0.0, le=30 * 86_400.0)
    #: Fewer rows in the window than this: no figures yet (status ``insufficient``).
    min_rows: int = Field(default=100, ge=10, le=100_000)
    #: Seconds between two computations of the figures of one version.
    interval_s: float = Field(default=5.0, ge=0.05, le=3600.0)
    thresholds: DriftThresholds = DriftThresholds()
    #: Where a JSON POST goes when the status of a version changes (retried with back-off).
    webhook: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    #: Outlier scores above this count as outliers (default: the profile's, the reference's 99.9th percentile).
    outlier_threshold: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _rows(self) -> DriftConfig:
        if self.min_rows > self.window_rows:
            raise ValueError("drift: min_rows must be at most window_rows")
        return self


class LevelQueueConfig(BaseModel):
    """The queue policy of one priority level, over the model's (Triton's ``priority_queue_policy``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Requests of this level that may wait (default: no bound of the level's own; ``max_queue`` bounds them all).
    max_queue: int | None = Field(default=None, ge=0, le=1_000_000)
    #: Longest a request of this level waits in the queue (default: the model's ``queue_timeout_s``; 0: no limit).
    queue_timeout_s: float | None = Field(default=None, ge=0, le=86_400)
    #: What a request of this level that waited its queue timeout gets (default: the model's).
    queue_timeout_action: Literal["reject", "delay"] | None = None


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Served name (default: folder name or file stem).
    name: str | None = None
    #: Format name, when detection from the file should be overridden.
    format: str | None = None
    #: The operator trusts this model's files to run code (pickles, Python sources).
    trusted: bool = False
    version_policy: VersionPolicy = VersionPolicy()
    #: Names for versions, label -> version (TF Serving ``/v1/models/{m}/labels/{label}``).
    version_labels: dict[str, int] = Field(default_factory=dict)
    #: Named scalar fields mapped onto columns of one input: ``{input: {field: column}}``.
    fields: dict[str, dict[str, int]] = Field(default_factory=dict)
    image: ImageOptions = ImageOptions()
    #: Options passed to the format's library (e.g. ``intra_op_threads`` for onnxruntime).
    options: dict[str, Any] = Field(default_factory=dict)
    #: Declared signature: renames, datatypes and shapes over the model's own (see :class:`SignatureConfig`).
    signature: SignatureConfig | None = None
    #: Class labels for outputs that give class indices: ``{output: [label0, label1, ...]}``. In the
    #: file, a value may also name a text file beside the config, one label per line.
    labels: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    batching: BatchingConfig = BatchingConfig()
    #: Load on the first request instead of at start (default: the server's ``--lazy``).
    lazy: bool | None = None
    #: Never unload this model to make room under the server's ``--memory-budget``.
    pinned: bool = False
    #: Requests a version runs at once; more wait in its queue (default: the server's ``--max-concurrency``).
    max_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    #: Requests that may wait; beyond, refused at once with 503/429 (default: the server's ``--max-queue``).
    max_queue: int | None = Field(default=None, ge=0, le=1_000_000)
    #: Longest a request waits in the queue before it is refused unrun (default: the server's ``--queue-timeout``).
    queue_timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    #: What a request that waited ``queue_timeout_s`` gets: ``reject`` (503/429) or ``delay`` (it moves behind
    #: every other request and waits on; Triton's ``timeout_action``).
    queue_timeout_action: Literal["reject", "delay"] = "reject"
    #: Priority levels of the queue (1 the highest) and the level of a request without a ``priority``
    #: (Triton's ``priority_levels`` and ``default_priority_level``; default: 2 levels, default 2).
    priority_levels: int = Field(default=2, ge=1, le=16)
    default_priority_level: int | None = Field(default=None, ge=1, le=16)
    #: Levels with a queue policy of their own: ``{level: {max_queue, queue_timeout_s, queue_timeout_action}}``.
    priority_queue_policy: dict[int, LevelQueueConfig] = Field(default_factory=dict, max_length=16)
    #: Request logging of this model (default: the server's ``--request-log*`` flags).
    logging: RequestLogConfig | None = None
    #: Drift watching against the model's reference profile (see :class:`DriftConfig`).
    drift: DriftConfig = DriftConfig()
    #: Answer a per-row outlier score against the reference profile in the response parameters.
    outliers: bool = False

    @model_validator(mode="after")
    def _check_fields(self) -> ModelConfig:
        for tensor, mapping in self.fields.items():
            cols = sorted(mapping.values())
            if cols != list(range(len(cols))):
                raise ValueError(f"fields of input '{tensor}' must map onto columns 0..{len(cols) - 1} once each")
        for output, names in self.labels.items():
            if not names or len(names) > MAX_LABELS:
                raise ValueError(f"labels of output '{output}': give 1 to {MAX_LABELS} labels")
        if self.default_priority_level is not None and self.default_priority_level > self.priority_levels:
            raise ValueError(f"default_priority_level {self.default_priority_level} is not one of the "
                             f"{self.priority_levels} priority_levels")
        outside = sorted(level for level in self.priority_queue_policy if not 1 <= level <= self.priority_levels)
        if outside:
            raise ValueError(f"priority_queue_policy names level {outside[0]}, not one of the {self.priority_levels} "
                             "priority_levels")
        return self

    def queue_order(self) -> tuple[int, int, bool, tuple[tuple[int, int | None, float | None, bool | None], ...]]:
        """``(levels, default level, delay on timeout, levels' own policies)`` of the version's queue; a level's
        policy is ``(level, max_queue, queue timeout, delay on timeout)``, ``None`` where it has the model's."""
        default = self.default_priority_level or min(2, self.priority_levels)
        own = tuple((level, p.max_queue, p.queue_timeout_s,
                     None if p.queue_timeout_action is None else p.queue_timeout_action == "delay")
                    for level, p in sorted(self.priority_queue_policy.items()))
        return self.priority_levels, default, self.queue_timeout_action == "delay", own


def _read_labels(raw: dict[str, Any], folder: Path) -> None:
    """Replace label file names in ``raw["labels"]`` by their lines (files inside ``folder`` only)."""
    labels = raw.get("labels")
    if not isinstance(labels, dict):
        return
    root = folder.resolve()
    for output, value in list(labels.items()):
        if not isinstance(value, str):
            continue
        target = (folder / value).resolve()
        try:
            target.relative_to(root)
        except ValueError:
            raise InvalidInput(f"labels of output '{output}': {value!r} is outside the model folder") from None
        try:
            if target.stat().st_size > MAX_LABELS_FILE_BYTES:
                raise InvalidInput(f"labels of output '{output}': {value} is larger than "
                                   f"{MAX_LABELS_FILE_BYTES // (1024 * 1024)} MiB")
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"labels of output '{output}': cannot read {value}: {exc}") from exc
        labels[output] = [line.strip() for line in text.splitlines() if line.strip()]


def load_model_config(path: Path | None) -> ModelConfig:
    if path is None or not path.is_file():
        return ModelConfig()
    raw = read_mapping(path, path.name)
    _read_labels(raw, path.parent)
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"{path.name}: {problems(exc)}") from exc
