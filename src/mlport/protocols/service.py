"""The one orchestration path every protocol calls: readiness, limits, metrics and prediction.

Predictions go through one :class:`~mlport.runtime.batching.Runner` per model version and signature,
which runs them inline or on the inference threads and merges concurrent requests into batches when
the model's config asks for it.  Each request holds its version until its prediction (or the batch
that carries it) has finished, even when the request itself has timed out, so a retired version is
never closed under a running prediction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.validate import check_inputs
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.formats.base import Arrays, ContextEvaluator, Evaluator, RequestContext
from mlport.limits import Limits
from mlport.observability.access import AccessLog
from mlport.observability.drift import DriftWatch
from mlport.observability.metrics import Metrics
from mlport.observability.requestlog import Pending, RequestLog
from mlport.runtime.batching import Runner
from mlport.runtime.manager import ColdModel, LoadedVersion, ModelManager
from mlport.runtime.stats import ModelStats, Timing

__all__ = ["Call", "InferenceService"]

log = logging.getLogger(__name__)

_INTERNAL = ErrorCode.INTERNAL.value


#: Seconds between copies of the in-flight counts into the gauges shared by worker processes.
SHARED_GAUGE_PERIOD_S = 0.25


class _Inflight:
    """Requests being served, per model, as plain counts: read when the metrics are scraped (one process),
    or copied every :data:`SHARED_GAUGE_PERIOD_S` into the gauge that worker processes write to shared files
    (a write there costs microseconds, too much for every request)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._shared = bool(metrics.multiprocess_dir)
        self.counts: dict[str, int] = {}
        self._copying: asyncio.TimerHandle | None = None
        self._closed = False

    def gauge(self, model: str) -> _Count:
        """What a request calls ``inc()``/``dec()`` on for ``model``."""
        if model not in self.counts:
            self.counts[model] = 0
            child = self._metrics.inflight.labels(model)
            if not self._shared:
                child.set_function(lambda: float(self.counts.get(model, 0)))
            elif self._copying is None:
                self._copy()
        return _Count(self.counts, model)

    def _copy(self) -> None:
        if self._closed:
            return
        for model, count in self.counts.items():
            self._metrics.inflight.labels(model).set(count)
        self._copying = asyncio.get_running_loop().call_later(SHARED_GAUGE_PERIOD_S, self._copy)

    def close(self) -> None:
        self._closed = True
        if self._copying is not None:
            self._copying.cancel()


class _Count:
    __slots__ = ("_counts", "_key")

    def __init__(self, counts: dict[str, int], key: str) -> None:
        self._counts = counts
        self._key = key

    def inc(self) -> None:
        self._counts[self._key] += 1

    def dec(self) -> None:
        self._counts[self._key] -= 1


class _Series:
    """The metric series and statistics of one model version and protocol, looked up once instead of per request."""

    __slots__ = ("_labels", "_requests", "_statuses", "inference", "inflight", "latency", "stats")

    def __init__(self, metrics: Metrics, inflight: _Inflight, model: str, version: str, protocol: str,
                 stats: ModelStats) -> None:
        self.stats = stats
        self.inflight = inflight.gauge(model)
        self.latency = metrics.latency.labels(model, protocol)
        self.inference = metrics.inference.labels(model, version)
        self._requests = metrics.requests
        self._labels = (model, version, protocol)
        self._statuses: dict[str, Any] = {}

    def count(self, status: str) -> None:
        child = self._statuses.get(status)
        if child is None:
            child = self._statuses[status] = self._requests.labels(*self._labels, status)
        child.inc()


