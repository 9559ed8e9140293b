"""Drift alerts: a JSON POST per change of a version's status, from a thread of its own, retried with back-off.

Alerts wait in a bounded queue (a full queue drops the new alert and logs it); each is tried up to
``attempts`` times, the waits between tries doubling from ``start_s`` up to ``max_s``. Any 2xx answer is a
delivery. Nothing here blocks the computation of drift, let alone a request.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from mlport.core.backoff import Backoff

__all__ = ["Webhook"]

log = logging.getLogger(__name__)

MAX_PENDING = 256


class Webhook:
    def __init__(self, *, attempts: int = 6, start_s: float = 0.5, max_s: float = 30.0, timeout_s: float = 5.0,
                 on_result: Callable[[str, bool], None] | None = None) -> None:
        """``on_result(model, delivered)``: told of the end of each alert's delivery."""
        self.attempts = attempts
        self.start_s = start_s
        self.max_s = max_s
        self.timeout_s = timeout_s
        self._on_result = on_result
        self._queue: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue(MAX_PENDING)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, url: str, model: str, payload: dict[str, Any]) -> None:
        """Queue one alert (never blocks)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlport-drift-webhook", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((url, model, payload))
        except queue.Full:
            log.warning("drift alert of model %s dropped: %d alerts wait already", model, MAX_PENDING)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(("", "", {}))  # wakes the thread
            self._thread.join(timeout=self.timeout_s + 1.0)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                url, model, payload = self._queue.get()
                if self._stop.is_set():
                    return
                delivered = self._deliver(client, url, payload)
                if self._on_result is not None:
                    self._on_result(model, delivered)

    def _deliver(self, client: httpx.Client, url: str, payload: dict[str, Any]) -> bool:
        backoff = Backoff(self.start_s, self.max_s)
        body = orjson.dumps(payload)
        for attempt in range(1, self.attempts + 1):
            try:
                answer = client.post(url, content=body, headers={"content-type": "application/json"})
                if 200 <= answer.status_code < 300:
                    return True
                why = f"answered {answer.status_code}"
            except httpx.HTTPError as exc:
                why = str(exc) or type(exc).__name__
            if attempt == self.attempts:
                log.warning("drift alert to %s failed after %d attempts: %s", url, attempt, why)
                return False
            now = time.monotonic()
            if self._stop.wait(backoff.failed(now) - now):
                return False
        return False
