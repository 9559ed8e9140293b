"""The metric series of inference requests, looked up once per model version and protocol instead of per request."""

from __future__ import annotations

import asyncio
from typing import Any

from mlport.observability.metrics import Metrics
from mlport.runtime.stats import ModelStats

__all__ = ["SHARED_GAUGE_PERIOD_S", "Inflight", "Series"]


#: Seconds between copies of the in-flight counts into the gauges shared by worker processes.
SHARED_GAUGE_PERIOD_S = 0.25


class Inflight:
    """Requests being served, per model, as plain counts: read when the metrics are scraped (one process),
    or copied every :data:`SHARED_GAUGE_PERIOD_S` into the gauge that worker processes write to shared files
    (a write there costs microseconds, too much for every request)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._shared = bool(metrics.multiprocess_dir)
        self.counts: dict[str, int] = {}
        self._copying: asyncio.TimerHandle | None = None
        self._closed = False

    def gauge(self, model: str) -> Count:
        """What a request calls ``inc()``/``dec()`` on for ``model``."""
        if model not in self.counts:
            self.counts[model] = 0
            child = self._metrics.inflight.labels(model)
            if not self._shared:
                child.set_function(lambda: float(self.counts.get(model, 0)))
            elif self._copying is None:
                self._copy()
        return Count(self.counts, model)

    def forget(self, model: str) -> None:
        """``model`` was evicted: its gauge leaves the metrics (it comes back with the model's next request)."""
        if self.counts.get(model) == 0:
            del self.counts[model]
            if not self._shared:
                self._metrics.inflight.remove(model)

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


class Count:
    __slots__ = ("_counts", "_key")

    def __init__(self, counts: dict[str, int], key: str) -> None:
        self._counts = counts
        self._key = key

    def inc(self) -> None:
        self._counts[self._key] += 1

    def dec(self) -> None:
        self._counts[self._key] -= 1


class Series:
    """The metric series and statistics of one model version and protocol, looked up once instead of per request."""

    __slots__ = ("_labels", "_requests", "_statuses", "_tallies", "inference", "inflight", "latency", "protocol",
                 "queued", "stats")

    def __init__(self, metrics: Metrics, inflight: Inflight, model: str, version: str, protocol: str,
                 stats: ModelStats) -> None:
        self.stats = stats
        self.protocol = protocol
        self.inflight = inflight.gauge(model)
        tallies = metrics.tallies
        self.latency = tallies.histogram(metrics.latency.labels(model, protocol))
        self.inference = tallies.histogram(metrics.inference.labels(model, version))
        self.queued = tallies.histogram(metrics.queued.labels(model, version))
        self._tallies = tallies
        self._requests = metrics.requests
        self._labels = (model, version, protocol)
        self._statuses: dict[str, Any] = {}

    def count(self, status: str) -> None:
        child = self._statuses.get(status)
        if child is None:
            child = self._statuses[status] = self._tallies.counter(self._requests.labels(*self._labels, status))
        child.inc()
