"""The JSON access-log lines: one bare JSON object per line, with the fields the README names."""

from __future__ import annotations

import io
import json
import logging

from mlport.observability.access import ACCESS_LOGGER, AccessLog


def test_lines_are_bare_json_objects() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = logger.handlers[:]
    logger.handlers.clear()
    stream = io.StringIO()
    try:
        log = AccessLog(stream)
        log.write("req-1", "iris", "1", "v2", "ok", 0.0012345)
        log.write(None, "iris", "2", "grpc", "invalid_argument", 0.5, deployment="prod")
        log.write("x" * 1000, "", "", "eval", "not_found", 0.0)
    finally:
        logger.handlers[:] = saved
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: v for k, v in first.items() if k != "time"} == {
        "request_id": "req-1", "model": "iris", "version": "1", "protocol": "v2", "status": "ok", "latency_ms": 1.234}
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert len(second["request_id"]) == 32 and second["deployment"] == "prod"  # a new id when none is given
    assert len(third["request_id"]) == 128  # a client's id is cut to a bounded length
