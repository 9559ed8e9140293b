"""Assembles the state of one server process from settings: formats, repository, manager, service."""

from __future__ import annotations

from mlport.errors import ErrorCode, InvalidInput
from mlport.explain import ExplainLimits
from mlport.formats.registry import FormatRegistry, default_registry
from mlport.observability.access import AccessLog
from mlport.observability.cache import CacheMetrics
from mlport.observability.metrics import Metrics
from mlport.observability.requestlog import RequestLog
from mlport.protocols.http.state import AppState
from mlport.protocols.service import InferenceService
from mlport.runtime.admission import AdmissionPolicy
from mlport.runtime.manager import ModelManager, ReadinessGroup
from mlport.runtime.repository import Repository
from mlport.settings import Settings

__all__ = ["build_state"]


def build_state(
    settings: Settings, formats: FormatRegistry | None = None, group: ReadinessGroup | None = None,
    metrics_dir: str | None = None,
) -> AppState:
    """Everything one server process runs; ``group``: the worker processes it shares its ports with, and
    ``metrics_dir`` the folder where they share their metrics."""
    if settings.model_path is None:
        raise InvalidInput("no model path given")
    formats = formats or default_registry()
    limits = settings.limits()
    metrics = Metrics(multiprocess_dir=metrics_dir)
    repository = Repository(
        settings.model_path, formats, name=settings.name, trusted=settings.trusted, max_models=limits.max_models
    )
    strict = settings.strict_readiness
    if strict is None:
        # as Triton does, ready means "every model serves" for one model; a repository stays ready while a
        # broken model fails its own readiness call
        strict = repository.single or repository.model_folder
    threads, intra_op_threads = settings.threads()
    budget = settings.memory_budget
    manager = ModelManager(
        repository, formats, limits, load_workers=settings.load_workers,
        intra_op_threads=intra_op_threads, on_load=metrics.on_load, group=group,
        lazy=settings.lazy, max_concurrent_loads=settings.max_concurrent_loads, load_wait_s=settings.load_wait_s,
        # each worker process holds its own models: it gets its share of the budget
        memory_budget=None if budget is None else int(budget) // settings.workers,
        observer=CacheMetrics(metrics.registry, on_evicted=metrics.on_model_unloaded),
        admission=AdmissionPolicy(
            settings.max_concurrency, settings.max_queue, settings.queue_timeout_s,
            ErrorCode.RESOURCE_EXHAUSTED if settings.overload_status == 429 else ErrorCode.UNAVAILABLE,
            threads=threads, on_depth=metrics.on_queue_depth,
        ),
    )
    access_log = AccessLog() if settings.access_log_format == "json" else None
    request_log = RequestLog(settings.request_log_config(), metrics.registry)
    service = InferenceService(manager, metrics, limits, inference_threads=threads, access_log=access_log,
                               request_log=request_log, explain_limits=ExplainLimits(**settings.explain_limits()))
    return AppState(service, manager, metrics, limits, poll_interval_s=settings.poll_interval_s,
                    strict_readiness=strict)
