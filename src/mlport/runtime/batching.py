"""How predictions of one model run: inline or on the inference threads, one request at a time or in batches.

A :class:`Runner` belongs to one evaluator of one loaded version and lives on the event loop thread.

Inline or threaded
    A prediction runs on the inference thread pool, so the event loop keeps reading and writing other
    requests meanwhile.  Handing work to a thread costs tens of microseconds, more than a small model
    (a linear model, a few trees) takes to predict; once a model's predictions are measured to be that
    quick, they run inline on the event loop instead.  Every prediction is timed, so a model that turns
    slow goes back to the threads at once, and a request much larger than usual is estimated by its rows.

Adaptive batching (``batching`` in ``model.yaml``)
    Requests that arrive while others are queued are merged along axis 0 into one ``predict`` and the
    outputs are split back by rows.  The batch size adapts to the load: a request that finds the model
    idle is dispatched at the end of the current event loop turn (together with whatever arrived in the
    same turn, so a lone request waits for nothing); while the model is busy, requests gather until a
    prediction slot frees up, the batch reaches ``max_batch_size`` rows, or the oldest request has waited
    ``max_delay_ms``, whichever comes first.  A request is never held past that bound.  A batch is made
    only of requests still wanted: one whose client gave up (its future cancelled) or whose deadline passed
    while it waited is left out, and never reaches the model.

    Only requests for the same evaluator (version and signature) whose inputs agree in dtype and in every
    dimension after the first are merged.  A model whose inputs or outputs lack a free batch axis is never
    batched.  When a merged prediction fails, each request of it runs again alone, so that each keeps its
    own answer or its own error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from mlport.core.types import Signature
from mlport.formats.base import Arrays, Evaluator
from mlport.formats.config import BatchingConfig
from mlport.runtime.admission import Expired
from mlport.runtime.stats import ModelStats, Timing

__all__ = ["INLINE_BELOW_S", "Runner", "batchable"]

log = logging.getLogger(__name__)

#: Predictions estimated to take less than this run inline on the event loop.
INLINE_BELOW_S = 0.0002
#: Predictions timed on the thread pool before a model may run inline.
_WARMUP_CALLS = 3
#: Batches of one request in a row after which requests that find the model idle run at once.
_LONELY_AFTER = 4
#: Of such requests, one in this many still goes through the queue (to see whether others join it).
_PROBE_EVERY = 8
#: Weight of the newest call in the moving average of rows per call.
_ALPHA = 0.2
#: How far one inline measurement moves the estimate of a call's time (up, down: it tracks the median).
_STEP_UP = 1.15
_STEP_DOWN = 1 / _STEP_UP

Outcome = Arrays | BaseException


def batchable(signature: Signature) -> bool:
    """True when every input and output has a free batch axis (axis 0 is ``-1``)."""
    return bool(signature.inputs) and all(s.batched for s in (*signature.inputs, *signature.outputs))


def _rows(feed: Arrays) -> int:
    for arr in feed.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 0


def _key(feed: Arrays) -> tuple[Any, ...]:
    """Requests merge only when every input agrees in dtype and in each dimension after the first."""
    if len(feed) == 1:  # the common case, without a generator per request
        for name, arr in feed.items():
            return (name, arr.dtype, arr.shape[1:])
    return tuple([(name, arr.dtype, arr.shape[1:]) for name, arr in feed.items()])


Done = Callable[[], None]


class _Pending:
    __slots__ = ("deadline", "done", "feed", "future", "rows", "since", "timing")

    def __init__(self, feed: Arrays, rows: int, future: asyncio.Future[Arrays], since: float, done: Done,
                 timing: Timing | None, deadline: float | None) -> None:
        self.feed = feed
        self.rows = rows
        self.future = future
        self.since = since
        self.done = done
        self.timing = timing
        self.deadline = deadline


def _wanted(items: list[_Pending], now: float) -> list[_Pending]:
    """The requests of a batch still wanted; the others are ended here, unrun (an expired one with its error)."""
    kept = []
    for item in items:
        if item.future.done():  # the caller gave up on it (its client went away)
            item.done()
        elif item.deadline is not None and item.deadline <= now:
            item.done()
            item.future.set_exception(Expired("the request's deadline passed while it waited for its batch; it was "
                                              "not run"))
        else:
            kept.append(item)
    return kept


def _settle(future: asyncio.Future[Arrays], outcome: Outcome | None, cancelled: bool = False) -> None:
    """Complete a request's future, unless its caller already gave up on it (timed out, went away)."""
    if future.done():
        return
    if cancelled:
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome or {})


