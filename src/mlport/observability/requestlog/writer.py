"""The request log on the inference path: sampling and a hand-over that never waits, then a writer thread.

A request that is sampled hands its tensors (references, no copies) to the bounded queue of its sink; one
background thread per sink encodes and writes them. When the queue is full, or the sink fails, records are
dropped and counted in ``mlport_log_dropped_total{model,reason}``; the failure is logged at most once per
:data:`WARN_INTERVAL_S`. A request never waits for, nor fails because of, its log.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.logconfig import RequestLogConfig, SinkConfig
from mlport.observability.requestlog.records import Captured

__all__ = ["WARN_INTERVAL_S", "LogMetrics", "Pending", "RequestLog", "Sink", "open_sink"]

log = logging.getLogger("mlport.requestlog")

#: Seconds between two log lines about a failing sink (or a full queue).
WARN_INTERVAL_S = 60.0
#: Records a writer takes from its queue at once.
BATCH = 512
#: Seconds the writer waits for records before it lets the sink rotate old files.
IDLE_S = 0.25
#: Longest a closing server waits for its writers to drain.
CLOSE_WAIT_S = 10.0


class Sink(Protocol):
    def write(self, batch: list[Captured]) -> None: ...

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
        self.dropped = Counter("mlport_log_dropped", "Request log records dropped (queue full or sink failing)",
                               ["model", "reason"], registry=registry)
        self.written = Counter("mlport_log_records", "Request log records written", ["model"], registry=registry)


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
    """One sink's queue and writer thread."""

    def __init__(self, sink: SinkConfig, metrics: LogMetrics, opener: Callable[[SinkConfig], Sink]) -> None:
        self.config = sink
        self._metrics = metrics
        self._queue: queue.Queue[Captured | None] = queue.Queue(maxsize=sink.queue)
        self._warner = _Warner()
        self._sink = opener(sink)  # a sink that cannot even be opened fails the server's start
        self._thread = threading.Thread(target=self._loop, name=f"mlport-requestlog {sink.url}", daemon=True)
        self._thread.start()

    def put(self, item: Captured) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._metrics.dropped.labels(item.model, "queue_full").inc()
            self._warner.warn(f"the queue of {self.config.url} is full ({self.config.queue} records)")

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_S)
            except queue.Empty:
                self._guard(self._sink.tick)
                continue
            batch: list[Captured] = []
            stop = first is None
            if first is not None:
                batch.append(first)
            while not stop and len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                self._write(batch)
            if stop:
                self._guard(self._sink.close)
                return

    def _write(self, batch: list[Captured]) -> None:
        try:
            self._sink.write(batch)
        except Exception as exc:  # the sink's own failure: drop and count, never stop the writer
            for c in batch:
                self._metrics.dropped.labels(c.model, "sink_error").inc()
            self._warner.warn(f"writing to {self.config.url} failed: {exc}", 0)
            return
        for c in batch:
            self._metrics.written.labels(c.model).inc()

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self._warner.warn(f"{self.config.url}: {exc}", 0)

    def close(self, wait_s: float) -> None:
        try:
            self._queue.put(None, timeout=wait_s)
        except queue.Full:
            return
        self._thread.join(wait_s)


class Pending:
    """A sampled request: what it carried and what it answered, handed to the writer when it ends."""

    __slots__ = ("_channel", "_config", "model", "protocol", "request", "response", "version")

    def __init__(self, channel: _Channel, config: RequestLogConfig, model: str, version: str, protocol: str) -> None:
        self._channel = channel
        self._config = config
        self.model = model
        self.version = version
        self.protocol = protocol
        self.request: InferenceRequest | None = None
        self.response: InferenceResponse | None = None

    async def watch(self, request: InferenceRequest,
                    running: Coroutine[Any, Any, InferenceResponse]) -> InferenceResponse:
        self.request = request
        self.response = await running
        return self.response

    def finish(self, request_id: str | None, status: str, seconds: float) -> None:
        request, response, config = self.request, self.response, self._config
        self._channel.put(Captured(
            time=time.time() - seconds, request_id=request_id, model=self.model, version=self.version,
            protocol=self.protocol, status=status, seconds=seconds,
            inputs=request.inputs if request is not None and config.inputs else None,
            outputs=response.outputs if response is not None and config.outputs else None,
            parameters=response.parameters if response is not None else None,
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
            self._channel(default.sink)

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
        found = self._targets.get((model, version))
        if found is None or found[0] is not config:
            found = self._targets[(model, version)] = (config, self._target(config))
        target = found[1]
        if target is None or self._closed:
            return None
        resolved, channel = target
        if resolved.sample < 1.0 and random.random() >= resolved.sample:
            return None
        return Pending(channel, resolved, model, str(version), protocol)

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
