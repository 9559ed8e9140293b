"""The drift watch of one server: the hook on the inference path, and the thread that computes drift.

:meth:`DriftWatch.observe` is called once per answered prediction with the model's inputs and outputs. It
costs a dictionary look-up for a model without a profile; for a watched one it puts the arrays (references,
not copies) on a bounded queue, and drops them (counted in ``mlport_drift_dropped``) when the queue is full.
It never raises. With ``outliers: true`` it also adds the rows' outlier scores to the answer's parameters
(computed inline: one small matrix product). The drift thread copies the watched columns into each version's
window and computes the figures every ``interval_s`` while the window changes; a change of a version's status
sends one alert to the webhook.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlport.errors import MlportError
from mlport.observability.drift.monitor import STATUS_CODES, DriftSettings, VersionMonitor
from mlport.observability.drift.outliers import OutlierScorer
from mlport.observability.drift.profile import Profile, find_profile, read_profile
from mlport.observability.drift.webhook import Webhook
from mlport.observability.metrics import Metrics

__all__ = ["QUEUE_SIZE", "DriftWatch"]

log = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]

#: Batches of rows waiting for the drift thread, at most (over every model).
QUEUE_SIZE = 1024
#: How often the drift thread looks for versions whose figures are due, seconds.
TICK_S = 0.05


class _Source(Protocol):
    @property
    def path(self) -> Path: ...


class _Config(Protocol):
    @property
    def drift(self) -> DriftSettings: ...
    @property
    def outliers(self) -> bool: ...


class ServedVersion(Protocol):
    """What the hook needs of a loaded model version (:class:`mlport.runtime.states.LoadedVersion`)."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def source(self) -> _Source: ...
    @property
    def config(self) -> _Config: ...


@dataclass(slots=True)
class _Watch:
    monitor: VersionMonitor | None
    scorer: OutlierScorer | None
    scored: Any = None
    outliers: Any = None
    dropped: Any = None


#: A loaded version the watch has not seen yet.
_UNSEEN = _Watch(None, None)


