"""Sending the gateway's shadow copies: best-effort, bounded, and always behind the live path.

A shadow deployment's live answer goes back to the client first; a copy of the request then joins a bounded
queue (at most ``max_pending`` copies queued or out, and ``max_pending_bytes`` of their bodies).  A copy that
finds the queue full is dropped and counted (:meth:`mlport.deploy.shadow.ShadowRecorder.record_dropped`), never
queued without limit.  At most :data:`CONCURRENCY` copies are out at once, sent by as many long-lived worker
tasks (no task per copy), and a copy only goes out while few live requests are in flight (:data:`LIVE_BUSY`)
and, with ``max_cpu`` set (the hub's default is :data:`BUSY_CPU`), the hub's process used at most that share of
one core over the last :data:`SAMPLE_S` (the event loop runs on one core): while the hub is busy, copies wait
in the queue instead of taking CPU from live requests, and on a hub that stays busy the queue fills and further
copies are dropped (counted).  The shadow replicas
themselves serve at a lower CPU priority (:data:`mlport.deploy.controller.SHADOW_NICE`), so they get the cores
only when the live path leaves them.

The pairs of answers are compared and counted in batches in a thread, at most every :data:`RECORD_EVERY_S`,
off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

from mlport.deploy.shadow import Reply, ShadowRecorder
from mlport.errors import MlportError
from mlport.protocols.http.errors import HTTP_STATUS

__all__ = ["BUSY_CPU", "CONCURRENCY", "LIVE_BUSY", "RECORD_EVERY_S", "SAMPLE_S", "ShadowCopies"]

log = logging.getLogger("mlport.deploy.gateway")

#: Copies out at the same time.
CONCURRENCY = 4
#: Copies wait while more live requests than this are in flight.
LIVE_BUSY = 4
#: With a CPU rule, a reasonable bound: the hub counts as busy (copies are dropped) while its process used more
#: than this share of one core ...
BUSY_CPU = 0.5
#: ... over the last this many seconds (measured at most this often).
SAMPLE_S = 0.1
#: Pairs of answers are compared and counted at most this often (in one batch, in a thread).
RECORD_EVERY_S = 0.05

Out = TypeVar("Out")


@dataclass(slots=True)
class _Copy(Generic[Out]):
    deployment: str
    primary: int
    shadow: int
    out: Out
    size: int
    live: Reply


#: one recorded pair: deployment, primary version, shadow version, the live answer, the shadow's
Pair = tuple[str, int, int, Reply, Reply]


class ShadowCopies(Generic[Out]):
    """The copies of one gateway.  ``send(deployment, version, out)`` forwards a copy and returns the shadow
    version's answer (raising :class:`MlportError` for the gateway's own errors); ``record(batch)`` compares and
    counts pairs (it runs in a thread).  ``max_cpu``: the share of one core the hub's process may have used for
    copies to go out (``None``: no such rule); ``cpu_clock`` and ``clock`` measure it.  Use from one event loop;
    :meth:`aclose` at the end."""

    def __init__(self, send: Callable[[str, int, Out], Awaitable[Reply]], record: Callable[[list[Pair]], None],
                 recorder: ShadowRecorder, *, max_pending: int, max_pending_bytes: int,
                 max_cpu: float | None = None, cpu_clock: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._record = record
        self._recorder = recorder
        self._max_pending = max_pending
        self._max_bytes = max_pending_bytes
        self._queue: deque[_Copy[Out]] = deque()
        self._bytes = 0
        self._out = 0
        self._live = 0
        self._wake: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._pairs: list[Pair] = []
        self._recording: asyncio.Task[None] | None = None
        self._max_cpu = max_cpu
        self._cpu_clock, self._clock = cpu_clock, clock
        self._sampled_at, self._cpu_at = clock(), cpu_clock()
        self._busy = False
        self._closed = False

    @property
    def pending(self) -> int:
        """Copies queued or out."""
        return len(self._queue) + self._out

    # -- the live path's side ------------------------------------------------------------------------------

    def live_started(self) -> None:
        self._live += 1

    def live_ended(self) -> None:
        self._live -= 1
        if self._live <= LIVE_BUSY and self._queue and self._wake is not None:
            self._wake.set()

    def busy(self) -> bool:
        """Whether the hub's process used more than ``max_cpu`` of one core over the last :data:`SAMPLE_S` (or
        longer: measured when asked, at most that often)."""
        if self._max_cpu is None:
            return False
        now = self._clock()
        if now - self._sampled_at >= SAMPLE_S:
            cpu = self._cpu_clock()
            self._busy = cpu - self._cpu_at > self._max_cpu * (now - self._sampled_at)
            self._sampled_at, self._cpu_at = now, cpu
        return self._busy

    def offer(self, deployment: str, primary: int, shadow: int, out: Out, size: int, live: Reply) -> None:
        """Queue a copy (``size``: its body's bytes), or drop and count it when the queue is full.  (While the hub
        is busy, copies wait in the queue: a busy spell holds them back, a busy hub fills the queue and the
        copies beyond it are dropped.)"""
        if (self._closed or self.pending >= self._max_pending
                or (self._bytes + size > self._max_bytes and self.pending)):
            self._recorder.record_dropped(deployment, primary, shadow)
            return
        self._queue.append(_Copy(deployment, primary, shadow, out, size, live))
        self._bytes += size
        if self._wake is None:
            self._wake = asyncio.Event()
        if len(self._workers) < CONCURRENCY:
            self._workers.append(asyncio.create_task(self._work(self._wake), name="mlport-shadow-copies"))
        if self._live <= LIVE_BUSY:
            self._wake.set()

    # -- sending -------------------------------------------------------------------------------------------

    async def _work(self, wake: asyncio.Event) -> None:
        while not self._closed:
            # the live path first: a copy goes out only while few live requests are in flight and the hub has CPU
            if not self._queue or self._live > LIVE_BUSY:
                wake.clear()
                await wake.wait()
                continue
            if self.busy():
                await asyncio.sleep(SAMPLE_S)
                continue
            copy = self._queue.popleft()
            self._bytes -= copy.size
            self._out += 1
            try:
                answer = await self._answer(copy)
            finally:
                self._out -= 1
            if answer is not None:
                self._pairs.append((copy.deployment, copy.primary, copy.shadow, copy.live, answer))
                if self._recording is None:
                    self._recording = asyncio.create_task(self._record_soon(), name="mlport-shadow-record")

    async def _answer(self, copy: _Copy[Out]) -> Reply | None:
        started = time.perf_counter()
        try:
            return await self._send(copy.deployment, copy.shadow, copy.out)
        except MlportError as exc:
            return Reply(HTTP_STATUS[exc.code], orjson.dumps({"error": exc.message}), "application/json",
                         time.perf_counter() - started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shadow copy of deployment %r to version %s failed", copy.deployment, copy.shadow)
            return None

    # -- recording -----------------------------------------------------------------------------------------

    async def _record_soon(self) -> None:
        """Record the pairs gathered within :data:`RECORD_EVERY_S`, in one batch, in a thread."""
        try:
            while self._pairs:
                if not self._closed:
                    await asyncio.sleep(RECORD_EVERY_S)
                batch, self._pairs = self._pairs, []
                try:
                    await asyncio.to_thread(self._record, batch)
                except Exception:
                    log.exception("recording shadow copies failed")
        finally:
            self._recording = None

    async def aclose(self) -> None:
        """Drop the copies still queued (counted), stop those out, and record the pairs gathered."""
        self._closed = True
        for copy in self._queue:
            self._recorder.record_dropped(copy.deployment, copy.primary, copy.shadow)
        self._queue.clear()
        self._bytes = 0
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._recording is not None:
            await asyncio.gather(self._recording, return_exceptions=True)
        batch, self._pairs = self._pairs, []
        if batch:
            await asyncio.to_thread(self._record, batch)
