"""Refusals before the app, against a real server: OIP infer requests to a model whose queue is full are refused
as soon as their body is in, with the app's answer, on a connection that stays usable; what might not be
refused (a priority, a large body, a model whose requests are logged) still reaches the app.

That a request was refused unread shows in its answer: a body that is not JSON gets 503 there, where the app,
which decodes the body before it queues the request, answers 400.  Requests are looked at before the app only
while the server has refused requests lately: the first refusal of a burst goes through the app.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.integration.test_overload import Background, block, body, calls, metric, queued, start_recording
from tests.rawhttp import read_answer
from tests.waiting import wait_for

INFER = "/v2/models/{}/infer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("early")
    logs = root / "request-logs"
    proc = start_recording(root, {"one": "max_concurrency: 1\nmax_queue: 1\n",
                                  "logged": f"max_concurrency: 1\nmax_queue: 1\nlogging:\n  payload: inputs\n"
                                            f"  sink: {logs}\n"})
    try:
        yield proc
    finally:
        proc.stop()


def _request(model: str, payload: bytes, *headers: str, version: str = "1.1") -> bytes:
    head = [f"POST {INFER.format(model)} HTTP/{version}", "host: 127.0.0.1", "content-type: application/json",
            f"content-length: {len(payload)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


@contextlib.contextmanager
def full_queue(server: Server, model: str, n: int) -> Iterator[Background]:
    """``model`` busy with blocker ``n`` and request ``n * 100 + 1`` in its one-place queue, for the block."""
    bg = Background()
    release = block(server, bg, model, n)
    try:
        bg.post(server, model, n * 100 + 1)
        queued(server, model, 1)
        yield bg
    finally:
        release()
        bg.join()
    assert bg.answers[n * 100 + 1].status_code == 200


def test_a_full_queue_refuses_unread_requests_on_a_connection_that_stays_usable(server: Server) -> None:
    refused = metric(server, "mlport_refused_requests_total", model="one", reason="queue_full")
    unavailable = metric(server, "mlport_requests_total", model="one", status="unavailable")
    sock = _connect(server)
    buffer = bytearray()
    formed = time.monotonic()  # the queue forms after this
    with full_queue(server, "one", 11):
        # three requests in one write (pipelined), then a body that is not even JSON: all refused unread
        sock.sendall(b"".join(_request("one", orjson_body(1102 + i), f"x-request-id: early-{i}") for i in range(3)))
        for i in range(3):
            status, headers, payload = read_answer(sock, buffer)
            assert status == 503, payload
            assert headers["x-request-id"] == f"early-{i}"
            # whole seconds from the time the one waiting takes to drain at the queue's pace to twice that
            assert 1 <= int(headers["retry-after"]) <= max(1, math.ceil(2 * (time.monotonic() - formed)))
            assert headers["content-type"] == "application/json" and "date" in headers
            assert b"queue is full" in payload and "connection" not in headers
        sock.sendall(_request("one", b"{not json"))
        status, headers, payload = read_answer(sock, buffer)
        assert status == 503 and len(headers["x-request-id"]) == 32, payload
        # what the app must see: a priority of its own (it may outrank a waiting one), a large body
        assert post_raw(server, "one", b'{"parameters": {"priority": "x"}') == 400
        assert post_raw(server, "one", b"{" + b" " * (70 * 1024)) == 400
    # the same connection serves the next request as usual
    sock.sendall(_request("one", orjson_body(1105)))
    status, _, payload = read_answer(sock, buffer)
    assert status == 200, payload
    sock.close()
    seen = calls(server)
    assert 1105 in seen and not {1102, 1103, 1104} & set(seen)
    assert metric(server, "mlport_refused_requests_total", model="one", reason="queue_full") == refused + 4
    assert metric(server, "mlport_requests_total", model="one", status="unavailable") == unavailable + 4


def test_connection_close_and_http_1_0_end_the_connection_after_the_refusal(server: Server) -> None:
    with full_queue(server, "one", 12):
        for extra, version in (("connection: close", "1.1"), ("x-any: 1", "1.0")):
            with _connect(server) as sock:
                sock.sendall(_request("one", orjson_body(1202), extra, version=version))
                buffer = bytearray()
                status, headers, _ = read_answer(sock, buffer)
                assert status == 503 and headers["connection"] == "close"
                assert sock.recv(1024) == b""  # closed by the server
    assert 1202 not in calls(server)


def test_a_model_whose_requests_are_logged_refuses_through_the_app(server: Server) -> None:
    with full_queue(server, "logged", 13):
        assert post_raw(server, "logged", b"{not json") == 400  # read and decoded by the app
        r = httpx.post(server.url + INFER.format("logged"), json=body(1302), timeout=10)
        assert r.status_code == 503 and "queue is full" in r.json()["error"]
    assert 1302 not in calls(server)


def orjson_body(i: int) -> bytes:
    return httpx.Request("POST", "http://x", json=body(i)).content


def post_raw(server: Server, model: str, payload: bytes) -> int:
    r = httpx.post(server.url + INFER.format(model), content=payload, timeout=10,
                   headers={"content-type": "application/json"})
    return r.status_code


@pytest.mark.parametrize("flags", [("--access-log",), ("--access-log", "--access-log-format", "json")])
def test_access_logs_have_a_line_for_each_refusal(tmp_path: Path, flags: tuple[str, ...]) -> None:
    """The text access log (uvicorn's, which only the app's answers reach: no early refusal then) and the JSON
    one (written for early refusals as for the others) both have the refused request's line."""
    logged = start_recording(tmp_path, {"one": "max_concurrency: 1\nmax_queue: 1\n"}, *flags)
    try:
        with full_queue(logged, "one", 14):
            # nothing refused lately: the app reads the first ones (400 for a body that is not JSON)
            assert post_raw(logged, "one", b"{not json") == 400
            assert httpx.post(logged.url + INFER.format("one"), json=body(1402), timeout=10).status_code == 503
            r = httpx.post(logged.url + INFER.format("one"), content=b"{not json", timeout=10,
                           headers={"content-type": "application/json", "x-request-id": "refused-14"})
        text = "--access-log-format" not in flags
        assert r.status_code == (400 if text else 503), r.text  # through the app, or refused unread
        if text:
            wait_for(lambda: '"POST /v2/models/one/infer HTTP/1.1" 400' in logged.log(), 30, "the text line")
        else:
            line = wait_for(lambda: next((json.loads(x) for x in logged.log().splitlines()
                                          if '"refused-14"' in x), None), 30, "the JSON line")
            assert line["model"] == "one" and line["status"] == "unavailable", line
    finally:
        logged.stop()
