"""The inference service on a real manager and ONNX model, without a transport: holds, limits, metrics, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from mlport.core.inference import InferenceRequest
from mlport.errors import ErrorCode, InvalidInput, ModelNotFound
from mlport.formats.registry import default_registry
from mlport.limits import Limits
from mlport.observability.metrics import Metrics
from mlport.protocols.service import InferenceService
from mlport.runtime.manager import ModelManager
from mlport.runtime.repository import Repository
from tests.builders import scale_onnx

X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], dtype=np.float32)
Scenario = Callable[[InferenceService, Metrics], Awaitable[None]]


def run(root: Path, scenario: Scenario, limits: Limits | None = None) -> None:
    async def main() -> None:
        formats = default_registry()
        manager = ModelManager(Repository(root, formats), formats)
        metrics = Metrics()
        service = InferenceService(manager, metrics, limits, inference_threads=2)
        await manager.sync()
        try:
            await scenario(service, metrics)
        finally:
            await manager.close()
            service.close()

    asyncio.run(main())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    scale_onnx(tmp_path / "m" / "double" / "1" / "model.onnx", 2.0)
    return tmp_path / "m"


def count(metrics: Metrics, model: str, status: str, version: str = "1") -> float:
    value = metrics.registry.get_sample_value(
        "mlport_requests_total", {"model": model, "version": version, "protocol": "test", "status": status})
    return value or 0.0


def test_infer_answers_and_counts(root: Path) -> None:
    async def scenario(service: InferenceService, metrics: Metrics) -> None:
        answer = await service.infer("double", None, InferenceRequest({"x": X}, id="r1"), "test")
        assert (answer.model_name, answer.model_version, answer.id) == ("double", "1", "r1")
        np.testing.assert_array_equal(answer.outputs["y"], X * 2)
        assert count(metrics, "double", "ok") == 1
        # the version is held for the request only
        held = service.manager.acquire("double")
        assert held.inflight == 1
        service.manager.release(held)

    run(root, scenario)


def test_an_unknown_model_is_counted_without_its_name(root: Path) -> None:
    async def scenario(service: InferenceService, metrics: Metrics) -> None:
        with pytest.raises(ModelNotFound):
            await service.infer("nope", None, InferenceRequest({"x": X}), "test")
        assert count(metrics, "", ErrorCode.NOT_FOUND.value, version="") == 1

    run(root, scenario)


def test_wrong_inputs_and_outputs_are_refused_by_name(root: Path) -> None:
    async def scenario(service: InferenceService, metrics: Metrics) -> None:
        with pytest.raises(InvalidInput, match="unknown output 'z'; the model gives: y"):
            await service.infer("double", None, InferenceRequest({"x": X}, outputs=["z"]), "test")
        with pytest.raises(InvalidInput, match="unknown input 'wrong'; the model takes: x"):
            await service.infer("double", None, InferenceRequest({"wrong": X}), "test")
        with pytest.raises(InvalidInput, match="too many inputs"):
            await service.infer("double", None, InferenceRequest({f"t{i}": X for i in range(3)}), "test")
        assert count(metrics, "double", ErrorCode.INVALID_ARGUMENT.value) == 3
        assert service.manager.acquire("double").inflight == 1  # only this hold: the failed ones let go

    run(root, scenario, Limits(max_tensors_per_request=2))


def test_a_call_holds_the_version_until_it_leaves(root: Path) -> None:
    async def scenario(service: InferenceService, metrics: Metrics) -> None:
        async with service.call("double", 1, "test") as call:
            assert call.model.version == 1 and call.model.inflight == 1
            answer = await call.infer(InferenceRequest({"x": X}, outputs=["y"]))
            assert list(answer.outputs) == ["y"]
        assert call.model.inflight == 0 and call.status == "ok"
        with pytest.raises(RuntimeError):
            async with service.call("double", 1, "test"):
                raise RuntimeError("the codec failed")
        assert count(metrics, "double", ErrorCode.INTERNAL.value) == 1

    run(root, scenario)


def test_an_evicted_models_series_come_back_with_its_next_request(root: Path) -> None:
    async def scenario(service: InferenceService, metrics: Metrics) -> None:
        await service.infer("double", None, InferenceRequest({"x": X}), "test")
        metrics.on_model_unloaded("double", (1,))  # what an eviction under the memory budget does
        assert count(metrics, "double", "ok") == 0
        assert metrics.registry.get_sample_value("mlport_inflight_requests", {"model": "double"}) is None
        await service.infer("double", None, InferenceRequest({"x": X}), "test")
        # new series in the registry, not the removed ones the service had looked up before
        assert count(metrics, "double", "ok") == 1
        assert metrics.registry.get_sample_value(
            "mlport_request_duration_seconds_count", {"model": "double", "protocol": "test"}) == 1
        assert metrics.registry.get_sample_value("mlport_inflight_requests", {"model": "double"}) == 0

    run(root, scenario)
