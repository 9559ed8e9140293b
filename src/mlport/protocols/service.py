"""The one orchestration path every protocol calls: readiness, limits, metrics and prediction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.validate import check_inputs
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.limits import Limits
from mlport.observability.metrics import Metrics
from mlport.runtime.manager import LoadedVersion, ModelManager

__all__ = ["Call", "InferenceService"]

log = logging.getLogger(__name__)


class Call:
    """One request's hold on one model version: decode with :attr:`model`, then :meth:`infer`."""

    __slots__ = ("_service", "model", "protocol", "status")

    def __init__(self, service: InferenceService, model: LoadedVersion, protocol: str) -> None:
        self._service = service
        self.model = model
        self.protocol = protocol
        self.status = "ok"

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        return await self._service._run(self.model, request)


class InferenceService:
    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        limits: Limits | None = None,
        inference_threads: int = 4,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.limits = limits or Limits()
        self._executor = ThreadPoolExecutor(max_workers=max(1, inference_threads), thread_name_prefix="mlport-infer")

    @asynccontextmanager
    async def call(self, model: str, version: str | int | None, protocol: str) -> AsyncIterator[Call]:
        """Hold a ready version of ``model`` for one request and record its outcome in the metrics."""
        started = time.perf_counter()
        try:
            lv = self.manager.acquire(model, version)
        except MlportError as exc:
            self.metrics.requests.labels(model if exc.code is not ErrorCode.NOT_FOUND else "", "",
                                         protocol, exc.code.value).inc()
            raise
        call = Call(self, lv, protocol)
        gauge = self.metrics.inflight.labels(lv.model)
        gauge.inc()
        try:
            yield call
        except MlportError as exc:
            call.status = exc.code.value
            raise
        except Exception:
            call.status = ErrorCode.INTERNAL.value
            raise
        finally:
            gauge.dec()
            self.manager.release(lv)
            self.metrics.requests.labels(lv.model, str(lv.version), protocol, call.status).inc()
            self.metrics.latency.labels(lv.model, protocol).observe(time.perf_counter() - started)

    async def infer(
        self, model: str, version: str | int | None, request: InferenceRequest, protocol: str
    ) -> InferenceResponse:
        async with self.call(model, version, protocol) as call:
            return await call.infer(request)

    async def _run(self, lv: LoadedVersion, request: InferenceRequest) -> InferenceResponse:
        evaluator = lv.evaluator
        signature_name = request.parameters.get("signature_name") if request.parameters else None
        if signature_name:
            evaluator = evaluator.for_signature(str(signature_name))
        signature = evaluator.signature
        if len(request.inputs) > self.limits.max_tensors_per_request:
            raise InvalidInput(f"too many inputs ({len(request.inputs)}); the limit is "
                               f"{self.limits.max_tensors_per_request}")
        wanted = request.outputs
        if wanted is not None:
            unknown = [n for n in wanted if signature.output(n) is None]
            if unknown:
                raise InvalidInput(
                    f"unknown output {', '.join(repr(n) for n in unknown)}; the model gives: "
                    f"{', '.join(signature.output_names)}"
                )
        feed = check_inputs(signature, request.inputs)
        loop = asyncio.get_running_loop()
        lv.inflight += 1  # held by the prediction itself, which may outlive a timed-out request
        started = time.perf_counter()
        future = loop.run_in_executor(self._executor, evaluator.predict, feed)
        future.add_done_callback(lambda _f: self.manager.release(lv))
        try:
            outputs = await asyncio.wait_for(asyncio.shield(future), self.limits.inference_timeout_s)
        except TimeoutError:
            raise MlportError(
                f"the prediction took longer than {self.limits.inference_timeout_s:g} s",
                ErrorCode.DEADLINE_EXCEEDED,
            ) from None
        except MlportError:
            raise
        except Exception as exc:
            # The library refused the inputs (or failed): the message is its own, the trace stays here.
            log.debug("model %s version %d: predict failed", lv.model, lv.version, exc_info=exc)
            raise MlportError(f"model '{lv.model}' failed on this input: {_short(exc)}",
                              ErrorCode.INVALID_ARGUMENT) from exc
        self.metrics.inference.labels(lv.model, str(lv.version)).observe(time.perf_counter() - started)
        if wanted is not None:
            outputs = {n: outputs[n] for n in wanted}
        return InferenceResponse(
            model_name=lv.model,
            model_version=str(lv.version),
            outputs=_as_arrays(outputs),
            id=request.id,
            parameters={},
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _as_arrays(outputs: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    return {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in outputs.items()}


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
