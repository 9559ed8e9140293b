"""Admission of requests to one loaded model version: a bounded number running, a bounded queue, deadlines.

A :class:`Gate` lets ``max_concurrency`` requests run at once; the next ``max_queue`` wait in its queue (high
priority first, then in arrival order) and any request beyond is refused at once (:class:`Overloaded`: 503,
or 429 when the server is so configured, with ``Retry-After``).  A request leaves the queue when a running
one ends, or earlier:

- its own deadline passed (:class:`Expired`, 504): it is never handed to the model;
- it waited ``queue_timeout_s`` (:class:`Overloaded`, 503): the model is too slow for the load;
- its client went away (the caller cancels its wait): it is never handed to the model;
- a higher-priority request found the queue full: the newest waiting request of the lowest priority below it
  makes room (:class:`Overloaded`).

Priority levels (:class:`QueueOrder`, Triton's ``priority_levels``): 1 is the highest; by default there are two,
and a request without a priority (or with 0) has the default level (2 unless configured).  With
``delay_on_timeout`` (Triton's ``timeout_action: DELAY``) a request that waited ``queue_timeout_s`` is not
refused: it moves behind every request of every level and waits on (its own deadline still holds).  A level
may have a policy of its own (:class:`LevelPolicy`, Triton's ``priority_queue_policy``): a bound on its own
waiting requests, its own queue timeout and timeout action.

A version with none of these limits has no gate at all, so requests pay nothing for them.  Everything here
runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mlport.errors import ErrorCode, InvalidInput, MlportError, RetryLater
from mlport.runtime.pace import RETRY_AFTER_S, Pace, spread_retry_after

__all__ = [
    "HIGH",
    "MAX_PRIORITY_LEVELS",
    "MAX_TIMEOUT_US",
    "NORMAL",
    "AdmissionPolicy",
    "Expired",
    "Gate",
    "LevelPolicy",
    "Overloaded",
    "QueueOrder",
    "Refusals",
    "parse_priority",
    "parse_timeout_us",
]

#: Priority levels (Triton's ``priority`` parameter: 1 is the highest; 0 means the default level).
HIGH = 1
NORMAL = 2
#: Most priority levels a queue may have.
MAX_PRIORITY_LEVELS = 16

DepthHook = Callable[[str, str, int], None]


class Overloaded(RetryLater):
    """Refused without running: the queue is full, or the request waited too long in it."""

    #: Not logged one line each (a storm of them would cost what the refusal saves); the metrics count them.
    quiet = True

    def __init__(self, message: str, reason: str, code: ErrorCode = ErrorCode.UNAVAILABLE,
                 retry_after_s: float = RETRY_AFTER_S) -> None:
        super().__init__(message, retry_after_s)
        self.code = code
        #: ``queue_full`` or ``queue_timeout`` (the label of the refusals metric).
        self.reason = reason


class Expired(MlportError):
    """The request's deadline passed before its model could run it (504 / DEADLINE_EXCEEDED)."""

    code = ErrorCode.DEADLINE_EXCEEDED
    quiet = True


def parse_priority(value: object, levels: int = 2, default: int = NORMAL) -> int:
    """The level of a request's ``priority`` parameter: 1 is the highest, ``levels`` the lowest; 0 (or none) is
    ``default``.  With the two default levels: 1 is high, 2 (and 0) normal."""
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad_priority(value, levels)
    try:
        level = int(value)
    except ValueError:
        raise _bad_priority(value, levels) from None
    if not 0 <= level <= levels:
        raise _bad_priority(value, levels)
    return level or default


#: Largest ``timeout`` parameter taken, microseconds (a day).
MAX_TIMEOUT_US = 86_400_000_000


def parse_timeout_us(value: object) -> float | None:
    """The seconds a request's ``timeout`` parameter gives it (Triton's, in microseconds); ``None`` for none
    (absent, or 0)."""
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT_US:
        raise InvalidInput(f"parameter 'timeout' is {value!r}; give the request's time limit in microseconds, 1 to "
                           f"{MAX_TIMEOUT_US}")
    return value / 1e6


def _bad_priority(value: object, levels: int) -> MlportError:
    if levels == 2:
        hint = "use 1 (high), 2 (normal) or 0 (the default, normal)"
    else:
        hint = f"use 1 (the highest) to {levels} (the lowest), or 0 (the default level)"
    return MlportError(f"parameter 'priority' is {value!r}; {hint}", ErrorCode.INVALID_ARGUMENT)


@dataclass(frozen=True, slots=True)
class LevelPolicy:
    """The queue policy of one priority level over the queue's own (Triton's ``priority_queue_policy``): at most
    ``max_queue`` requests of the level wait (``None``: no bound of its own; the whole queue's bound holds
    still), its queue timeout (``None``: the queue's; 0: none) and whether a request of the level that waited it
    moves to the back (``None``: as the queue does)."""

    max_queue: int | None = None
    queue_timeout_s: float | None = None
    delay_on_timeout: bool | None = None


