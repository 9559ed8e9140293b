"""Prometheus metrics of one server, kept in their own registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mlport.observability.tally import Tallies

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "disable_created_series"]


def disable_created_series() -> None:
    """No ``*_created`` series (the time each counter and histogram was made): Prometheus does not need them,
    and they double the series of every counter. (A setting of prometheus_client for the whole process.)"""
    disable_created_metrics()  # type: ignore[no-untyped-call]


_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's metrics.  ``multiprocess_dir``: the folder where the worker processes of one server
    (``--workers``) keep their values (prometheus_client's multiprocess mode); the exposition then sums
    counters and histograms over every worker, and shows gauges once per worker (label ``pid``)."""

    def __init__(self, registry: CollectorRegistry | None = None, multiprocess_dir: str | None = None) -> None:
        disable_created_series()
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        r = self.registry
        #: Per-request updates held to the end of the event loop's turn; a collection adds them first.
        self.tallies = Tallies()
        r.register(self.tallies)  # type: ignore[arg-type]  # a collector without metrics of its own
        # Requests for unknown models are counted with empty model/version labels, so that clients
        # cannot create new series by sending random names.
        self.requests = Counter(
            "mlport_requests", "Inference requests by outcome", ["model", "version", "protocol", "status"], registry=r
        )
        self.latency = Histogram(
            "mlport_request_duration_seconds", "Time from taking hold of the model to the encoded answer",
            ["model", "protocol"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.inference = Histogram(
            "mlport_inference_duration_seconds", "Time spent in the model's predict",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.routes = Counter(
            "mlport_routes_total", "Requests a router sent to each of its routes", ["model", "route"], registry=r
        )
        self.inflight = Gauge("mlport_inflight_requests", "Requests being served now", ["model"], registry=r)
        self.load_seconds = Gauge(
            "mlport_model_load_seconds", "How long the last load of a version took", ["model", "version"], registry=r
        )
        self.model_loaded = Gauge(
            "mlport_model_loaded", "1 when the version loaded and serves, 0 when its last load failed",
            ["model", "version"], registry=r,
        )
        self.load_failures = Counter(
            "mlport_model_load_failures", "Model versions that failed to load", ["model"], registry=r
        )
        self._admission_metrics(r)
        self._watch_metrics(r)
        #: Told the name of each model whose series :meth:`on_model_unloaded` removed (to drop what they looked up).
        self._forget_hooks: list[Callable[[str], None]] = []

    def _admission_metrics(self, r: CollectorRegistry) -> None:
        """Admission (max_concurrency, max_queue, queue_timeout_s, deadlines): see mlport.runtime.admission."""
        self.queue_depth = Gauge(
            "mlport_queue_depth", "Requests waiting in a model version's queue now", ["model", "version"],
            registry=r,
        )
        self.refused = Counter(
            "mlport_refused_requests", "Requests refused unrun because the model was overloaded (reason: "
            "queue_full, queue_timeout)", ["model", "version", "reason"], registry=r,
        )
        self.expired = Counter(
            "mlport_expired_requests", "Requests whose deadline passed before they ran (never handed to the model)",
            ["model", "version"], registry=r,
        )
        self.cancelled = Counter(
            "mlport_cancelled_requests", "Requests whose client went away before the answer (unrun when queued)",
            ["model", "version"], registry=r,
        )
        self.queued = Histogram(
            "mlport_queue_duration_seconds", "Time a request of a model with admission limits waited for its turn",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.refusal_time = Histogram(
            "mlport_refusal_duration_seconds", "Time from a request taking hold of its model to its refusal because "
            "the queue was full", ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )

    def _watch_metrics(self, r: CollectorRegistry) -> None:
        """Drift and outliers: see mlport.observability.drift."""
        self.drift = Gauge(
            "mlport_drift", "Drift of a feature over its window: psi, ks (statistic), ks_pvalue, chi2 (statistic), "
            "chi2_pvalue", ["model", "version", "feature", "method"], registry=r,
        )
        self.drift_status = Gauge("mlport_drift_status", "Drift status of a version: 0 ok, 1 warning, 2 drift, "
                                  "-1 too few rows yet", ["model", "version"], registry=r)
        self.drift_dropped = Counter("mlport_drift_dropped", "Batches of rows left out of a drift window because "
                                     "its queue was full", ["model"], registry=r)
        self.drift_alerts = Counter("mlport_drift_alerts", "Drift alerts sent to the webhook, by outcome "
                                    "(delivered, failed)", ["model", "outcome"], registry=r)
        self.outlier_rows = Counter("mlport_outlier_rows", "Rows given an outlier score", ["model", "version"],
                                    registry=r)
        self.outliers = Counter("mlport_outliers", "Rows whose outlier score was above the threshold",
                                ["model", "version"], registry=r)

    def on_load(self, model: str, version: int, seconds: float, ok: bool) -> None:
        self.load_seconds.labels(model, str(version)).set(seconds)
        self.model_loaded.labels(model, str(version)).set(1 if ok else 0)
        if not ok:
            self.load_failures.labels(model).inc()

    def on_queue_depth(self, model: str, version: str, depth: int) -> None:
        self.queue_depth.labels(model, version).set(depth)

    def on_unload(self, model: str, version: int) -> None:
        self.model_loaded.labels(model, str(version)).set(0)

    def on_forget(self, hook: Callable[[str], None]) -> None:
        """``hook(model)`` is called after :meth:`on_model_unloaded` removed the series of ``model``."""
        self._forget_hooks.append(hook)

    def on_model_unloaded(self, model: str, versions: tuple[int, ...]) -> None:
        """A model was unloaded (all its loaded ``versions``), to make room under the memory budget or by the
        repository API: its request
        series (counters, latency histograms, queue and in-flight gauges) leave the registry, so that their memory
        follows the loaded models, not every model ever served.  They start again from zero when the model serves
        again (a counter reset, which ``rate()`` and ``increase()`` take in their stride).  What tells the model's
        life stays: ``mlport_model_loaded`` (0 now), load failures, loads, evictions.

        With worker processes (``multiprocess_dir``) the values live in files that prometheus_client cannot
        remove series from: the series stay (only ``mlport_model_loaded`` changes)."""
        for version in versions:
            self.on_unload(model, version)
        if self.multiprocess_dir:
            return
        per_version = (self.requests, self.inference, self.load_seconds, self.queued, self.queue_depth,
                       self.refused, self.expired, self.cancelled, self.refusal_time)
        for version in versions:
            for metric in per_version:
                metric.remove_by_labels({"model": model, "version": str(version)})
        for metric in (self.latency, self.routes):  # (the in-flight gauge: its owner removes it, see on_forget)
            metric.remove_by_labels({"model": model})
        for hook in self._forget_hooks:
            hook(model)

    def exposition(self) -> bytes:
        if self.multiprocess_dir:
            self.tallies.flush()  # this worker's held updates into its files before they are read
            from prometheus_client import multiprocess

            shared = CollectorRegistry()
            multiprocess.MultiProcessCollector(shared, self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(shared)
        return generate_latest(self.registry)