class Call:
    """One request's hold on one model version, as ``async with service.call(...) as call``: decode with
    :attr:`model`, then :meth:`infer`.  Leaving the block records the outcome in the metrics, the statistics
    and the access log."""

    __slots__ = ("_logged", "_name", "_series", "_service", "_started", "_version", "model", "protocol",
                 "request_id", "status")

    model: LoadedVersion

    def __init__(self, service: InferenceService, name: str, version: str | int | None, protocol: str,
                 request_id: str | None = None) -> None:
        self._service = service
        self._name = name
        self._version = version
        self.protocol = protocol
        self.status = "ok"
        #: The request's id for the access log (the client's, else the one in the inference request).
        self.request_id = request_id

    async def __aenter__(self) -> Call:
        service = self._service
        self._started = time.perf_counter()
        try:
            try:
                lv = service.manager.acquire(self._name, self._version)
            except ColdModel:  # loaded on demand: this request waits for the load
                lv = await service.manager.acquire_cold(self._name, self._version)
        except MlportError as exc:
            model = self._name if exc.code is not ErrorCode.NOT_FOUND else ""
            service.metrics.requests.labels(model, "", self.protocol, exc.code.value).inc()
            if service.access_log is not None:
                service.access_log.write(self.request_id, self._name, str(self._version or ""), self.protocol,
                                         exc.code.value, time.perf_counter() - self._started)
            raise
        self.model = lv
        self._series = series = service.series(lv, self.protocol)
        series.inflight.inc()
        rlog = service.request_log
        self._logged: Pending | None = None if rlog is None else rlog.start(
            lv.model, lv.version, lv.config.logging, self.protocol)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.status = exc.code.value if isinstance(exc, MlportError) else _INTERNAL
        series = self._series
        series.inflight.dec()
        service = self._service
        service.manager.release(self.model)
        series.count(self.status)
        seconds = time.perf_counter() - self._started
        series.latency.observe(seconds)
        series.stats.finished(exc is None, seconds)
        if service.access_log is not None:
            service.access_log.write(self.request_id, self.model.model, str(self.model.version), self.protocol,
                                     self.status, seconds)
        if self._logged is not None:
            self._logged.finish(self.request_id, self.status, seconds)

    def infer(self, request: InferenceRequest) -> Coroutine[Any, Any, InferenceResponse]:
        """Run the prediction (await the result)."""
        if self.request_id is None:
            self.request_id = request.id
        running = self._service._run(self.model, request, self._series, self._started)
        return running if self._logged is None else self._logged.watch(request, running)


