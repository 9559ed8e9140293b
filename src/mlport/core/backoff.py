"""Exponential back-off for things retried on a schedule (a replica's restarts, an artifact's fetches, a webhook's
deliveries).

The retried work runs in a periodic loop (the controller's pass, the replica set's step), so the back-off
does not sleep: it says *when* the next attempt is due, and the loop starts it once that time passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """The first retry ``start_s`` after a failure, each next one twice as late, up to ``max_s``.

    With ``reset_after_s``, a failure of something that had been up that long starts again from ``start_s``.
    """

    start_s: float
    max_s: float
    reset_after_s: float | None = None
    #: The delay the next failure schedules.
    delay_s: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.start_s <= self.max_s:
            raise ValueError(f"back-off needs 0 < start_s <= max_s, not {self.start_s} and {self.max_s}")
        self.delay_s = self.start_s

    def failed(self, now: float, up_since: float | None = None) -> float:
        """The time of the next attempt after a failure at ``now`` (of something up since ``up_since``)."""
        if self.reset_after_s is not None and up_since and now - up_since >= self.reset_after_s:
            self.delay_s = self.start_s
        due = now + self.delay_s
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return due

    def reset(self) -> None:
        """Back to the first delay (the work succeeded)."""
        self.delay_s = self.start_s
