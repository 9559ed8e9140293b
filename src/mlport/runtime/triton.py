"""Triton model configuration (``config.pbtxt``) read into a :class:`ModelConfig`, and written back.

A Triton model repository (``<repo>/<model>/config.pbtxt``, ``<repo>/<model>/<version>/model.onnx``)
serves unchanged: the file is protobuf text format of Triton's ``ModelConfig`` message, parsed by
``google.protobuf.text_format`` into the classes generated from ``mlport/core/proto/model_config.proto``
(so every field Triton accepts parses, and an unknown one is refused with protobuf's own message). Of its
fields mlport uses:

- ``name`` (must be the folder's name, as in Triton), ``platform`` / ``backend`` (the format);
- ``max_batch_size``: when above 0, the ``dims`` of inputs and outputs exclude the batch axis, so
  the served shape is ``[-1, *dims]``;
- ``input`` / ``output``: ``name``, ``data_type`` (``TYPE_FP32``...), ``dims``, ``reshape``: the declared signature;
- ``version_policy``: ``latest { num_versions }``, ``all {}``, ``specific { versions }``;
- ``dynamic_batching``: ``max_queue_delay_microseconds``, ``preferred_batch_size`` (with
  ``max_batch_size``: the batching settings); its queue policy: ``default_queue_policy { max_queue_size,
  default_timeout_microseconds, timeout_action: REJECT | DELAY, allow_timeout_override }`` (the version's
  ``max_queue``, ``queue_timeout_s`` and ``queue_timeout_action``; 0 means no bound, as in Triton; a request's
  own ``timeout`` always applies as its deadline, whatever ``allow_timeout_override`` says),
  ``priority_levels`` and ``default_priority_level`` (the levels of the ``priority`` parameter; at most 16), and
  ``priority_queue_policy`` (a level's own policy, in place of the default one for that level: its own bound on
  the requests of the level waiting, its timeout and timeout action; the version's ``priority_queue_policy``).
  One difference: Triton bounds each level's queue by its own ``max_queue_size``, where the default policy's
  bounds the whole queue in mlport (every level, those with a policy of their own included);
- ``default_model_filename``: the model file in each version folder;
- ``parameters`` ``intra_op_thread_count`` / ``inter_op_thread_count`` for ONNX models.

Every other field that is set (``instance_group``, ``optimization``...) is ignored and named in
:attr:`TritonModel.warnings`. A malformed file raises :class:`InvalidInput` naming the line and column.

:func:`triton_config` goes the other way: the ``ModelConfig`` message of any served model (whatever its
format), for Triton's model configuration extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message
from pydantic import ValidationError

from mlport.core.proto import model_config_pb2 as pb
from mlport.core.types import DataType, Signature
from mlport.errors import InvalidInput
from mlport.formats.config import BatchingConfig, ModelConfig, SignatureConfig, TensorConfig, VersionPolicy

__all__ = [
    "MAX_CONFIG_BYTES",
    "TRITON_CONFIG_NAME",
    "TritonModel",
    "parse_model_config",
    "parse_triton_config",
    "read_triton_config",
    "triton_config",
]

TRITON_CONFIG_NAME = "config.pbtxt"
#: Largest config file read. (The schema bounds the nesting: an unknown field is refused where it starts.)
MAX_CONFIG_BYTES = 1024 * 1024
_MAX_DELAY_US = 10_000_000
#: Longest parse error message kept.
_MAX_MESSAGE = 400

#: Platform or backend -> mlport format.
_FORMATS = {
    "onnxruntime_onnx": "onnx",
    "onnxruntime": "onnx",
    "pytorch_libtorch": "torch",
    "pytorch": "torch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow": "tensorflow",
}
#: ONNX Runtime backend parameters -> mlport's onnx options.
_ORT_PARAMETERS = {"intra_op_thread_count": "intra_op_threads", "inter_op_thread_count": "inter_op_threads"}

#: The fields mlport reads (a nested mapping per message field; ``None``: the whole message).
_TENSOR_FIELDS: Mapping[str, Any] = {"name": None, "data_type": None, "dims": None, "reshape": None}
_USED: Mapping[str, Any] = {
    "name": None, "platform": None, "backend": None, "max_batch_size": None, "default_model_filename": None,
    "version_policy": None, "input": _TENSOR_FIELDS, "output": _TENSOR_FIELDS, "parameters": None,
    "dynamic_batching": {"preferred_batch_size": None, "max_queue_delay_microseconds": None, "priority_levels": None,
                         "default_priority_level": None, "default_queue_policy": None,
                         "priority_queue_policy": None},
}
#: Most priority levels mlport's queues have (:data:`mlport.runtime.admission.MAX_PRIORITY_LEVELS`).
_MAX_LEVELS = 16
#: Longest queue timeout taken, microseconds (a day), and largest queue.
_MAX_TIMEOUT_US = 86_400_000_000
_MAX_QUEUE = 1_000_000


def parse_model_config(text: str, source: str = TRITON_CONFIG_NAME) -> pb.ModelConfig:
    """Parse protobuf text format into Triton's ``ModelConfig`` message; raise :class:`InvalidInput`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{source} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, col = exc.GetLine(), exc.GetColumn()
        message = str(exc)
        if line is not None:
            prefix = f"{line}:{col} : " if col else f"{line} : "
            message = message.removeprefix(prefix)
            where = f", line {line}" + (f", column {col}" if col else "")
        else:
            where = ""
        if len(message) > _MAX_MESSAGE:  # protobuf quotes the line, which may be long
            message = f"{message[:_MAX_MESSAGE // 2]} ... {message[-_MAX_MESSAGE // 2:]}"
        raise InvalidInput(f"{source}{where}: {message}") from None
    return config


