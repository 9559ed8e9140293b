"""How fast a full queue drains, and the ``Retry-After`` its refused clients are told from it.

A refused client is told to wait about as long as the queue takes to drain at the pace requests have been
leaving it (:class:`Pace`), spread at random (:func:`spread_retry_after`) so that clients refused together do
not all come back together and meet a full queue again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

__all__ = ["MAX_RETRY_AFTER_S", "RETRY_AFTER_S", "RETRY_SPREAD", "Pace", "spread_retry_after"]

#: Seconds a refused client is told to wait before it tries again (``Retry-After``), at least and at most.  The
#: hint starts from the time the queue takes to drain at the pace requests have been leaving it, and is spread
#: (:func:`spread_retry_after`) so that clients refused together do not all come back together.
RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 60.0
#: The hint is drawn from the whole seconds between the drain time and this many times it.
RETRY_SPREAD = 2.0
#: Weight of the newest gap between two requests ending in its moving average.
_PACE_ALPHA = 0.05
#: Requests that leave a queue before its pace becomes a moving average (until then: their mean gap).
_PACE_WARMUP = 16


def spread_retry_after(drain_s: float, draw: Callable[[int, int], int] = random.randint) -> int:
    """Whole seconds a refused client is told to wait: drawn at random (``draw(low, high)``, both included) from
    the drain time of the queue to :data:`RETRY_SPREAD` times it, both rounded up and kept within
    :data:`RETRY_AFTER_S` and :data:`MAX_RETRY_AFTER_S`.  Clients that all read the same hint come back in the
    same instant and meet a full queue again; spread out, they come back about as fast as the queue makes room.
    (A queue that drains within half a second always says 1 s: a whole second is the finest HTTP can say.)"""
    low = math.ceil(min(MAX_RETRY_AFTER_S, max(RETRY_AFTER_S, drain_s)))
    high = math.ceil(min(MAX_RETRY_AFTER_S, max(RETRY_AFTER_S, drain_s * RETRY_SPREAD)))
    return draw(low, high) if high > low else low


class Pace:
    """Seconds between two requests leaving their slots while others wait (how fast a queue drains).

    Once :data:`_PACE_WARMUP` requests have left, a moving average of the gaps; before that, the mean gap since
    the queue formed, and while fewer requests than run at once have left, the time since then shared among
    the slots (no request that was running has taken less).  A moving average started from zero would say
    "no time at all" through the first seconds of an overload: every client refused then would be told to
    come back in a second, and all of them would come back together.  Gaps while nobody waits are not the
    model's pace: a queue that empties ends the measurement, and the next one starts when a request waits.
    """

    __slots__ = ("average", "formed", "last", "leaves")

    def __init__(self) -> None:
        self.average = 0.0
        self.formed = 0.0
        self.last = 0.0
        self.leaves = 0

    def waits(self, now: float) -> None:
        """A request joined the queue."""
        if not self.formed:
            self.formed = self.last = now
            self.leaves = 0

    def left(self, now: float, waiting: bool) -> None:
        """A request left its slot; ``waiting``: others still wait for one."""
        if not waiting:
            self.formed = self.last = 0.0
            return
        if not self.formed:  # requests waited before this was measured: start from here
            self.waits(now)
            return
        self.leaves += 1
        if self.average:
            self.average += _PACE_ALPHA * (min(now - self.last, MAX_RETRY_AFTER_S) - self.average)
        elif self.leaves >= _PACE_WARMUP:
            self.average = (now - self.formed) / self.leaves
        self.last = now

    def gap(self, now: float, slots: int) -> float:
        """The pace now (0.0 when nothing is known: no request has waited yet)."""
        if self.average or not self.formed:
            return self.average
        return (now - self.formed) / max(self.leaves, slots)
