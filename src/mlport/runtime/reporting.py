"""A model's state as the model manager reports it: one row per version, and why a version does not serve."""

from __future__ import annotations

from mlport.runtime.budget import cold_reason
from mlport.runtime.states import ModelEntry, ModelStatus, VersionState, VersionStatus

__all__ = ["model_status", "reason"]


def reason(model: ModelEntry, version: int | None = None) -> str:
    """Why the model (or one version of it) does not serve now."""
    if model.unloaded:
        return "unloaded"
    if model.cold and not model.serving:
        return cold_reason(model)
    if model.source.error:
        return model.source.error
    versions = [version] if version is not None else model.wanted() or list(model.source.errors)
    for v in versions:
        if v in model.loading:
            return f"version {v} is loading"
        if v in model.failed:
            return model.failed[v][1]
        if v in model.source.errors:
            return model.source.errors[v]
    return "no version is loaded"


def model_status(model: ModelEntry) -> ModelStatus:
    """Every version of the model with its state (newest first)."""
    rows: dict[int, VersionStatus] = {}
    for v, err in model.source.errors.items():
        rows[v] = VersionStatus(v, VersionState.UNAVAILABLE, err)
    for v in model.wanted():
        rows[v] = VersionStatus(v, VersionState.UNAVAILABLE, reason(model, v))
    for v in model.loading:
        rows[v] = VersionStatus(v, VersionState.LOADING, "")
    for v, (_, err) in model.failed.items():
        if v not in model.serving:
            rows[v] = VersionStatus(v, VersionState.UNAVAILABLE, err)
    for v, lv in model.serving.items():
        rows[v] = VersionStatus(v, VersionState.READY, "", lv.memory_bytes)
    if model.cold and not model.serving:
        state = VersionState.EVICTED if model.evicted else VersionState.NOT_LOADED
        why = cold_reason(model)
        for v in model.wanted():
            if v not in model.loading:
                rows[v] = VersionStatus(v, state, why)
    if model.unloaded:
        rows = {v: VersionStatus(v, VersionState.UNAVAILABLE, "unloaded") for v in rows or [0]}
    if model.source.error and not rows:
        rows = {0: VersionStatus(0, VersionState.UNAVAILABLE, model.source.error)}
    return ModelStatus(model.name, tuple(rows[v] for v in sorted(rows, reverse=True)))
