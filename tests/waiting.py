"""Waiting on a condition with a deadline, instead of a fixed sleep (the tests' one helper for it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_for(check: Callable[[], Any], timeout: float = 90, what: str = "condition", every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(every)


async def until(check: Callable[[], Any], step: Callable[[], Awaitable[None]] | None = None,
                timeout: float = 20.0, what: str = "condition", every: float = 0.02) -> Any:
    """Async twin of :func:`wait_for`: run ``step`` (e.g. one controller pass), then ``check``, until it holds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if step is not None:
            await step()
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(every)
