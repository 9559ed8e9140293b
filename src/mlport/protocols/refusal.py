"""Refusals decided before a request is read: a model whose queue is full refuses a request of the default
priority whatever it carries, so its body need not be decoded, checked or even handed to the app.

When a storm of clients meets a full queue, each refusal's cost decides how fast the others are answered
(hundreds of clients refused in the same instant wait for one another).  :func:`would_refuse` tells, from the
model and version alone, whether a request would be refused now; :func:`refuse_unread` then counts the refusal
exactly as a refused call counts it (the refusals and requests metrics, the statistics, the access log) and
returns it for the transport to answer.  A model whose requests go to the request log is left to the usual
path (its record carries the request), and so is any request that might have a priority of its own.
"""

from __future__ import annotations

import time

from mlport.protocols.service import InferenceService
from mlport.runtime.admission import Overloaded

__all__ = ["refuse_unread", "would_refuse"]


def would_refuse(service: InferenceService, name: str, version: str | None) -> bool:
    """Whether a request of the default priority to ``name``/``version`` would be refused now (nothing held,
    nothing counted)."""
    lv = service.manager.peek(name, version)
    return lv is not None and lv.gate is not None and lv.gate.refuses()


def refuse_unread(service: InferenceService, name: str, version: str | None, protocol: str,
                  request_id: str | None) -> Overloaded | None:
    """The refusal of a request of the default priority to ``name``/``version``, counted as the call would count
    it; ``None`` when the request is to be read and run (or queued) as usual."""
    manager = service.manager
    lv = manager.peek(name, version)
    if lv is None or lv.gate is None:
        return None
    rlog = service.request_log
    if rlog is not None and rlog.logs(lv.model, lv.version, lv.config.logging):
        return None
    refusal = lv.gate.refusal()
    if refusal is None:
        return None
    started = time.perf_counter()
    lv = manager.acquire(name, version)  # as a call holds it: counted as a use of the model
    try:
        service.ended(lv, service.series(lv, protocol), refusal, time.perf_counter() - started, request_id)
    finally:
        manager.release(lv)
    return refusal
