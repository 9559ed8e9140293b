"""Triton's model configuration and statistics extensions, shared by the REST routes and the gRPC servicer.

Both answers are built as the protocol's messages (``inference.ModelConfig``, ``inference.ModelStatistics``);
REST sends them as JSON the way Triton does: field names as in the protocol, every scalar field (defaults too),
64-bit integers as numbers and enums by name.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from mlport.core.proto import model_config_pb2 as mc
from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.service import InferenceService
from mlport.runtime.manager import ModelManager, VersionState
from mlport.runtime.stats import ModelStats
from mlport.runtime.triton import triton_config

__all__ = ["EXTENSIONS", "message_json", "model_config", "model_statistics"]

#: The extensions of the Open Inference Protocol served (REST adds ``binary_tensor_data``).
EXTENSIONS = ["model_repository", "model_configuration", "statistics"]


async def model_config(manager: ModelManager, name: str, version: str | None) -> mc.ModelConfig:
    """The configuration of a ready version of ``name`` (raises ``NOT_FOUND``/``UNAVAILABLE`` as metadata does)."""
    known = await manager.describe(name, version)
    return triton_config(name, known.platform, known.signature, known.config)


def _duration(into: pb.StatisticDuration, count: int, ns: int) -> None:
    into.count = count
    into.ns = ns


def _statistics(name: str, version: int, stats: ModelStats, into: pb.ModelStatistics) -> None:
    into.name = name
    into.version = str(version)
    into.last_inference = round(stats.last_inference * 1000)
    into.inference_count = stats.inference_count
    into.execution_count = stats.execution_count
    counts = {"success": stats.success_count, "fail": stats.fail_count}
    inference = into.inference_stats
    for field, ns in stats.nanoseconds().items():
        _duration(getattr(inference, field), counts.get(field, stats.ran_count), ns)
    _duration(inference.cache_hit, 0, 0)
    _duration(inference.cache_miss, 0, 0)


def model_statistics(service: InferenceService, name: str | None, version: str | None) -> pb.ModelStatisticsResponse:
    """Statistics of every ready version of every model (no ``name``), of one model, or of one version."""
    manager = service.manager
    answer = pb.ModelStatisticsResponse()
    if name and version:
        lv = manager.serving_version(name, version)
        versions = [(name, lv.version)]
    else:
        statuses = [manager.status(name)] if name else manager.all_status()
        versions = [(s.name, v.version) for s in statuses for v in s.versions if v.state is VersionState.READY]
    for model, number in sorted(versions):
        _statistics(model, number, service.stats(model, number), answer.model_stats.add())
    return answer


def _value(fd: FieldDescriptor, value: Any) -> Any:
    if fd.message_type is not None:
        return message_json(value)
    if fd.enum_type is not None:
        return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else value
    return value


def message_json(message: Message) -> dict[str, Any]:
    """``message`` as Triton's REST API writes it (see the module's description)."""
    out: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            inner = fd.message_type.fields_by_name["value"]
            out[fd.name] = {str(k): _value(inner, v) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.name] = [_value(fd, v) for v in value]
        elif fd.message_type is not None or fd.containing_oneof is not None:
            if message.HasField(fd.name):
                out[fd.name] = _value(fd, value)
        else:
            out[fd.name] = _value(fd, value)
    return out
