"""The request log on the inference path: sampling and a hand-over that never waits, then a writer thread.

A request that is sampled hands its tensors (references, no copies) to its sink's channel. The records are
encoded in batches on the event loop, once the requests that finished in one turn of the loop have had their
answers (a writer thread encoding them would fight the event loop for the GIL, and every system call of the loop
would then wait for it); one background thread per sink writes the encoded batches (its file and network I/O
release the GIL). When the queue is full, or the sink fails, records are
dropped and counted in ``mlport_log_dropped_total{model,reason}``; the failure is logged at most once per
:data:`WARN_INTERVAL_S`. A request never waits for, nor fails because of, its log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as Metric

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.logconfig import RequestLogConfig, SinkConfig
from mlport.errors import InvalidInput
from mlport.observability.requestlog.records import Captured

__all__ = ["WARN_INTERVAL_S", "LogMetrics", "Pending", "RequestLog", "Sink", "open_sink"]

log = logging.getLogger("mlport.requestlog")

#: Seconds between two log lines about a failing sink (or a full queue).
WARN_INTERVAL_S = 60.0
#: Most records one write to the sink carries.
MAX_RECORDS_PER_WRITE = 4096
#: Seconds between two looks of the writer at its queue.
FLUSH_S = 0.05
#: Seconds a record waits on the event loop before its batch is encoded.
ENCODE_AFTER_S = 0.05
#: Records that, once waiting, are encoded at once (the longest the event loop spends on one batch).
ENCODE_BATCH = 512
#: Seconds without records after which the writer lets the sink rotate an old file.
IDLE_S = 0.25
#: Longest a closing server waits for its writers to drain.
CLOSE_WAIT_S = 10.0


class Sink(Protocol):
    def encode(self, batch: list[Captured]) -> Any:
        """Make the batch ready to write (on the event loop: cheap, no I/O)."""

    def write(self, encoded: list[Any]) -> None:
        """Write encoded batches, oldest first (on the writer thread)."""

    def tick(self) -> None: ...

    def close(self) -> None: ...


def open_sink(sink: SinkConfig) -> Sink:
    """The writer of a sink's kind: rotating files (folder or object store) or CloudEvents over HTTP."""
    if sink.kind == "http":
        from mlport.observability.requestlog.cloudevents import CloudEventsSink

        return CloudEventsSink(sink)
    from mlport.observability.requestlog.files import RotatingFiles

    return RotatingFiles(sink)


class LogMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Metric("mlport_log_dropped", "Request log records dropped (queue full or sink failing)",
                               ["model", "reason"], registry=registry)
        self.written = Metric("mlport_log_records", "Request log records written", ["model"], registry=registry)


def _per_model(batch: list[Captured]) -> Counter[str]:
    """How many of a batch's records each model has (most batches are of one model)."""
    first = batch[0].model
    if all(c.model == first for c in batch):
        return Counter({first: len(batch)})
    return Counter(c.model for c in batch)


def _count(metric: Metric, counts: Counter[str], *labels: str) -> None:
    for model, count in counts.items():
        metric.labels(model, *labels).inc(count)


class _Warner:
    """Logs a recurring failure once per interval, with how often it happened in between."""

    def __init__(self) -> None:
        self._last = -WARN_INTERVAL_S
        self._since = 0
        self._lock = threading.Lock()

    def warn(self, message: str, count: int = 1) -> None:
        with self._lock:
            self._since += count
            now = time.monotonic()
            if now - self._last < WARN_INTERVAL_S:
                return
            self._last, since, self._since = now, self._since, 0
        log.warning("request log: %s (%d records dropped since the last report)", message, since)