class _Queue:
    """Requests waiting to be merged: one queue per input layout."""

    __slots__ = ("items", "rows", "timer")

    def __init__(self) -> None:
        self.items: list[_Pending] = []
        self.rows = 0
        self.timer: asyncio.TimerHandle | None = None


class Runner:
    """Runs the predictions of one evaluator (see the module's description)."""

    def __init__(
        self,
        evaluator: Evaluator,
        executor: Executor,
        batching: BatchingConfig | None = None,
        concurrency: int = 1,
        name: str = "",
        stats: ModelStats | None = None,
    ) -> None:
        self.evaluator = evaluator
        #: Where model executions are counted (on the event loop thread).
        self.stats = stats or ModelStats()
        #: Whether every input and output has a free batch axis.
        self.batched = batchable(evaluator.signature)
        self.name = name or "model"
        self._executor = executor
        self._concurrency = max(1, concurrency)
        enabled = batching is not None and batching.enabled
        if enabled and not self.batched:
            log.info("%s: batching is configured, but the model has inputs or outputs without a batch axis; "
                     "requests run one by one", self.name)
            enabled = False
        self.batching = enabled
        self._plan = tuple((s.name, s.datatype.numpy, s.shape, s.batched) for s in evaluator.signature.inputs)
        self.max_batch_size = batching.max_batch_size if batching is not None and enabled else 0
        self.max_delay_s = batching.max_delay_ms / 1000.0 if batching is not None else 0.0
        self.preferred = tuple(sorted({p for p in (batching.preferred_batch_sizes if batching else ())
                                       if 1 < p <= self.max_batch_size}))
        self._queues: dict[tuple[Any, ...], _Queue] = {}
        self._soon: asyncio.Handle | None = None
        #: Predictions (batches) running on the thread pool now.
        self.running = 0
        # estimates of the seconds a predict call takes, and of the rows it has
        self._calls = 0
        self._call_s = 0.0
        self._call_rows = 1.0
        #: Batches run and requests they carried (read by tests and logs).
        self.batches = 0
        self.batched_requests = 0
        # batches in a row that carried one request, and a counter choosing which lone requests still queue
        self._singles = 0
        self._probe = 0

    # ------------------------------------------------------------------ timing
    def _timed(self, feed: Arrays, rows: int, inline: bool = False, timings: tuple[Timing | None, ...] = ()) -> Arrays:
        started = time.perf_counter()
        out = self.evaluator.predict(feed)
        ended = time.perf_counter()
        self._record(ended - started, rows, inline)
        for timing in timings:
            if timing is not None:
                timing.started, timing.ended = started, ended
        return out

    def _record(self, seconds: float, rows: int, inline: bool) -> None:
        """Update the estimate of a typical call's time.

        Inline calls move the estimate a step towards each measurement (it settles on their median, so a
        call that was preempted or collected garbage does not send the model to the threads).  Calls on a
        pool thread also measure the wait for the interpreter lock when they return: they only ever lower
        the estimate.  A model that is slow is slow in every measurement, and leaves the loop within a few
        calls."""
        rows = max(rows, 1)
        if self._calls == 0:
            self._call_s, self._call_rows = seconds, float(rows)
        else:
            if rows > self._call_rows:
                seconds *= self._call_rows / rows
            if inline:
                self._call_s *= _STEP_UP if seconds > self._call_s else _STEP_DOWN
                self._call_rows += _ALPHA * (rows - self._call_rows)
            elif seconds < self._call_s:
                self._call_s = seconds
        self._calls += 1

    def inline(self, rows: int) -> bool:
        """Whether a prediction of ``rows`` rows is expected to be quick enough to run on the event loop."""
        if self._calls < _WARMUP_CALLS:
            return False
        return self._call_s * max(1.0, rows / self._call_rows) < INLINE_BELOW_S

    def exact(self, feed: Arrays) -> bool:
        """Whether ``feed`` already is what the model takes: its inputs and no others, each with the model's
        dtype and shape, one batch size (a quick check; the full one, which casts and names what is wrong,
        is :func:`mlport.core.validate.check_inputs`)."""
        if len(feed) != len(self._plan):
            return False
        batch = -1
        for name, dtype, want, batched in self._plan:
            arr = feed.get(name)
            if arr is None or arr.dtype != dtype:
                return False
            shape = arr.shape
            if len(shape) != len(want):
                return False
            for w, g in zip(want, shape, strict=True):
                if w != g and w != -1:
                    return False
            if batched:
                if batch == -1:
                    batch = shape[0]
                elif shape[0] != batch:
                    return False
        return True

    # ------------------------------------------------------------------ entry
    def run(self, feed: Arrays, done: Done, timing: Timing | None = None,
            deadline: float | None = None) -> Arrays | asyncio.Future[Arrays]:
        """The outputs now (a quick prediction run inline), or a future of them.

        ``done`` is called once the prediction that carries this request has ended (also when the request's
        future was completed earlier, by a time limit): until then the request's model must stay open.
        Exceptions of an inline prediction are raised here; a future carries its own. ``timing``, when given,
        receives when the prediction that carries this request started and ended.  ``deadline`` (the event
        loop's clock): a request still queued for its batch then is ended unrun.
        """
        rows = _rows(feed)
        try:
            if self.batching and 0 < rows < self.max_batch_size and not self._lonely():
                return self._enqueue(feed, rows, done, timing, deadline)
            self.stats.execution_count += 1
            if self._calls >= _WARMUP_CALLS and (
                self._call_s * (rows / self._call_rows if rows > self._call_rows else 1.0) < INLINE_BELOW_S
            ):
                started = time.perf_counter()
                out = self.evaluator.predict(feed)
                ended = time.perf_counter()
                self._record(ended - started, rows, True)
                if timing is not None:
                    timing.started, timing.ended = started, ended
                done()
                return out
        except BaseException:
            done()
            raise
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        self.running += 1
        work = loop.run_in_executor(self._executor, self._timed, feed, rows, False, (timing,))
        work.add_done_callback(functools.partial(self._single_done, future, done))
        return future

    def _single_done(self, future: asyncio.Future[Arrays], done: Done, work: asyncio.Future[Arrays]) -> None:
        done()
        if work.cancelled():
            _settle(future, None, cancelled=True)
        else:
            _settle(future, work.exception() or work.result())
        self._slot_freed()

    def _lonely(self) -> bool:
        """Whether requests have been coming one at a time: the last batches each carried a single request,
        nothing is queued or running.  Such a request runs at once, without waiting for the end of the event
        loop turn; one in every few still goes through the queue, to notice when requests start to overlap."""
        if self._singles < _LONELY_AFTER or self.running or self._queues:
            return False
        self._probe += 1
        return self._probe % _PROBE_EVERY != 0

    def _slot_freed(self) -> None:
        """A prediction on the pool ended: what is queued may go now."""
        self.running -= 1
        if self._soon is None and self._queues:
            self._soon = asyncio.get_running_loop().call_soon(self._flush)

    # ------------------------------------------------------------------ batching
    def _enqueue(self, feed: Arrays, rows: int, done: Done, timing: Timing | None,
                 deadline: float | None) -> asyncio.Future[Arrays]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        key = _key(feed)
        queue = self._queues.get(key)
        if queue is not None and queue.rows + rows > self.max_batch_size:
            self._dispatch(key, queue, len(queue.items))  # full: it cannot take this request
            queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        queue.items.append(_Pending(feed, rows, future, loop.time(), done, timing, deadline))
        queue.rows += rows
        if queue.rows >= self.max_batch_size:
            self._dispatch(key, queue, len(queue.items))
        elif self.running < self._concurrency:
            if self._soon is None:
                self._soon = loop.call_soon(self._flush)
        else:
            self._arm(key, queue)
        return future

    def _flush(self) -> None:
        """Dispatch what is queued while prediction slots are free (at the end of an event loop turn)."""
        self._soon = None
        for key, queue in list(self._queues.items()):
            while queue.items and self.running < self._concurrency:
                self._dispatch(key, queue, self._cut(queue))
            if queue.items:
                self._arm(key, queue)

    def _expire(self, key: tuple[Any, ...]) -> None:
        """The oldest request of a queue reached the delay bound: dispatch, free slot or not."""
        queue = self._queues.get(key)
        if queue is None:
            return
        queue.timer = None
        now = asyncio.get_running_loop().time()
        while queue.items and queue.items[0].since + self.max_delay_s <= now:
            self._dispatch(key, queue, self._cut(queue))
        if queue.items:
            self._arm(key, queue)

    def _arm(self, key: tuple[Any, ...], queue: _Queue) -> None:
        if queue.timer is None:
            queue.timer = asyncio.get_running_loop().call_at(queue.items[0].since + self.max_delay_s,
                                                             self._expire, key)

    def _cut(self, queue: _Queue) -> int:
        """How many queued requests form the next batch: all of them, or as many as reach the largest
        preferred batch size their rows allow."""
        if not self.preferred or queue.rows <= self.preferred[0]:
            return len(queue.items)
        target = max(p for p in self.preferred if p <= queue.rows)
        total = 0
        for i, item in enumerate(queue.items):
            total += item.rows
            if total >= target:
                return i + 1
        return len(queue.items)

    def _dispatch(self, key: tuple[Any, ...], queue: _Queue, count: int) -> None:
        items = queue.items[:count]
        if not items:
            return
        del queue.items[:count]
        rows = sum(p.rows for p in items)
        queue.rows -= rows
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        if queue.items:
            self._arm(key, queue)
        else:
            del self._queues[key]
        items = _wanted(items, asyncio.get_running_loop().time())
        if not items:
            return
        rows = sum(p.rows for p in items)
        self.batches += 1
        self.batched_requests += len(items)
        self.stats.execution_count += 1
        self._singles = self._singles + 1 if len(items) == 1 else 0
        if self.inline(rows):
            try:
                outcomes = self._run_batch(items, True)
            except BaseException:
                for item in items:
                    item.done()
                raise
            self._deliver(items, outcomes)
            return
        self.running += 1
        work = asyncio.get_running_loop().run_in_executor(self._executor, self._run_batch, items)
        work.add_done_callback(functools.partial(self._finished, items))

    def _finished(self, items: list[_Pending], work: asyncio.Future[list[Outcome]]) -> None:
        if work.cancelled():
            for item in items:
                item.done()
                _settle(item.future, None, cancelled=True)
        else:
            error = work.exception()
            self._deliver(items, [error] * len(items) if error is not None else work.result())
        self._slot_freed()

    @staticmethod
    def _deliver(items: list[_Pending], outcomes: list[Outcome]) -> None:
        for item, outcome in zip(items, outcomes, strict=True):
            item.done()
            _settle(item.future, outcome)

    def _run_batch(self, items: list[_Pending], inline: bool = False) -> list[Outcome]:
        """Merge, predict, split (on a pool thread or inline); alone again for each request on failure."""
        if len(items) == 1:
            return [self._one(items[0], inline)]
        total = sum(p.rows for p in items)
        try:
            feed = {name: np.concatenate([p.feed[name] for p in items], axis=0) for name in items[0].feed}
            outputs = self._timed(feed, total, inline, tuple(p.timing for p in items))
        except Exception:
            return [self._one(p, inline) for p in items]
        if any(np.ndim(a) == 0 or np.shape(a)[0] != total for a in outputs.values()):
            log.warning("%s: an output does not follow the batch axis; batching is turned off for it", self.name)
            self.batching = False
            return [self._one(p, inline) for p in items]
        results: list[Outcome] = []
        start = 0
        for p in items:
            stop = start + p.rows
            results.append({name: out[start:stop] for name, out in outputs.items()})
            start = stop
        return results

    def _one(self, item: _Pending, inline: bool) -> Outcome:
        try:
            return self._timed(item.feed, item.rows, inline, (item.timing,))
        except Exception as exc:
            return exc

    def queued(self) -> int:
        """Requests waiting to be dispatched."""
        return sum(len(q.items) for q in self._queues.values())
