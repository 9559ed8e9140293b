"""Drift of one model version: its profile, its window, its figures and its status.

:class:`VersionMonitor` is filled from the drift thread (see :mod:`.watch`) and computes the figures of every
feature of the profile over the window (see :mod:`.stats`); the status of a feature is the worst of its figures',
the status of the version the worst of its features'. Fewer rows than ``min_rows``: status ``insufficient``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from mlport.observability.drift import stats
from mlport.observability.drift.features import values
from mlport.observability.drift.profile import Profile
from mlport.observability.drift.window import Window

__all__ = ["DriftSettings", "VersionMonitor"]

Array = np.ndarray[Any, Any]
INSUFFICIENT = "insufficient"
STATUS_CODES = {INSUFFICIENT: -1, "ok": 0, "warning": 1, "drift": 2}


class ThresholdSettings(Protocol):
    @property
    def psi_warning(self) -> float: ...
    @property
    def psi_drift(self) -> float: ...
    @property
    def pvalue_warning(self) -> float: ...
    @property
    def pvalue_drift(self) -> float: ...


class DriftSettings(Protocol):
    """What the model config's ``drift`` section says (:class:`mlport.formats.config.DriftConfig`)."""

    @property
    def enabled(self) -> bool: ...
    @property
    def window_rows(self) -> int: ...
    @property
    def window_seconds(self) -> float | None: ...
    @property
    def min_rows(self) -> int: ...
    @property
    def interval_s(self) -> float: ...
    @property
    def thresholds(self) -> ThresholdSettings: ...
    @property
    def webhook(self) -> str | None: ...
    @property
    def outlier_threshold(self) -> float | None: ...


class VersionMonitor:
    def __init__(self, model: str, version: int, profile: Profile, settings: DriftSettings) -> None:
        self.model = model
        self.version = version
        self.profile = profile
        self.settings = settings
        self.features = list(profile.features)
        #: The tensors the features come from, ``(role, name)``: the window keeps their rows (one copy each).
        self.tensors = list(dict.fromkeys((f.role, f.tensor) for f in self.features))
        self.window = Window(len(self.tensors), settings.window_rows, settings.window_seconds)
        #: The status last announced (alerts go out when a computed status differs from it).
        self.announced = "ok"
        self.computed_added = -1
        self.computed_at = 0.0
        self.result: dict[str, Any] = self._answer(INSUFFICIENT, [], time.time())

    def add(self, at: float, inputs: Mapping[str, Array], outputs: Mapping[str, Array]) -> None:
        arrays = {"input": inputs, "output": outputs}
        columns = []
        for role, name in self.tensors:
            found = arrays[role].get(name)
            if found is None:
                return  # a request of another signature: not comparable with the profile
            columns.append(np.asarray(found))
        if len({len(c) if c.ndim else -1 for c in columns}) != 1:
            return  # a scalar, or tensors of different row counts: not rows
        self.window.add(at, columns)

    def due(self, now: float) -> bool:
        """Whether the figures should be computed again: the window changed and ``interval_s`` passed."""
        if now - self.computed_at < self.settings.interval_s:
            return False
        return self.window.expire(now) or self.window.added != self.computed_added

    def compute(self, now: float) -> dict[str, Any]:
        """The figures and statuses over the current window (also kept as :attr:`result`)."""
        self.computed_at = now
        self.computed_added = self.window.added
        rows = self.window.rows
        if rows < self.settings.min_rows:
            self.result = self._answer(INSUFFICIENT, [], time.time())
            return self.result
        t = self.settings.thresholds
        features = []
        tensors = {key: self.window.column(i) for i, key in enumerate(self.tensors)}
        for feature in self.features:
            window = values({feature.tensor: tensors[(feature.role, feature.tensor)]}, feature.key)
            if window is None:
                continue
            figures = stats.figures(window, feature)
            methods: dict[str, Any] = {}
            for fig in figures:
                status = stats.status_of(fig, t.psi_warning, t.psi_drift, t.pvalue_warning, t.pvalue_drift)
                entry: dict[str, Any] = {"value": fig.value, "status": status}
                if fig.pvalue is not None:
                    entry["pvalue"] = fig.pvalue
                methods[fig.method] = entry
            features.append({
                "name": feature.name, "role": feature.role, "kind": feature.kind,
                "status": stats.worst([str(m["status"]) for m in methods.values()]),
                "missing_rate": _missing_rate(window, feature.kind), "reference_missing_rate": feature.missing_rate,
                "methods": methods,
            })
        self.result = self._answer(stats.worst([str(f["status"]) for f in features]), features, time.time())
        return self.result

    def _answer(self, status: str, features: list[dict[str, Any]], at: float) -> dict[str, Any]:
        s = self.settings
        return {
            "model": self.model, "version": self.version, "status": status, "rows": self.window.rows,
            "rows_seen": self.window.added,
            "window": {"rows": s.window_rows, "seconds": s.window_seconds, "min_rows": s.min_rows},
            "computed_at": at, "reference_rows": self.profile.rows, "features": features,
        }


def _missing_rate(window: Array, kind: str) -> float:
    if len(window) == 0:
        return 0.0
    if window.dtype.kind == "f":
        return float(np.isnan(window).mean())
    if window.dtype.kind == "O":
        return float(np.mean([v is None or v in ("", b"") for v in window]))
    return 0.0