class _Channel:
    """One sink's queue and writer thread.

    The request path appends to a list (no lock, no wake-up); the event loop encodes that list as one batch and
    appends the encoded batch, with its record count per model, to a deque, letting the records (and the tensors
    they hold) go there and then; the writer looks every :data:`FLUSH_S` and takes everything there, so the two
    threads hand over the GIL rarely.
    """

    def __init__(self, sink: SinkConfig, metrics: LogMetrics, opener: Callable[[SinkConfig], Sink]) -> None:
        self.config = sink
        self._metrics = metrics
        self._pending: list[Captured] = []
        self._scheduled = False
        #: (records per model, encoded batch): the records themselves are let go on the event loop, once encoded
        self._items: deque[tuple[Counter[str], Any]] = deque()
        #: records encoded (counted by the event loop) and taken by the writer (counted by the writer thread)
        self._encoded = 0
        self._taken = 0
        self._limit = sink.queue
        self._warner = _Warner()
        self._stop = threading.Event()
        self._sink = opener(sink)  # a sink that cannot even be opened fails the server's start
        self._thread = threading.Thread(target=self._loop, name=f"mlport-requestlog {sink.url}", daemon=True)
        self._thread.start()

    def put(self, item: Captured) -> None:
        if self._encoded - self._taken + len(self._pending) >= self._limit:
            self._metrics.dropped.labels(item.model, "queue_full").inc()
            self._warner.warn(f"the queue of {self.config.url} is full ({self.config.queue} records)")
            return
        pending = self._pending
        pending.append(item)
        if len(pending) >= ENCODE_BATCH:
            self._encode()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(ENCODE_AFTER_S, self._encode_later)
            except RuntimeError:  # no event loop here: encode at once
                self._encode()
                return
            self._scheduled = True

    def _encode_later(self) -> None:
        self._scheduled = False
        self._encode()

    def _encode(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._encode_batch(batch)

    def _encode_batch(self, batch: list[Captured]) -> None:
        counts = _per_model(batch)
        try:
            encoded = self._sink.encode(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._failed(counts, exc)
                return
            for record in batch:  # a record the sink cannot encode (a tensor of no datatype) fails alone
                self._encode_batch([record])
            return
        self._encoded += len(batch)
        self._items.append((counts, encoded))

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            stopping = self._stop.wait(FLUSH_S)
            items = self._items
            if items:
                while items:  # everything queued, in one write of at most MAX_RECORDS_PER_WRITE records
                    taken: Counter[str] = Counter()
                    encoded: list[Any] = []
                    while items and taken.total() < MAX_RECORDS_PER_WRITE:
                        counts, done = items.popleft()
                        taken.update(counts)
                        encoded.append(done)
                    self._write(taken, encoded)
                    self._taken += taken.total()
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= IDLE_S:
                self._guard(self._sink.tick)
                idle_since = time.monotonic()
            if stopping and not items:
                self._guard(self._sink.close)
                return

    def _write(self, counts: Counter[str], encoded: list[Any]) -> None:
        try:
            self._sink.write(encoded)
        except Exception as exc:  # the sink's own failure: drop and count, never stop the writer
            self._failed(counts, exc)
            return
        _count(self._metrics.written, counts)

    def _failed(self, counts: Counter[str], exc: Exception) -> None:
        _count(self._metrics.dropped, counts, "sink_error")
        self._warner.warn(f"writing to {self.config.url} failed: {exc}", 0)

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self._warner.warn(f"{self.config.url}: {exc}", 0)

    def close(self, wait_s: float) -> None:
        if self._pending:
            self._encode()
        self._stop.set()
        self._thread.join(wait_s)


class Pending:
    """A sampled request: what it carried and what it answered (set by the inference path), handed to the writer
    when it ends."""

    __slots__ = ("_channel", "_inputs", "_outputs", "model", "protocol", "request", "response", "version")

    def __init__(self, channel: _Channel, inputs: bool, outputs: bool, model: str, version: str,
                 protocol: str) -> None:
        self._channel = channel
        self._inputs = inputs
        self._outputs = outputs
        self.model = model
        self.version = version
        self.protocol = protocol
        self.request: InferenceRequest | None = None
        self.response: InferenceResponse | None = None

    def finish(self, request_id: str | None, status: str, seconds: float) -> None:
        request, response = self.request, self.response
        self._channel.put(Captured(
            time.time() - seconds, request_id, self.model, self.version, self.protocol, status, seconds,
            request.inputs if request is not None and self._inputs else None,
            response.outputs if response is not None and self._outputs else None,
            response.parameters if response is not None else None,
        ))


class RequestLog:
    """The server's request log: ``default`` from its flags, overridden per model by ``model.yaml``."""

    def __init__(self, default: RequestLogConfig | None, registry: CollectorRegistry,
                 opener: Callable[[SinkConfig], Sink] = open_sink) -> None:
        self.default = default
        self.metrics = LogMetrics(registry)
        self._opener = opener
        self._channels: dict[SinkConfig, _Channel] = {}
        self._lock = threading.Lock()
        self._closed = False
        #: (model, version) -> (the model's config object, what it resolved to)
        self._targets: dict[tuple[str, int], tuple[object, tuple[RequestLogConfig, _Channel] | None]] = {}
        if default is not None and default.sink is not None:
            try:  # the server's own sink: one it cannot open stops it at start
                self._channel(default.sink)
            except InvalidInput:
                raise
            except Exception as exc:
                raise InvalidInput(f"request log {default.sink.url}: {exc}") from exc

    def resolve(self, config: RequestLogConfig | None) -> RequestLogConfig | None:
        """A model's own logging settings over the server's; ``None`` when it is not logged."""
        if config is None:
            return self.default
        if config.sink is None:
            if self.default is None or self.default.sink is None:
                return None
            return config.model_copy(update={"sink": self.default.sink})
        return config

    def start(self, model: str, version: int, config: RequestLogConfig | None, protocol: str) -> Pending | None:
        """A request to ``model``/``version`` begins: its :class:`Pending` when it is to be logged."""
        target = self._target_of(model, version, config)
        if target is None or self._closed:
            return None
        resolved, channel = target
        if resolved.sample < 1.0 and random.random() >= resolved.sample:
            return None
        return Pending(channel, resolved.inputs, resolved.outputs, model, str(version), protocol)

    def logs(self, model: str, version: int, config: RequestLogConfig | None) -> bool:
        """Whether requests to ``model``/``version`` may be logged (sampled or not)."""
        return not self._closed and self._target_of(model, version, config) is not None

    def _target_of(self, model: str, version: int,
                   config: RequestLogConfig | None) -> tuple[RequestLogConfig, _Channel] | None:
        found = self._targets.get((model, version))
        if found is None or found[0] is not config:
            found = self._targets[(model, version)] = (config, self._target(config))
        return found[1]

    def _target(self, config: RequestLogConfig | None) -> tuple[RequestLogConfig, _Channel] | None:
        resolved = self.resolve(config)
        if resolved is None or resolved.sink is None or resolved.sample <= 0.0:
            return None
        try:
            return resolved, self._channel(resolved.sink)
        except Exception as exc:  # a sink that cannot be opened: the model serves, unlogged
            log.warning("request log: cannot open %s: %s; these requests are not logged", resolved.sink.url, exc)
            return None

    def _channel(self, sink: SinkConfig) -> _Channel:
        with self._lock:
            found = self._channels.get(sink)
            if found is None:
                found = self._channels[sink] = _Channel(sink, self.metrics, self._opener)
            return found

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Write what is queued (waiting at most ``wait_s`` per sink) and close the sinks."""
        self._closed = True
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            channel.close(wait_s)
