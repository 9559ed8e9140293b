"""The one orchestration path every protocol calls: readiness, limits, admission, metrics and prediction.

Predictions go through one :class:`~mlport.runtime.batching.Runner` per model version and signature,
which runs them inline or on the inference threads and merges concurrent requests into batches when
the model's config asks for it.  Each request holds its version until its prediction (or the batch
that carries it) has finished, even when the request itself has timed out, so a retired version is
never closed under a running prediction.

Admission (:mod:`mlport.runtime.admission`): a version with limits lets its requests in through its gate,
which also holds each slot until the prediction ends.  A request has a deadline when its transport gives
one (``X-Request-Timeout``, the gRPC deadline) or its ``timeout`` parameter (microseconds, as Triton's);
past it, it is answered 504 and never handed to the model.  A request that had to queue watches its
client (when the transport can tell): gone while queued, it is dropped unrun.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.validate import check_inputs
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.explain import ExplainLimits, ExplainService
from mlport.formats.base import Arrays, ContextEvaluator, Evaluator, RequestContext
from mlport.limits import Limits
from mlport.observability.access import AccessLog
from mlport.observability.drift import DriftWatch
from mlport.observability.metrics import Metrics
from mlport.observability.requestlog import Pending, RequestLog
from mlport.protocols.accounting import Inflight, Series
from mlport.runtime.admission import Expired, Gate, Overloaded, parse_priority, parse_timeout_us
from mlport.runtime.batching import Runner
from mlport.runtime.manager import ColdModel, LoadedVersion, ModelManager
from mlport.runtime.states import VersionState
from mlport.runtime.stats import ModelStats, Timing
from mlport.runtime.timelimit import TimeLimit

__all__ = ["Call", "ClientGone", "InferenceService", "Watch"]

log = logging.getLogger(__name__)

_INTERNAL = ErrorCode.INTERNAL.value

#: Returns once the request's client has gone away (a transport that can tell gives one per request).
Watch = Callable[[], Awaitable[object]]


class ClientGone(MlportError):
    """The client went away before its answer (nobody reads this error; it ends the request)."""

    code = ErrorCode.CANCELLED
    quiet = True


class Call:
    """One request's hold on one model version, as ``async with service.call(...) as call``: decode with
    :attr:`model`, then :meth:`infer`.  Leaving the block records the outcome in the metrics, the statistics
    and the access log."""

    __slots__ = ("_logged", "_name", "_service", "_version", "deadline", "model", "protocol", "request_id",
                 "series", "started", "status", "timeout_s", "watch")

    model: LoadedVersion
    series: Series

    def __init__(self, service: InferenceService, name: str, version: str | int | None, protocol: str,
                 request_id: str | None = None, timeout_s: float | None = None, watch: Watch | None = None) -> None:
        self._service = service
        self._name = name
        self._version = version
        self.protocol = protocol
        self.status = "ok"
        #: The request's id for the access log (the client's, else the one in the inference request).
        self.request_id = request_id
        #: Seconds the transport gives the request (a header, the gRPC deadline); ``None``: no deadline.
        self.timeout_s = timeout_s
        #: When the request's deadline passes (the event loop's clock), once the call is entered.
        self.deadline: float | None = None
        self.watch = watch

    async def __aenter__(self) -> Call:
        service = self._service
        self.started = time.perf_counter()
        if self.timeout_s is not None:
            self.deadline = asyncio.get_running_loop().time() + self.timeout_s
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
                                         exc.code.value, time.perf_counter() - self.started)
            raise
        self.model = lv
        self.series = series = service.series(lv, self.protocol)
        series.inflight.inc()
        rlog = service.request_log
        self._logged: Pending | None = None if rlog is None else rlog.start(
            lv.model, lv.version, lv.config.logging, self.protocol)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        service = self._service
        seconds = time.perf_counter() - self.started
        self.series.inflight.dec()
        service.manager.release(self.model)
        self.status = service.ended(self.model, self.series, exc, seconds, self.request_id)
        if self._logged is not None:
            self._logged.finish(self.request_id, self.status, seconds)

    def infer(self, request: InferenceRequest) -> Coroutine[Any, Any, InferenceResponse]:
        """Run the prediction (await the result)."""
        if self.request_id is None:
            self.request_id = request.id
        if self._logged is None:
            return self._service._run(self, request)
        return self._service._run_logged(self, request, self._logged)


class InferenceService:
    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        limits: Limits | None = None,
        inference_threads: int = 4,
        access_log: AccessLog | None = None,
        request_log: RequestLog | None = None,
        explain_limits: ExplainLimits | None = None,
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
        self._series: dict[tuple[str, int, str], Series] = {}
        self._stats: dict[tuple[str, int], ModelStats] = {}
        self._inflight = Inflight(metrics)
        #: The inference time limit of every prediction a request waits for (one timer for all of them).
        self._time_limit = TimeLimit(self.limits.inference_timeout_s,
                                     f"the prediction took longer than {self.limits.inference_timeout_s:g} s")
        metrics.on_forget(self._forget_series)
        #: Drift and outlier watch of the models with a reference profile (a hook on every answered prediction).
        self.drift = DriftWatch(metrics)
        #: Explanations of predictions, on their own threads (never the inference threads).
        self.explain = ExplainService(manager, explain_limits, metrics.registry)

    def call(self, model: str, version: str | int | None, protocol: str, request_id: str | None = None,
             timeout_s: float | None = None, watch: Watch | None = None) -> Call:
        """Hold a ready version of ``model`` for one request and record its outcome in the metrics.
        ``timeout_s``: the deadline the transport gives the request; ``watch``: how to tell its client left."""
        return Call(self, model, version, protocol, request_id, timeout_s, watch)

    def series(self, lv: LoadedVersion, protocol: str) -> Series:
        key = (lv.model, lv.version, protocol)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(self.metrics, self._inflight, lv.model, str(lv.version), protocol,
                                               self.stats(lv.model, lv.version))
        return found

    async def unload_model(self, name: str) -> None:
        """Unload a model (the repository API): its versions unload, and their series leave the metrics."""
        loaded = tuple(v.version for v in self.manager.status(name).versions if v.state is VersionState.READY)
        await self.manager.unload_model(name)
        self.metrics.on_model_unloaded(name, loaded)

    def _forget_series(self, model: str) -> None:
        """The metrics removed the series of ``model`` (evicted): look them up afresh when it serves again."""
        for key in [k for k in self._series if k[0] == model]:
            del self._series[key]
        self._inflight.forget(model)

    def stats(self, model: str, version: int) -> ModelStats:
        """The statistics of one model version (kept across reloads of the same version)."""
        found = self._stats.get((model, version))
        if found is None:
            found = self._stats[(model, version)] = ModelStats()
        return found

    def ended(self, lv: LoadedVersion, series: Series, exc: BaseException | None, seconds: float,
              request_id: str | None) -> str:
        """Count a request that ended after ``seconds`` (``exc``: how it failed) and write its access-log line;
        its status."""
        status = "ok" if exc is None else self.failed(lv, exc, seconds)
        series.count(status)
        series.latency.observe(seconds)
        series.stats.finished(exc is None, seconds)
        if self.access_log is not None:
            self.access_log.write(request_id, lv.model, str(lv.version), series.protocol, status, seconds)
        return status

    def failed(self, lv: LoadedVersion, exc: BaseException, seconds: float) -> str:
        """The status of a request that failed after ``seconds``, counted as refused, expired or cancelled where
        it was."""
        labels = (lv.model, str(lv.version))
        if isinstance(exc, Overloaded):
            self.metrics.refused.labels(*labels, exc.reason).inc()
            if exc.reason == "queue_full":
                self.metrics.refusal_time.labels(*labels).observe(seconds)
        elif isinstance(exc, Expired):
            self.metrics.expired.labels(*labels).inc()
        elif isinstance(exc, ClientGone | asyncio.CancelledError):
            self.metrics.cancelled.labels(*labels).inc()
            return ErrorCode.CANCELLED.value
        return exc.code.value if isinstance(exc, MlportError) else _INTERNAL

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

    def _run(self, call: Call, request: InferenceRequest) -> Coroutine[Any, Any, InferenceResponse]:
        """Check the request, then the prediction (a coroutine): at once without limits or deadline, else
        once admitted (see :meth:`_admitted`)."""
        lv = call.model
        evaluator: Evaluator = lv.evaluator
        deadline, level = call.deadline, 0  # 0: the queue's default level
        params = request.parameters
        if params:
            signature_name = params.get("signature_name")
            if signature_name:
                evaluator = evaluator.for_signature(str(signature_name))
            deadline, level = _schedule(params, deadline, lv.gate)
        self._check(evaluator, request)
        runner: Runner | None = None
        if isinstance(evaluator, ContextEvaluator):
            feed = check_inputs(evaluator.signature, request.inputs)
        else:
            runner = self.runner(lv, evaluator)
            feed = request.inputs
            if not runner.exact(feed):
                feed = check_inputs(evaluator.signature, feed)
        if lv.gate is None and deadline is None:
            # the version is held by the prediction itself, which may outlive the request
            lv.inflight += 1
            done = functools.partial(self.manager.release, lv)
            if runner is None:
                assert isinstance(evaluator, ContextEvaluator)
                return self._run_in_context(call, evaluator, request, feed, done, None, None)
            return self._predict(call, runner, request, feed, done, None, None)
        return self._admitted(call, evaluator, runner, request, feed, deadline, level)

    async def _admitted(self, call: Call, evaluator: Evaluator, runner: Runner | None, request: InferenceRequest,
                        feed: Arrays, deadline: float | None, level: int) -> InferenceResponse:
        """The prediction of a request with a gate or a deadline: once the gate lets it in, if still in time."""
        lv, gate = call.model, call.model.gate
        watcher = None if gate is None else await self._admit(call, gate, deadline, level)
        try:
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                if gate is not None:
                    gate.leave()
                raise Expired(f"the request's deadline passed before model '{lv.model}' could run it; it was not run")
            # the version and the gate's slot are held by the prediction itself, which may outlive the request
            done = functools.partial(self.manager.release, lv) if gate is None else functools.partial(
                _release, self.manager, lv, gate)
            lv.inflight += 1
            if runner is None:
                assert isinstance(evaluator, ContextEvaluator)
                return await self._run_in_context(call, evaluator, request, feed, done, deadline, watcher)
            return await self._predict(call, runner, request, feed, done, deadline, watcher)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _run_logged(self, call: Call, request: InferenceRequest, logged: Pending) -> InferenceResponse:
        """:meth:`_run` of a request the request log keeps: what it carried and what it answered are handed to the
        log when the call ends (a request :meth:`_run` refuses fails here, with its request noted)."""
        logged.request = request
        logged.response = response = await self._run(call, request)
        return response

    def _check(self, evaluator: Evaluator, request: InferenceRequest) -> None:
        """Refuse what no model takes: too many inputs, outputs the model does not give."""
        if len(request.inputs) > self.limits.max_tensors_per_request:
            raise InvalidInput(f"too many inputs ({len(request.inputs)}); the limit is "
                               f"{self.limits.max_tensors_per_request}")
        wanted = request.outputs
        if wanted is not None:
            signature = evaluator.signature
            unknown = [n for n in wanted if signature.output(n) is None]
            if unknown:
                raise InvalidInput(
                    f"unknown output {', '.join(repr(n) for n in unknown)}; the model gives: "
                    f"{', '.join(signature.output_names)}"
                )

    async def _admit(self, call: Call, gate: Gate, deadline: float | None, level: int) -> asyncio.Future[object] | None:
        """Wait for the gate to let the request in; the watch on its client when it had to queue (the caller
        cancels it).  Raises :class:`Overloaded`, :class:`Expired` or :class:`ClientGone` instead."""
        if gate.try_enter():
            call.series.queued.observe(0.0)
            return None
        slot = gate.wait(deadline, level)
        loop = asyncio.get_running_loop()
        queued = loop.time()
        watcher = None if call.watch is None else asyncio.ensure_future(call.watch())
        try:
            await _first(slot, watcher)
        except BaseException:
            gate.abandon(slot)
            if watcher is not None:
                watcher.cancel()
            raise
        finally:
            call.series.queued.observe(loop.time() - queued)
        return watcher

    async def _predict(self, call: Call, runner: Runner, request: InferenceRequest, feed: Arrays,
                       done: Callable[[], None], deadline: float | None,
                       watcher: asyncio.Future[object] | None) -> InferenceResponse:
        lv, series = call.model, call.series
        submitted = time.perf_counter()
        timing = Timing()
        try:
            result = runner.run(feed, done, timing, deadline)
        except MlportError:
            raise
        except Exception as exc:
            raise _failure(lv, exc) from exc
        if type(result) is dict:
            outputs = result
        else:
            assert isinstance(result, asyncio.Future)
            outputs = await self._outcome(lv, result, deadline, watcher)
        series.inference.observe(timing.ended - timing.started)
        parameters = self.drift.observe(lv, feed, outputs)
        if request.outputs is not None:
            outputs = {n: outputs[n] for n in request.outputs}
        response = InferenceResponse(
            model_name=lv.model,
            model_version=str(lv.version),
            outputs=_as_arrays(outputs),
            id=request.id,
            parameters=parameters,
        )
        rows = _rows(feed) if runner.batched else 1
        series.stats.ran(rows, submitted - call.started, timing.started - submitted, timing.ended - timing.started,
                         time.perf_counter() - timing.ended)
        return response

    async def _outcome(self, lv: LoadedVersion, result: asyncio.Future[Arrays], deadline: float | None,
                       watcher: asyncio.Future[object] | None) -> Arrays:
        """The result, or the request's time limit (or deadline), whichever comes first; the prediction itself
        goes on (and holds its version) until it ends."""
        loop = asyncio.get_running_loop()
        limit = self._time_limit
        timer = None
        if deadline is not None and deadline < loop.time() + limit.seconds:
            timer = loop.call_later(deadline - loop.time(), _expire, result,
                                    "the request's deadline passed while its prediction ran")
        elif not limit.watch(result, loop):
            timer = loop.call_later(limit.seconds, _expire, result, limit.message)
        try:
            outputs: Arrays = await _first(result, watcher)
            return outputs
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
            if timer is None:
                limit.forget(result)
            else:
                timer.cancel()

    async def _run_in_context(
        self, call: Call, evaluator: ContextEvaluator, request: InferenceRequest, feed: Arrays,
        done: Callable[[], None], deadline: float | None, watcher: asyncio.Future[object] | None,
    ) -> InferenceResponse:
        """A model that routes or cascades: it sees the request's id and routing key and answers parameters
        (which route or stage answered). It runs on the inference threads, one request per call."""
        lv, series = call.model, call.series
        params = request.parameters or {}
        key = params.get("routing_key")
        ctx = RequestContext(request_id=request.id, routing_key=None if key is None else str(key))
        loop = asyncio.get_running_loop()
        submitted = time.perf_counter()
        series.stats.execution_count += 1
        future = loop.run_in_executor(self._executor, evaluator.predict_in, feed, ctx)
        future.add_done_callback(lambda _f: done())
        outputs = await self._outcome(lv, asyncio.ensure_future(asyncio.shield(future)), deadline, watcher)
        ended = time.perf_counter()
        series.inference.observe(ended - submitted)
        series.stats.ran(1, submitted - call.started, 0.0, ended - submitted, 0.0)
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

    def close(self) -> None:
        self._inflight.close()
        self._time_limit.close()
        self.drift.close()
        self.explain.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.request_log is not None:
            self.request_log.close()


def _schedule(params: dict[str, Any], deadline: float | None, gate: Gate | None) -> tuple[float | None, int]:
    """The deadline and priority level a request's parameters ask for (Triton's ``timeout``, in microseconds,
    and ``priority``, in the levels of the version's queue), within the transport's deadline."""
    priority = params.get("priority")
    level = parse_priority(priority) if gate is None else gate.priority(priority)
    seconds = parse_timeout_us(params.get("timeout"))
    if seconds is None:
        return deadline, level
    own = asyncio.get_running_loop().time() + seconds
    return (own if deadline is None else min(own, deadline)), level


async def _first(future: asyncio.Future[Any], watcher: asyncio.Future[object] | None) -> Any:
    """The future's result; :class:`ClientGone` (the future cancelled) when the watcher ends first."""
    if watcher is None:
        return await future
    await asyncio.wait((future, watcher), return_when=asyncio.FIRST_COMPLETED)
    if not future.done():
        future.cancel()
        raise ClientGone("the client went away before its answer")
    return future.result()


def _release(manager: ModelManager, lv: LoadedVersion, gate: Gate) -> None:
    manager.release(lv)
    gate.leave()


def _expire(future: asyncio.Future[Arrays], message: str) -> None:
    if not future.done():
        future.set_exception(MlportError(message, ErrorCode.DEADLINE_EXCEEDED))


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
    for v in outputs.values():
        if type(v) is not np.ndarray:
            return {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in outputs.items()}
    return dict(outputs)  # (an evaluator may keep the dict it answered)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