class DriftWatch:
    def __init__(self, metrics: Metrics, queue_size: int = QUEUE_SIZE) -> None:
        self.metrics = metrics
        self._watches: weakref.WeakKeyDictionary[Any, _Watch | None] = weakref.WeakKeyDictionary()
        #: The version of the last request and its watch (most requests are for the same version as the last).
        self._last: tuple[weakref.ref[Any], _Watch | None] | None = None
        self._monitors: dict[tuple[str, int], VersionMonitor] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[VersionMonitor, float, Mapping[str, Array], Mapping[str, Array]] | None] = \
            queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failed_once = False
        self.webhook = Webhook(on_result=self._delivered)

    # ------------------------------------------------------------------ the request path
    def observe(self, lv: ServedVersion, inputs: Mapping[str, Array], outputs: Mapping[str, Array],
                parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Take one prediction's rows; the answer's parameters (``parameters``, with outlier scores when asked)."""
        params: dict[str, Any] = {} if parameters is None else parameters
        try:
            last = self._last
            if last is not None and last[0]() is lv:  # the same version as the last request's: no lookup
                watch = last[1]
            else:
                watch = self._watches.get(lv, _UNSEEN)
                if watch is _UNSEEN:
                    watch = self._watch(lv)
                self._last = (weakref.ref(lv), watch)
            if watch is None:
                return params
            if watch.scorer is not None:
                self._score(watch, inputs, params)
            if watch.monitor is not None:
                try:
                    self._queue.put_nowait((watch.monitor, time.monotonic(), inputs, outputs))
                except queue.Full:
                    watch.dropped.inc()
        except Exception:  # never fail a request for its monitoring
            if not self._failed_once:
                self._failed_once = True
                log.exception("drift watch of model %s failed on a request (logged once)", lv.model)
        return params

    @staticmethod
    def _score(watch: _Watch, inputs: Mapping[str, Array], params: dict[str, Any]) -> None:
        assert watch.scorer is not None
        scores = watch.scorer.scores(inputs)
        if scores is None:
            return
        missing = np.isnan(scores)
        listed: list[float | None] = scores.tolist()
        if missing.any():
            listed = [None if m else v for m, v in zip(missing.tolist(), listed, strict=True)]
        params["outlier_scores"] = listed
        params["outlier_threshold"] = watch.scorer.threshold
        watch.scored.inc(len(scores))
        over = int(np.count_nonzero(scores[~missing] > watch.scorer.threshold))
        if over:
            watch.outliers.inc(over)

    def _watch(self, lv: ServedVersion) -> _Watch | None:
        """Read the version's profile (once per loaded version) and set up what its config asks for."""
        cfg = lv.config
        watch: _Watch | None = None
        if cfg.drift.enabled or cfg.outliers:
            watch = self._setup(lv)
        self._watches[lv] = watch
        return watch

    def _setup(self, lv: ServedVersion) -> _Watch | None:
        path = find_profile(Path(lv.source.path))
        if path is None:
            return None
        try:
            profile = read_profile(path)
        except MlportError as exc:
            log.warning("model %s version %d: no drift or outlier watch: %s", lv.model, lv.version, exc)
            return None
        cfg = lv.config
        scorer = None
        if cfg.outliers and profile.outliers is not None:
            try:
                scorer = OutlierScorer(profile, cfg.drift.outlier_threshold)
            except ValueError as exc:
                log.warning("model %s version %d: no outlier scores: %s", lv.model, lv.version, exc)
        monitor = self._monitor(lv.model, lv.version, profile, cfg.drift) if cfg.drift.enabled else None
        version = str(lv.version)
        m = self.metrics
        return _Watch(monitor, scorer, m.outlier_rows.labels(lv.model, version), m.outliers.labels(lv.model, version),
                      m.drift_dropped.labels(lv.model))

    def _monitor(self, model: str, version: int, profile: Profile, settings: DriftSettings) -> VersionMonitor:
        """The version's monitor: the one it had (its window kept) when a reload kept profile and settings."""
        with self._lock:
            old = self._monitors.get((model, version))
            if old is not None and old.profile == profile and old.settings == settings:
                return old
            monitor = self._monitors[(model, version)] = VersionMonitor(model, version, profile, settings)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mlport-drift", daemon=True)
                self._thread.start()
        return monitor

    # ------------------------------------------------------------------ queries
    def results(self, model: str) -> list[dict[str, Any]] | None:
        """The latest figures of each watched version of ``model`` (``None``: no version is watched)."""
        with self._lock:
            found = [m for (name, _), m in sorted(self._monitors.items()) if name == model]
        return [m.result for m in found] if found else None

    # ------------------------------------------------------------------ the drift thread
    def _run(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                item = None
            if item is not None:
                monitor, at, inputs, outputs = item
                try:
                    monitor.add(at, inputs, outputs)
                except Exception:
                    log.exception("model %s: rows not added to the drift window", monitor.model)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + TICK_S
                with self._lock:
                    monitors = list(self._monitors.values())
                for m in monitors:
                    if m.due(now):
                        self._compute(m, now)

    def _compute(self, m: VersionMonitor, now: float) -> None:
        try:
            result = m.compute(now)
        except Exception as exc:
            log.exception("model %s version %d: drift not computed", m.model, m.version)
            m.result = {**m.result, "status": "error", "error": str(exc)}
            return
        version = str(m.version)
        for feature in result["features"]:
            for method, entry in feature["methods"].items():
                self.metrics.drift.labels(m.model, version, feature["name"], method).set(entry["value"])
                if "pvalue" in entry:
                    self.metrics.drift.labels(m.model, version, feature["name"], f"{method}_pvalue").set(
                        entry["pvalue"])
        status = result["status"]
        self.metrics.drift_status.labels(m.model, version).set(STATUS_CODES.get(status, -1))
        if status in ("ok", "warning", "drift") and status != m.announced:
            previous, m.announced = m.announced, status
            log.info("model %s version %d: drift status %s (was %s)", m.model, m.version, status, previous)
            if m.settings.webhook:
                self.webhook.send(m.settings.webhook, m.model, _alert(result, previous))

    def _delivered(self, model: str, ok: bool) -> None:
        self.metrics.drift_alerts.labels(model, "delivered" if ok else "failed").inc()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.webhook.close()


def _alert(result: dict[str, Any], previous: str) -> dict[str, Any]:
    return {
        "type": "mlport.drift.status", "model": result["model"], "version": result["version"],
        "status": result["status"], "previous": previous, "time": result["computed_at"], "rows": result["rows"],
        "features": {f["name"]: f["status"] for f in result["features"]},
        "drifting": [f["name"] for f in result["features"] if f["status"] == "drift"],
    }
