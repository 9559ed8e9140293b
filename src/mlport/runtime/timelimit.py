"""One time limit shared by many futures, with one timer for all of them instead of one each.

Every prediction a request waits for has the server's inference time limit.  A timer of the event loop per
request (``loop.call_later``, then its ``cancel``) costs several microseconds on uvloop, a tenth of a small
model's whole request.  The limit is the same for every request, so the futures reach it in the order they
were watched: they are kept in that order (a dict), one timer waits for the oldest, and a future that ends
first is simply dropped from the dict.  When the timer fires, every future past the limit fails with
``DEADLINE_EXCEEDED``; the timer is then set for the oldest one left.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlport.errors import ErrorCode, MlportError

__all__ = ["TimeLimit"]


class TimeLimit:
    """Fails each watched future that is still pending ``seconds`` after it was watched.

    Used from one event loop (the first that calls :meth:`watch`); on another, :meth:`watch` says no and the
    caller times its future itself.
    """

    __slots__ = ("_loop", "_pending", "_timer", "message", "seconds")

    def __init__(self, seconds: float, message: str) -> None:
        self.seconds = seconds
        self.message = message
        self._pending: dict[asyncio.Future[Any], float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> bool:
        """Time ``future`` from now (call :meth:`forget` once it is no longer waited for); ``False`` when the
        limit serves another event loop."""
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                return False
            self._loop, self._timer = loop, None
            self._pending.clear()
        self._pending[future] = loop.time() + self.seconds
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + self.seconds, self._fire)
        return True

    def forget(self, future: asyncio.Future[Any]) -> None:
        self._pending.pop(future, None)

    def __len__(self) -> int:
        return len(self._pending)

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        pending = self._pending
        for future, expiry in list(pending.items()):
            if expiry > now:
                self._timer = loop.call_at(expiry, self._fire)
                return
            del pending[future]
            if not future.done():
                future.set_exception(MlportError(self.message, ErrorCode.DEADLINE_EXCEEDED))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