# ----------------------------------------------------------------------------- to mlport


@dataclass(frozen=True, slots=True)
class TritonModel:
    """What a ``config.pbtxt`` says, as mlport uses it."""

    config: ModelConfig
    #: The model file or folder inside each version folder (``default_model_filename``), when given.
    model_filename: str | None
    #: The platform or backend named (``onnxruntime_onnx``...), when given.
    platform: str | None
    #: What mlport does not use, in sentences for the log.
    warnings: tuple[str, ...]


def _ignored(message: Message, used: Mapping[str, Any], path: str, found: set[str]) -> None:
    """Collect the paths of the fields set in ``message`` that mlport does not read."""
    for fd, value in message.ListFields():
        if fd.name not in used:
            found.add(path + fd.name)
            continue
        inner = used[fd.name]
        if inner is None:
            continue
        for item in (value if fd.is_repeated else [value]):
            _ignored(item, inner, f"{path}{fd.name}.", found)


def _format(config: pb.ModelConfig) -> tuple[str | None, str | None]:
    found: dict[str, str] = {}
    for key, value in (("platform", config.platform), ("backend", config.backend)):
        if value:
            fmt = _FORMATS.get(value)
            if fmt is None:
                served = ", ".join(sorted(_FORMATS))
                raise InvalidInput(f"{key} '{value}' is not served by mlport; it serves {served}")
            found[key] = fmt
    if len(set(found.values())) > 1:
        raise InvalidInput(f"platform '{config.platform}' and backend '{config.backend}' name different frameworks")
    return next(iter(found.values()), None), config.platform or config.backend or None


def _version_policy(config: pb.ModelConfig) -> VersionPolicy:
    if not config.HasField("version_policy"):
        return VersionPolicy()
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "latest":
        if policy.latest.num_versions < 1:
            raise InvalidInput("version_policy.latest.num_versions must be 1 or more")
        return VersionPolicy(latest=policy.latest.num_versions)
    if kind == "all":
        return VersionPolicy(all=True)
    if kind == "specific":
        versions = tuple(policy.specific.versions)
        if not versions or any(v < 0 for v in versions):
            raise InvalidInput("version_policy.specific.versions must list version numbers")
        return VersionPolicy(specific=versions)
    return VersionPolicy()


def _tensor(tensor: pb.ModelInput | pb.ModelOutput, kind: str, batched: bool) -> TensorConfig:
    name = tensor.name
    if not name:
        raise InvalidInput(f"an {kind} has no name")
    if tensor.data_type == pb.TYPE_INVALID:
        raise InvalidInput(f"{kind} '{name}' has no data_type")
    raw_type = pb.DataType.Name(tensor.data_type)
    try:
        datatype = DataType.parse(raw_type)
    except ValueError:
        raise InvalidInput(f"{kind} '{name}': mlport has no datatype for {raw_type}") from None
    dims = tuple(tensor.dims)
    if any(d < -1 for d in dims):
        raise InvalidInput(f"{kind} '{name}': dims are sizes or -1, got {list(dims)}")
    shape = (-1, *dims) if batched else dims
    reshape: tuple[int, ...] | None = None
    if tensor.HasField("reshape"):
        inner = tuple(tensor.reshape.shape)
        reshape = (-1, *inner) if batched else inner
    return TensorConfig(name=name, datatype=datatype.value, shape=shape, reshape=reshape)


