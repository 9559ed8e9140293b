"""A sliding window of rows: the last ``max_rows`` rows, and (when ``max_seconds`` is set) only those that
arrived in the last ``max_seconds``. Rows come in batches (one request's) of several arrays (the watched
tensors, rows on axis 0); memory stays bounded by ``max_rows`` rows of them."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

__all__ = ["Window"]

Array = np.ndarray[Any, Any]


class Window:
    def __init__(self, arrays: int, max_rows: int, max_seconds: float | None = None) -> None:
        self.arrays = arrays
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._chunks: deque[tuple[float, list[Array]]] = deque()
        self.rows = 0
        #: Rows seen since the window was created (also a change counter).
        self.added = 0

    def add(self, at: float, columns: list[Array]) -> None:
        """One batch of rows, seen at ``at`` (seconds, monotonic): one array per watched tensor (copied)."""
        n = len(columns[0]) if columns else 0
        if n == 0:
            return
        self.added += n
        if n > self.max_rows:
            columns = [c[-self.max_rows:] for c in columns]
            n = self.max_rows
        self._chunks.append((at, [np.array(c, copy=True) for c in columns]))
        self.rows += n
        self._trim_rows()

    def expire(self, now: float) -> bool:
        """Drop the batches older than ``max_seconds``; whether any was dropped."""
        if self.max_seconds is None:
            return False
        dropped = False
        while self._chunks and self._chunks[0][0] < now - self.max_seconds:
            _, cols = self._chunks.popleft()
            self.rows -= len(cols[0])
            dropped = True
        return dropped

    def _trim_rows(self) -> None:
        while self.rows > self.max_rows:
            at, cols = self._chunks[0]
            extra = self.rows - self.max_rows
            if len(cols[0]) <= extra:
                self._chunks.popleft()
                self.rows -= len(cols[0])
            else:
                self._chunks[0] = (at, [c[extra:] for c in cols])
                self.rows -= extra

    def column(self, index: int) -> Array:
        """The rows of array ``index`` in the window, oldest first."""
        parts = [cols[index] for _, cols in self._chunks]
        if not parts:
            return np.zeros(0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
