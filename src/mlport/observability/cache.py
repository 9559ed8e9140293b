"""Metrics of loads on demand and of the memory budget (see :class:`mlport.runtime.manager.CacheObserver`)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CacheMetrics"]

_COLD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class CacheMetrics:
    """Loaded models and their memory, loads, evictions, hits and misses, and how long cold loads take."""

    def __init__(self, registry: CollectorRegistry,
                 on_evicted: Callable[[str, tuple[int, ...]], None] | None = None) -> None:
        """``on_evicted(model, versions)``: told of each eviction (the versions it unloaded)."""
        self._on_evicted = on_evicted
        r = registry
        self.loaded_models = Gauge("mlport_loaded_models", "Models loaded now", registry=r,
                                   multiprocess_mode="livesum")
        self.loaded_bytes = Gauge(
            "mlport_loaded_model_bytes", "Memory the loaded models hold (measured at their loads), bytes",
            registry=r, multiprocess_mode="livesum",
        )
        self.loads = Counter("mlport_model_loads", "Models loaded (at start, on demand or again)", ["model"],
                             registry=r)
        self.evictions = Counter("mlport_model_evictions", "Models unloaded to make room under the memory budget",
                                 ["model"], registry=r)
        self.hits = Counter("mlport_cache_hits", "Requests that found their model loaded", registry=r)
        self.misses = Counter("mlport_cache_misses", "Requests that found their model not loaded and waited for "
                              "its load", registry=r)
        self.cold_load = Histogram(
            "mlport_cold_load_seconds", "Time from a request for a model not loaded to the model serving",
            buckets=_COLD_BUCKETS, registry=r,
        )

    def hit(self) -> None:
        self.hits.inc()

    def miss(self, model: str) -> None:
        self.misses.inc()

    def loaded(self, model: str) -> None:
        self.loads.labels(model).inc()

    def cold_loaded(self, model: str, seconds: float) -> None:
        self.cold_load.observe(seconds)

    def evicted(self, model: str, versions: tuple[int, ...]) -> None:
        self.evictions.labels(model).inc()
        if self._on_evicted is not None:
            self._on_evicted(model, versions)

    def usage(self, models: int, memory_bytes: int) -> None:
        self.loaded_models.set(models)
        self.loaded_bytes.set(memory_bytes)