def _batching(config: pb.ModelConfig) -> BatchingConfig:
    if not config.HasField("dynamic_batching"):
        return BatchingConfig()
    max_batch_size = config.max_batch_size
    batching = config.dynamic_batching
    if max_batch_size < 1:
        raise InvalidInput("dynamic_batching needs max_batch_size of 1 or more")
    delay = batching.max_queue_delay_microseconds
    if not 0 <= delay <= _MAX_DELAY_US:
        raise InvalidInput(f"dynamic_batching.max_queue_delay_microseconds must be 0 to {_MAX_DELAY_US}")
    preferred = tuple(batching.preferred_batch_size)
    bad = [p for p in preferred if not 1 <= p <= max_batch_size]
    if bad:
        raise InvalidInput(f"dynamic_batching.preferred_batch_size {bad[0]} is not between 1 and max_batch_size "
                           f"({max_batch_size})")
    return BatchingConfig(max_batch_size=max_batch_size, max_delay_ms=delay / 1000.0, preferred_batch_sizes=preferred)


def _queue(config: pb.ModelConfig) -> dict[str, Any]:
    """The queue settings of ``dynamic_batching`` (its default queue policy and priority levels)."""
    if not config.HasField("dynamic_batching"):
        return {}
    batching = config.dynamic_batching
    out: dict[str, Any] = {}
    levels = batching.priority_levels
    if levels:
        if levels > _MAX_LEVELS:
            raise InvalidInput(f"dynamic_batching.priority_levels is {levels}; mlport's queues have at most "
                               f"{_MAX_LEVELS} levels")
        default = batching.default_priority_level
        if not 1 <= default <= levels:
            raise InvalidInput(f"dynamic_batching.default_priority_level must be 1 to priority_levels ({levels}), "
                               f"got {default}")
        out.update(priority_levels=levels, default_priority_level=default)
    if batching.HasField("default_queue_policy"):
        policy = batching.default_queue_policy
        if policy.max_queue_size:
            if not 0 < policy.max_queue_size <= _MAX_QUEUE:
                raise InvalidInput(f"default_queue_policy.max_queue_size must be 0 to {_MAX_QUEUE}")
            out["max_queue"] = policy.max_queue_size
        timeout = policy.default_timeout_microseconds
        if timeout:
            if timeout > _MAX_TIMEOUT_US:
                raise InvalidInput(f"default_queue_policy.default_timeout_microseconds must be 0 to {_MAX_TIMEOUT_US}")
            out["queue_timeout_s"] = timeout / 1e6
        if policy.timeout_action == pb.ModelQueuePolicy.DELAY:
            out["queue_timeout_action"] = "delay"
    if batching.priority_queue_policy:
        out["priority_queue_policy"] = {level: _level_policy(level, policy)
                                        for level, policy in batching.priority_queue_policy.items()}
    return out


def _level_policy(level: int, policy: pb.ModelQueuePolicy) -> dict[str, Any]:
    """A level's own queue policy, whole (as in Triton, its unset fields do not fall back on the default one's:
    a size or timeout of 0 is no bound, the action REJECT)."""
    name = f"priority_queue_policy[{level}]"
    if policy.max_queue_size > _MAX_QUEUE:
        raise InvalidInput(f"{name}.max_queue_size must be 0 to {_MAX_QUEUE}")
    if policy.default_timeout_microseconds > _MAX_TIMEOUT_US:
        raise InvalidInput(f"{name}.default_timeout_microseconds must be 0 to {_MAX_TIMEOUT_US}")
    return {"max_queue": policy.max_queue_size or None, "queue_timeout_s": policy.default_timeout_microseconds / 1e6,
            "queue_timeout_action": "delay" if policy.timeout_action == pb.ModelQueuePolicy.DELAY else "reject"}