class InferenceService:
    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        limits: Limits | None = None,
        inference_threads: int = 4,
        access_log: AccessLog | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        #: Where one line per inference request goes (``None``: nowhere).
        self.access_log = access_log
        #: Where sampled requests are logged with their tensors (``None``: nowhere).
        self.request_log = request_log
        self.limits = limits or Limits()
        self.inference_threads = max(1, inference_threads)
        self._executor = ThreadPoolExecutor(max_workers=self.inference_threads, thread_name_prefix="mlport-infer")
        self._series: dict[tuple[str, int, str], _Series] = {}
        self._stats: dict[tuple[str, int], ModelStats] = {}
        self._inflight = _Inflight(metrics)
        #: Drift and outlier watch of the models with a reference profile (a hook on every answered prediction).
        self.drift = DriftWatch(metrics)

    def call(self, model: str, version: str | int | None, protocol: str, request_id: str | None = None) -> Call:
        """Hold a ready version of ``model`` for one request and record its outcome in the metrics."""
        return Call(self, model, version, protocol, request_id)

    def series(self, lv: LoadedVersion, protocol: str) -> _Series:
        key = (lv.model, lv.version, protocol)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _Series(self.metrics, self._inflight, lv.model, str(lv.version), protocol,
                                                self.stats(lv.model, lv.version))
        return found

    def stats(self, model: str, version: int) -> ModelStats:
        """The statistics of one model version (kept across reloads of the same version)."""
        found = self._stats.get((model, version))
        if found is None:
            found = self._stats[(model, version)] = ModelStats()
        return found

    async def infer(
        self, model: str, version: str | int | None, request: InferenceRequest, protocol: str
    ) -> InferenceResponse:
        async with self.call(model, version, protocol) as call:
            return await call.infer(request)

    def runner(self, lv: LoadedVersion, evaluator: Evaluator) -> Runner:
        """The runner of one signature of a loaded version (made on first use)."""
        found = lv.runners.get(evaluator.signature_name)
        if found is None:
            found = lv.runners[evaluator.signature_name] = Runner(
                evaluator, self._executor, lv.config.batching, concurrency=self.inference_threads,
                name=f"model {lv.model} version {lv.version}", stats=self.stats(lv.model, lv.version),
            )
        return found

    async def _run(
        self, lv: LoadedVersion, request: InferenceRequest, series: _Series, started: float
    ) -> InferenceResponse:
        evaluator = lv.evaluator
        params = request.parameters
        signature_name = params.get("signature_name") if params else None
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
        if isinstance(evaluator, ContextEvaluator):
            return await self._run_in_context(lv, evaluator, request, series, started)
        runner = self.runner(lv, evaluator)
        feed = request.inputs
        if not runner.exact(feed):
            feed = check_inputs(signature, feed)
        lv.inflight += 1  # held by the prediction itself, which may outlive a timed-out request
        submitted = time.perf_counter()
        timing = Timing()
        try:
            result = runner.run(feed, functools.partial(self.manager.release, lv), timing)
        except MlportError:
            raise
        except Exception as exc:
            raise _failure(lv, exc) from exc
        if type(result) is dict:
            outputs = result
        else:
            # the result, or the request's time limit, whichever comes first; the prediction itself goes on
            # (and holds its version) until it ends
            assert isinstance(result, asyncio.Future)
            timer = asyncio.get_running_loop().call_later(self.limits.inference_timeout_s, self._expire, result)
            try:
                outputs = await result
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if result.cancelled() and (task is None or not task.cancelling()):
                    raise MlportError("the server is stopping", ErrorCode.UNAVAILABLE) from None
                raise
            except MlportError:
                raise
            except Exception as exc:
                raise _failure(lv, exc) from exc
            finally:
                timer.cancel()
        series.inference.observe(timing.ended - timing.started)
        parameters = self.drift.observe(lv, feed, outputs)
        if wanted is not None:
            outputs = {n: outputs[n] for n in wanted}
        response = InferenceResponse(
            model_name=lv.model,
            model_version=str(lv.version),
            outputs=_as_arrays(outputs),
            id=request.id,
            parameters=parameters,
        )
        rows = _rows(feed) if runner.batched else 1
        series.stats.ran(rows, submitted - started, timing.started - submitted, timing.ended - timing.started,
                         time.perf_counter() - timing.ended)
        return response

    async def _run_in_context(
        self, lv: LoadedVersion, evaluator: ContextEvaluator, request: InferenceRequest, series: _Series,
        started: float,
    ) -> InferenceResponse:
        """A model that routes or cascades: it sees the request's id and routing key and answers parameters
        (which route or stage answered). It runs on the inference threads, one request per call."""
        params = request.parameters or {}
        key = params.get("routing_key")
        ctx = RequestContext(request_id=request.id, routing_key=None if key is None else str(key))
        feed = check_inputs(evaluator.signature, request.inputs)
        loop = asyncio.get_running_loop()
        lv.inflight += 1  # held by the prediction itself, which may outlive a timed-out request
        submitted = time.perf_counter()
        series.stats.execution_count += 1
        future = loop.run_in_executor(self._executor, evaluator.predict_in, feed, ctx)
        future.add_done_callback(lambda _f: self.manager.release(lv))
        try:
            outputs = await asyncio.wait_for(asyncio.shield(future), self.limits.inference_timeout_s)
        except TimeoutError:
            raise MlportError(f"the prediction took longer than {self.limits.inference_timeout_s:g} s",
                              ErrorCode.DEADLINE_EXCEEDED) from None
        except MlportError:
            raise
        except Exception as exc:
            raise _failure(lv, exc) from exc
        ended = time.perf_counter()
        series.inference.observe(ended - submitted)
        series.stats.ran(1, submitted - started, 0.0, ended - submitted, 0.0)
        routes = ctx.parameters.get("routed_to")
        if isinstance(routes, list):
            for route in routes:
                self.metrics.routes.labels(lv.model, str(route)).inc()
        if request.outputs is not None:
            outputs = {n: outputs[n] for n in request.outputs}
        return InferenceResponse(
            model_name=lv.model,
            model_version=str(lv.version),
            outputs=_as_arrays(outputs),
            id=request.id,
            parameters=self.drift.observe(lv, feed, outputs, dict(ctx.parameters)),
        )

    def _expire(self, future: asyncio.Future[Arrays]) -> None:
        if not future.done():
            future.set_exception(MlportError(
                f"the prediction took longer than {self.limits.inference_timeout_s:g} s", ErrorCode.DEADLINE_EXCEEDED))

    def close(self) -> None:
        self._inflight.close()
        self.drift.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.request_log is not None:
            self.request_log.close()


def _failure(lv: LoadedVersion, exc: Exception) -> MlportError:
    """What the client sees when the model's library refused the inputs (or failed): its message; the
    trace goes to the debug log."""
    log.debug("model %s version %d: predict failed", lv.model, lv.version, exc_info=exc)
    return MlportError(f"model '{lv.model}' failed on this input: {_short(exc)}", ErrorCode.INVALID_ARGUMENT)


def _rows(feed: Arrays) -> int:
    for arr in feed.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 1


def _as_arrays(outputs: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    return {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in outputs.items()}


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
