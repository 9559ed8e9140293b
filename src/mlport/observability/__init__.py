"""Metrics (an own Prometheus registry, injected where needed)."""

from mlport.observability.metrics import Metrics

__all__ = ["Metrics"]
