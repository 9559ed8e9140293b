"""Access logs as JSON lines: one line per request, written by the logger ``mlport.access``.

Each line is one JSON object: ``time`` (ISO 8601, UTC), ``request_id`` (a request without one gets a new
one), ``model``, ``version``, ``protocol``, ``status`` and ``latency_ms``, plus what the writer adds (the hub's
gateway adds ``deployment`` and ``replica``). The logger writes the bare lines to standard output, so that a
log collector can parse them; it does not pass them on to the root logger.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import IO, Any

import orjson

from mlport.core.ids import new_request_id

__all__ = ["ACCESS_LOGGER", "AccessLog"]

ACCESS_LOGGER = "mlport.access"
#: Longest request id written.
_MAX_ID = 128


class AccessLog:
    """Writes access-log lines to the logger ``mlport.access`` (set up to print them bare, to ``stream``)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        if not self.logger.handlers:
            handler = logging.StreamHandler(stream or sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.propagate = False
            self.logger.setLevel(logging.INFO)

    def write(self, request_id: str | None, model: str, version: str, protocol: str, status: str | int,
              seconds: float, **extra: Any) -> None:
        """One request's line."""
        line = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id[:_MAX_ID] if request_id else new_request_id(),
            "model": model,
            "version": version,
            "protocol": protocol,
            "status": status,
            "latency_ms": round(seconds * 1000.0, 3),
            **extra,
        }
        self.logger.info(orjson.dumps(line).decode())