@dataclass(frozen=True, slots=True)
class QueueOrder:
    """How a queue orders its requests: ``levels`` priority levels (1 the highest), the level of a request that
    gives none, whether a request that waited ``queue_timeout_s`` moves to the back (``True``, Triton's
    DELAY) or is refused (Triton's REJECT), and the levels with a policy of their own (``(level, policy)``)."""

    levels: int = 2
    default_level: int = NORMAL
    delay_on_timeout: bool = False
    policies: tuple[tuple[int, LevelPolicy], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= MAX_PRIORITY_LEVELS or not 1 <= self.default_level <= self.levels:
            raise ValueError(f"priority levels must be 1 to {MAX_PRIORITY_LEVELS} and the default level one of them")
        if any(not 1 <= level <= self.levels for level, _ in self.policies):
            raise ValueError(f"a level's queue policy must be for one of the {self.levels} levels")

    @classmethod
    def of(cls, levels: int, default_level: int, delay_on_timeout: bool,
           policies: tuple[tuple[int, int | None, float | None, bool | None], ...] = ()) -> QueueOrder:
        """From a model config's values (:meth:`mlport.formats.config.ModelConfig.queue_order`)."""
        own = tuple((level, LevelPolicy(size, timeout, delay)) for level, size, timeout, delay in policies)
        return cls(levels, default_level, delay_on_timeout, own)

    def by_level(self) -> list[LevelPolicy | None]:
        """The policy of each level of its own (index: level - 1), ``None`` where it has the queue's."""
        out: list[LevelPolicy | None] = [None] * self.levels
        for level, policy in self.policies:
            out[level - 1] = policy
        return out

    def limits(self) -> bool:
        """Whether a level's policy bounds a wait (so that the version needs a gate even without limits of its
        own)."""
        return any(p.max_queue is not None or p.queue_timeout_s for _, p in self.policies)


#: How long after a refusal the refusals count as recent, at least (seconds).
LATELY_S = 5.0


class Refusals:
    """Whether any gate of a server refused a request lately (within :data:`LATELY_S` to twice that): the HTTP
    protocol looks for requests to refuse before the app only then, so that requests pay nothing for it while
    no queue is full.  Use on the event loop."""

    __slots__ = ("_count", "_seen", "lately")

    def __init__(self) -> None:
        self.lately = False
        self._count = 0
        self._seen = 0

    def refused(self) -> None:
        self._count += 1
        if not self.lately:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self.lately = True
            self._seen = self._count
            loop.call_later(LATELY_S, self._check)

    def _check(self) -> None:
        if self._count == self._seen:  # none since the last look: not lately any more
            self.lately = False
            return
        self._seen = self._count
        asyncio.get_running_loop().call_later(LATELY_S, self._check)


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """The server-wide defaults of the limits (a model's ``model.yaml`` overrides each)."""

    max_concurrency: int | None = None
    max_queue: int | None = None
    queue_timeout_s: float | None = None
    #: The error code of a refusal: ``unavailable`` (503 / UNAVAILABLE) or ``resource_exhausted`` (429).
    refuse_code: ErrorCode = ErrorCode.UNAVAILABLE
    #: Predictions one version runs side by side when only a queue is configured (the inference threads).
    threads: int = 2
    #: Called with (model, version, requests waiting) whenever a queue's depth changes.
    on_depth: DepthHook | None = None
    #: Whether the gates refused lately (shared by every gate of the server).
    refusals: Refusals = field(default_factory=Refusals)

    def gate(self, model: str, version: int, max_concurrency: int | None, max_queue: int | None,
             queue_timeout_s: float | None, batch: int = 0, order: QueueOrder | None = None) -> Gate | None:
        """The gate of one loaded version, from its config's values (``None``: the default); ``None`` when
        no limit applies.  Without ``max_concurrency``, a version admits up to twice what its threads (times its
        batch size, when it batches) run at once: the next request already waits at each thread, so a thread
        that finishes never waits for the event loop to hand it work.  Those requests wait too, so they count
        against ``max_queue``: the gate's own queue is shorter by as many, and no more requests wait in all
        than ``max_queue`` says (a queue shorter than the threads leaves some of them without a next request)."""
        concurrency = max_concurrency if max_concurrency is not None else self.max_concurrency
        queue = max_queue if max_queue is not None else self.max_queue
        timeout = queue_timeout_s if queue_timeout_s is not None else self.queue_timeout_s
        if concurrency is None and queue is None and timeout is None and (order is None or not order.limits()):
            return None
        if concurrency is None:
            running = self.threads * max(1, batch)
            staged = running if queue is None else min(running, queue)
            concurrency = running + staged
            if queue is not None:
                queue -= staged
        return Gate(model, version, concurrency, queue, timeout, self.refuse_code, self.on_depth, order,
                    self.refusals)


class _Waiter:
    __slots__ = ("future", "level", "since", "timer")

    def __init__(self, future: asyncio.Future[None], level: int, since: float) -> None:
        self.future = future
        self.level = level
        self.since = since
        self.timer: asyncio.TimerHandle | None = None


class Gate:
    """Admission to one loaded version (see the module's description)."""

    def __init__(self, model: str, version: int, max_concurrency: int, max_queue: int | None,
                 queue_timeout_s: float | None, refuse_code: ErrorCode = ErrorCode.UNAVAILABLE,
                 on_depth: DepthHook | None = None, order: QueueOrder | None = None,
                 refusals: Refusals | None = None) -> None:
        self.model = model
        self._refusals = refusals
        #: What the messages call ``model``: a model, or a deployment (the hub's gateway).
        self.kind = "model"
        self.version = str(version)
        self.max_concurrency = max(1, max_concurrency)
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.refuse_code = refuse_code
        self._on_depth = on_depth
        #: Requests holding a slot now.
        self.running = 0
        self.order = order = order if order is not None else QueueOrder()
        #: One queue per priority level, highest first, then the requests delayed past their queue timeout.
        self._queues: list[deque[_Waiter]] = [deque() for _ in range(order.levels + 1)]
        #: The levels' own policies (index: level - 1; ``None``: the queue's).
        self._levels = order.by_level()
        self.depth = 0
        #: How fast the queue drains.
        self.pace = Pace()

    def retry_after_s(self) -> float:
        """What a refused client is told to wait: how long the queue takes to drain at the recent pace, spread
        at random (:func:`spread_retry_after`)."""
        return float(spread_retry_after(
            self.depth * self.pace.gap(asyncio.get_running_loop().time(), self.max_concurrency)))

    def try_enter(self) -> bool:
        """Take a slot at once when one is free and nobody waits (the common case: no await)."""
        if self.running < self.max_concurrency and not self.depth:
            self.running += 1
            return True
        return False

    def refuses(self, level: int = 0) -> bool:
        """Whether a request of ``level`` (0: the default) would be refused now: no slot free and the queue full
        of requests it cannot take the place of.  Nothing changes."""
        level = self._level(level)
        if self._level_full(level) is not None:
            return True
        if self.max_queue is None or self.depth < self.max_queue:
            return False
        if self.running < self.max_concurrency and not self.depth:
            return False
        return not any(self._queues[level:])  # a waiting request of a lower priority would make room

    def refusal(self, level: int = 0) -> Overloaded | None:
        """The refusal a request of ``level`` would get now (see :meth:`refuses`); ``None`` when it would run or
        wait."""
        return self._full(self._level(level)) if self.refuses(level) else None

    def _level(self, level: int) -> int:
        """The level a request of ``level`` waits at (0: the default; beyond the lowest: the lowest)."""
        return min(level or self.order.default_level, self.order.levels)

    def _level_full(self, level: int) -> int | None:
        """The bound of ``level``'s own queue when it is reached, else ``None``."""
        own = self._levels[level - 1]
        if own is None or own.max_queue is None or len(self._queues[level - 1]) < own.max_queue:
            return None
        return own.max_queue

    def _full(self, level: int) -> Overloaded:
        """The refusal of a request of ``level`` (a level of this queue) at a full queue, or at its level's."""
        if self._refusals is not None:
            self._refusals.refused()
        bound = self._level_full(level)
        what = (f"its queue is full ({self.max_queue} requests waiting)" if bound is None else
                f"its queue for priority level {level} is full ({bound} requests of that level waiting)")
        return Overloaded(f"{self.kind} '{self.model}' is overloaded: {what}; try again shortly", "queue_full",
                          self.refuse_code, self.retry_after_s())

    def _timeout_s(self, level: int) -> float | None:
        """How long a request of ``level`` may wait in the queue (``None``: as long as its deadline allows)."""
        own = self._levels[level - 1]
        if own is None or own.queue_timeout_s is None:
            return self.queue_timeout_s
        return own.queue_timeout_s or None

    def _delays(self, level: int) -> bool:
        own = self._levels[level - 1]
        return self.order.delay_on_timeout if own is None or own.delay_on_timeout is None else own.delay_on_timeout

    def priority(self, value: object) -> int:
        """The level of a request's ``priority`` parameter in this queue (:func:`parse_priority`)."""
        return parse_priority(value, self.order.levels, self.order.default_level)

    def wait(self, deadline: float | None, level: int) -> asyncio.Future[None]:
        """Queue for a slot: a future that completes once the request holds one, or fails with
        :class:`Overloaded` or :class:`Expired`.  Cancel it (:meth:`abandon`) if the client goes away.
        ``level`` 0 is the default level."""
        level = self._level(level)
        if self._level_full(level) is not None:
            raise self._full(level)
        if self.max_queue is not None and self.depth >= self.max_queue and not self._bump(level):
            raise self._full(level)
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiter = _Waiter(loop.create_future(), level, now)
        limit = deadline
        timeout = self._timeout_s(level)
        if timeout is not None and (limit is None or now + timeout < limit):
            limit = now + timeout
        if limit is not None:
            waiter.timer = loop.call_at(limit, self._timed_out, waiter, limit == deadline, deadline)
        self._queues[level - 1].append(waiter)
        self._depth(+1)
        self.pace.waits(now)
        return waiter.future

    def leave(self) -> None:
        """A request holding a slot is done: the next one still waiting takes it."""
        self.pace.left(asyncio.get_running_loop().time() if self.depth else 0.0, bool(self.depth))
        if self.running > self.max_concurrency or not self._hand_on():
            self.running -= 1

    def resize(self, max_concurrency: int) -> None:
        """Let ``max_concurrency`` requests run at once from now on (a gateway whose replicas came or went);
        when it grew, requests still waiting take the new slots at once."""
        self.max_concurrency = max(1, max_concurrency)
        while self.running < self.max_concurrency and self.depth and self._hand_on():
            self.running += 1

    def _hand_on(self) -> bool:
        """Give a slot to the next request still waiting, if any (``running`` is the caller's to count)."""
        for queue in self._queues:
            while queue:
                waiter = queue.popleft()
                self._depth(-1)
                if waiter.timer is not None:
                    waiter.timer.cancel()
                if not waiter.future.done():
                    waiter.future.set_result(None)
                    return True
        return False

    def abandon(self, future: asyncio.Future[None]) -> None:
        """The client of a queued request went away: take it out of the queue (or give back its slot, when it
        was granted in the meantime)."""
        if future.done() and not future.cancelled() and future.exception() is None:
            self.leave()
            return
        future.cancel()
        self._remove(future)

    # ------------------------------------------------------------------ inside
    def _timed_out(self, waiter: _Waiter, own: bool, deadline: float | None) -> None:
        """The request's own deadline (``own``) or the queue timeout came while it waited."""
        waiter.timer = None
        if waiter.future.done():
            return
        loop = asyncio.get_running_loop()
        if not own and self._delays(waiter.level):
            self._delay(waiter, deadline)
            return
        self._remove(waiter.future)
        waited = loop.time() - waiter.since
        if own:
            waiter.future.set_exception(Expired(
                f"the request's deadline passed after {waited * 1000:.0f} ms in the queue of {self.kind} "
                f"'{self.model}'; it was not run"))
        else:
            timeout = self._timeout_s(waiter.level) or waited
            waiter.future.set_exception(Overloaded(
                f"{self.kind} '{self.model}' is overloaded: the request waited {timeout:g} s in its queue "
                "(queue_timeout) and was not run; try again shortly", "queue_timeout", self.refuse_code,
                self.retry_after_s()))

    def _delay(self, waiter: _Waiter, deadline: float | None) -> None:
        """Move a request past its queue timeout behind every other (DELAY); its own deadline still holds."""
        for queue in self._queues[:-1]:
            if waiter in queue:
                queue.remove(waiter)
                self._queues[-1].append(waiter)
                break
        if deadline is not None:
            waiter.timer = asyncio.get_running_loop().call_at(deadline, self._timed_out, waiter, True, deadline)

    def _bump(self, level: int) -> bool:
        """A request at a full queue: refuse the newest one of the lowest priority below its own (the delayed
        ones first) in its place; ``level`` is a level of this queue."""
        lower = next((q for q in reversed(self._queues[level:]) if q), None)
        if lower is None:
            return False
        waiter = lower.pop()
        self._depth(-1)
        if waiter.timer is not None:
            waiter.timer.cancel()
        if not waiter.future.done():
            waiter.future.set_exception(Overloaded(
                f"{self.kind} '{self.model}' is overloaded: its queue is full ({self.max_queue} requests waiting) "
                "and a request of higher priority took this one's place; try again shortly", "queue_full",
                self.refuse_code, self.retry_after_s()))
        return True

    def _remove(self, future: asyncio.Future[None]) -> None:
        for queue in self._queues:
            for waiter in queue:
                if waiter.future is future:
                    queue.remove(waiter)
                    self._depth(-1)
                    if waiter.timer is not None:
                        waiter.timer.cancel()
                    return

    def _depth(self, change: int) -> None:
        self.depth += change
        if self._on_depth is not None:
            self._on_depth(self.model, self.version, self.depth)
