"""The server's metrics: the series of an evicted model leave the registry, what tells its life stays."""

from __future__ import annotations

from pathlib import Path

from mlport.observability.cache import CacheMetrics
from mlport.observability.metrics import Metrics


def _serve(metrics: Metrics, model: str) -> None:
    """The series one request (and its load) touches."""
    metrics.on_load(model, 1, 0.01, True)
    metrics.requests.labels(model, "1", "v2", "ok").inc()
    metrics.requests.labels(model, "1", "v2", "INVALID_ARGUMENT").inc()
    metrics.latency.labels(model, "v2").observe(0.001)
    metrics.latency.labels(model, "grpc").observe(0.001)
    metrics.inference.labels(model, "1").observe(0.001)
    metrics.queued.labels(model, "1").observe(0.0)
    metrics.on_queue_depth(model, "1", 0)
    metrics.refused.labels(model, "1", "queue_full").inc()
    metrics.refusal_time.labels(model, "1").observe(0.0002)
    metrics.routes.labels(model, "0").inc()


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_eviction_removes_the_models_request_series_and_keeps_its_life() -> None:
    metrics = Metrics()
    cache = CacheMetrics(metrics.registry, on_evicted=metrics.on_model_unloaded)
    forgotten: list[str] = []
    metrics.on_forget(forgotten.append)
    for model in ("a", "b"):
        _serve(metrics, model)
        cache.loaded(model)
    cache.evicted("a", (1,))
    assert forgotten == ["a"]
    for name, labels in [
        ("mlport_requests_total", {"version": "1", "protocol": "v2", "status": "ok"}),
        ("mlport_request_duration_seconds_count", {"protocol": "grpc"}),
        ("mlport_inference_duration_seconds_count", {"version": "1"}),
        ("mlport_queue_duration_seconds_count", {"version": "1"}),
        ("mlport_queue_depth", {"version": "1"}),
        ("mlport_refused_requests_total", {"version": "1", "reason": "queue_full"}),
        ("mlport_refusal_duration_seconds_count", {"version": "1"}),
        ("mlport_routes_total", {"route": "0"}),
        ("mlport_model_load_seconds", {"version": "1"}),
    ]:
        assert _sample(metrics, name, model="a", **labels) is None, name
        assert _sample(metrics, name, model="b", **labels) is not None, name
    assert b'model="a",protocol' not in metrics.exposition()
    # what tells the model's life stays
    assert _sample(metrics, "mlport_model_loaded", model="a", version="1") == 0
    assert _sample(metrics, "mlport_model_loaded", model="b", version="1") == 1
    assert _sample(metrics, "mlport_model_evictions_total", model="a") == 1
    assert _sample(metrics, "mlport_model_loads_total", model="a") == 1
    # served again: its series start again from zero (a counter reset)
    _serve(metrics, "a")
    assert _sample(metrics, "mlport_requests_total", model="a", version="1", protocol="v2", status="ok") == 1


def test_eviction_removes_only_the_evicted_versions() -> None:
    metrics = Metrics()
    for version in ("1", "2"):
        metrics.inference.labels("a", version).observe(0.001)
    metrics.on_model_unloaded("a", (1,))
    assert _sample(metrics, "mlport_inference_duration_seconds_count", model="a", version="1") is None
    assert _sample(metrics, "mlport_inference_duration_seconds_count", model="a", version="2") == 1


def test_worker_processes_keep_the_series(tmp_path: Path) -> None:
    """With worker processes the values live in files prometheus_client cannot remove series from."""
    metrics = Metrics(multiprocess_dir=str(tmp_path))
    forgotten: list[str] = []
    metrics.on_forget(forgotten.append)
    _serve(metrics, "a")
    metrics.on_model_unloaded("a", (1,))
    assert forgotten == []
    assert _sample(metrics, "mlport_requests_total", model="a", version="1", protocol="v2", status="ok") == 1
    assert _sample(metrics, "mlport_model_loaded", model="a", version="1") == 0