def _options(config: pb.ModelConfig, fmt: str | None, ignored: set[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, parameter in config.parameters.items():
        value = parameter.string_value
        option = _ORT_PARAMETERS.get(key) if fmt == "onnx" else None
        if option is None:
            ignored.add(f"parameters['{key}']")
            continue
        if not value.isdigit():
            raise InvalidInput(f"parameter '{key}' must be a whole number, got {value!r}")
        options[option] = int(value)
    return options


def _model_filename(value: str) -> str | None:
    if not value:
        return None
    if value in (".", "..") or "/" in value or "\\" in value or len(value) > 255:
        raise InvalidInput(f"default_model_filename must name a file in the version folder, got {value!r}")
    return value


def _to_model(config: pb.ModelConfig, folder_name: str | None) -> TritonModel:
    ignored: set[str] = set()
    _ignored(config, _USED, "", ignored)
    if config.name and folder_name is not None and config.name != folder_name:
        raise InvalidInput(f"the config names the model '{config.name}', but its folder is '{folder_name}' "
                           "(Triton requires them to match)")
    fmt, platform = _format(config)
    if config.max_batch_size < 0:
        raise InvalidInput(f"max_batch_size must be 0 or more, got {config.max_batch_size}")
    batched = config.max_batch_size > 0
    inputs = tuple(_tensor(t, "input", batched) for t in config.input)
    outputs = tuple(_tensor(t, "output", batched) for t in config.output)
    try:
        signature = SignatureConfig(inputs=inputs, outputs=outputs) if inputs or outputs else None
        model = ModelConfig(
            format=fmt,
            version_policy=_version_policy(config),
            signature=signature,
            batching=_batching(config),
            options=_options(config, fmt, ignored),
            **_queue(config),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(problems) from None
    warnings = (f"fields mlport does not use are ignored: {', '.join(sorted(ignored))}",) if ignored else ()
    return TritonModel(model, _model_filename(config.default_model_filename), platform, warnings)


def parse_triton_config(text: str, folder_name: str | None = None, source: str = TRITON_CONFIG_NAME) -> TritonModel:
    """Read a Triton model configuration from its text; raise :class:`InvalidInput` naming what is wrong."""
    config = parse_model_config(text, source)
    try:
        return _to_model(config, folder_name)
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc.message}") from None


def read_triton_config(path: Path, folder_name: str | None = None) -> TritonModel:
    """Read ``path`` (a ``config.pbtxt``) for the model in the folder named ``folder_name``."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise InvalidInput(f"{path.name} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        raw = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as exc:
        raise InvalidInput(f"{path.name}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    return parse_triton_config(text, folder_name, path.name)


# ---------------------------------------------------------------------------- from mlport


def _tensors(specs: Any, into: Any, batched: bool, reshapes: Mapping[str, tuple[int, ...]]) -> None:
    for spec in specs:
        datatype = "TYPE_STRING" if spec.datatype is DataType.BYTES else f"TYPE_{spec.datatype.value}"
        tensor = into.add(name=spec.name, data_type=pb.DataType.Value(datatype),
                          dims=spec.shape[1:] if batched else spec.shape)
        reshape = reshapes.get(spec.name)
        if reshape is not None:
            tensor.reshape.shape.extend(reshape[1:] if batched else reshape)


def triton_config(name: str, platform: str, signature: Signature, config: ModelConfig) -> pb.ModelConfig:
    """The ``ModelConfig`` message of a served model: its signature as served and its settings.

    ``max_batch_size`` is the batching size when the server merges requests (the dims then leave out the
    batch axis, as in Triton); otherwise 0, with dims giving the whole shape (``-1`` where any size goes).
    """
    batching = config.batching
    batched = batching.enabled and all(s.batched for s in (*signature.inputs, *signature.outputs))
    out = pb.ModelConfig(name=name, platform=platform, max_batch_size=batching.max_batch_size if batched else 0)
    policy = config.version_policy
    if policy.all:
        out.version_policy.all.SetInParent()
    elif policy.specific is not None:
        out.version_policy.specific.versions.extend(policy.specific)
    else:
        out.version_policy.latest.num_versions = policy.latest or 1
    reshapes: dict[str, tuple[int, ...]] = {}
    if config.signature is not None:
        for t in (*config.signature.inputs, *config.signature.outputs):
            if t.reshape is not None:
                reshapes[t.served_name] = t.reshape
    _tensors(signature.inputs, out.input, batched, reshapes)
    _tensors(signature.outputs, out.output, batched, reshapes)
    if batched:
        out.dynamic_batching.max_queue_delay_microseconds = round(batching.max_delay_ms * 1000)
        out.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        _queue_policies(config, out.dynamic_batching)
    return out


def _queue_policies(config: ModelConfig, into: pb.ModelDynamicBatching) -> None:
    """The model's own queue settings (not the server's defaults) in Triton's terms."""
    levels, default, delay, own = config.queue_order()
    if levels != 2 or config.default_priority_level is not None or own:
        into.priority_levels, into.default_priority_level = levels, default
    if config.max_queue is not None or config.queue_timeout_s is not None or delay:
        _policy(into.default_queue_policy, config.max_queue, config.queue_timeout_s, delay)
    for level, max_queue, timeout_s, level_delay in own:
        timeout_s = config.queue_timeout_s if timeout_s is None else timeout_s
        _policy(into.priority_queue_policy[level], max_queue, timeout_s, delay if level_delay is None else level_delay)


def _policy(into: pb.ModelQueuePolicy, max_queue: int | None, timeout_s: float | None, delay: bool) -> None:
    into.max_queue_size = max_queue or 0
    into.default_timeout_microseconds = round((timeout_s or 0) * 1e6)
    into.timeout_action = pb.ModelQueuePolicy.DELAY if delay else pb.ModelQueuePolicy.REJECT
    into.allow_timeout_override = True

