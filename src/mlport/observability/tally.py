"""Per-request metric updates kept as plain numbers, then added to the metrics once per turn of the event loop.

A request updates a counter (its outcome) and two histograms (its latency, its prediction's time).  Through
prometheus_client each update checks the metric, walks the histogram's bucket bounds in Python and updates
values that take a lock (and, with worker processes, write shared files): several microseconds per request,
more than a small model's prediction.  A :class:`CounterTally` or :class:`HistogramTally` adds to plain numbers
instead (a histogram finds its bucket by bisection), and the first update of a tally in a turn of the event loop
asks :class:`Tallies` to add what they hold to the metric at the end of that turn: once for every request served
in the turn.  No reader sees a lag: the metrics' collection (a scrape, ``registry.get_sample_value``) adds what
is held first (:meth:`Tallies.collect`), and with worker processes each worker's values are in the shared files
before its event loop takes up anything else.  Outside an event loop an update goes to the metric at once.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["CounterTally", "HistogramTally", "Tallies"]


class _Tally(Protocol):
    def flush(self) -> None: ...


class Tallies:
    """The tallies of one set of metrics that hold updates, added to the metrics at the end of the event loop's
    turn; registered in the metrics' registry before any metric, so that a collection adds them first."""

    def __init__(self) -> None:
        self._held: list[_Tally] = []
        self._scheduled = False
        self._lock = threading.Lock()

    def counter(self, child: Any) -> CounterTally:
        """A tally of ``child``, a labelled prometheus_client counter."""
        return CounterTally(self, child)

    def histogram(self, child: Any) -> HistogramTally:
        """A tally of ``child``, a labelled prometheus_client histogram."""
        return HistogramTally(self, child)

    def hold(self, tally: _Tally) -> None:
        """``tally`` holds updates now: added to its metric at the end of this turn of the event loop (at once
        outside one)."""
        self._held.append(tally)
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Add every held update to its metric."""
        with self._lock:
            self._scheduled = False
            held, self._held = self._held, []
            for tally in held:
                tally.flush()

    # -- a collector of the registry: no metric of its own; adds the held updates before the metrics are read --
    def collect(self) -> Iterator[Any]:
        self.flush()
        return iter(())


class CounterTally:
    """A counter's increments, held (see the module's description)."""

    __slots__ = ("_child", "_pending", "_tallies")

    def __init__(self, tallies: Tallies, child: Any) -> None:
        self._tallies = tallies
        self._child = child
        self._pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        pending = self._pending
        self._pending = pending + amount
        if not pending:
            self._tallies.hold(self)

    def flush(self) -> None:
        pending, self._pending = self._pending, 0.0
        if pending:
            self._child.inc(pending)


class HistogramTally:
    """A histogram's observations as counts per bucket and a sum, held (see the module's description)."""

    __slots__ = ("_bounds", "_child", "_counts", "_held", "_sum", "_tallies")

    def __init__(self, tallies: Tallies, child: Any) -> None:
        self._tallies = tallies
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)  # the last is +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._held = False

    def observe(self, amount: float) -> None:
        """As prometheus_client's: counted in the first bucket whose bound is at least ``amount``."""
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount
        if not self._held:
            self._held = True
            self._tallies.hold(self)

    def flush(self) -> None:
        self._held = False
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        child = self._child
        child._sum.inc(total)
        for bucket, count in zip(child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
