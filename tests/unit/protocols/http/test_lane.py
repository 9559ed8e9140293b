"""The runtime's protocol serves OIP infer requests itself (the lane), answering exactly as the app would, and
hands everything else, in order, to the app; against a real uvicorn server on a socket."""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from mlport.deploy.procs import free_port
from mlport.protocols.http.app import build_app
from mlport.protocols.http.lane import LANE_MAX_BYTES, runtime_protocol
from mlport.protocols.http.server import build_state
from mlport.protocols.http.state import AppState
from mlport.settings import Settings
from tests.builders import counted_python_model, scale_onnx
from tests.rawhttp import read_answer
from tests.waiting import wait_for

INFER = "/v2/models/{}/infer"


class _Running:
    """A server in a thread: the runtime's app behind the runtime's protocol; ``app_calls`` counts the HTTP
    requests that reached the app."""

    def __init__(self, root: Path, keep_alive_s: int = 5, **settings: Any) -> None:
        self.state: AppState = build_state(Settings(model_path=root, poll_interval_s=0, trusted=True, **settings))
        app = build_app(self.state)
        self.app_calls = 0

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.app_calls += 1
            await app(scope, receive, send)

        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(counted, host="127.0.0.1", port=self.port, lifespan="on",
                                                    http=runtime_protocol(self.state), log_level="warning",
                                                    access_log=False, server_header=False,
                                                    timeout_graceful_shutdown=30,
                                                    timeout_keep_alive=keep_alive_s))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 60, "the server to start")
        wait_for(lambda: httpx.get(self.url + "/v2/health/ready", timeout=10).status_code == 200, 60,
                 "the models to load")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lane")
    scale_onnx(root / "scale" / "1" / "model.onnx", 2.0)
    counted_python_model(root / "slow" / "1", root / "loads.txt", "slow")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[_Running]:
    running = _Running(repo, max_body_bytes=4 * 1024 * 1024)
    try:
        yield running
    finally:
        running.stop()


def _scale_body(rows: int = 1, value: float = 1.0) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 3],
                                     "data": [value] * (3 * rows)}]})


def _request(path: str, body: bytes | None = None, *headers: str, version: str = "1.1") -> bytes:
    method = "GET" if body is None else "POST"
    head = [f"{method} {path} HTTP/{version}", "host: 127.0.0.1", *headers]
    if body is not None:
        head += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def _exchange(server: _Running, *requests: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """``requests`` written at once on one connection (pipelined), and their answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"".join(requests))
        buffer = bytearray()
        return [read_answer(sock, buffer) for _ in requests]


def _same(lane: tuple[int, dict[str, str], bytes], app: tuple[int, dict[str, str], bytes]) -> None:
    assert lane[0] == app[0] and lane[2] == app[2], (lane, app)
    for name in ("content-type", "content-length", "x-request-id", "retry-after", "inference-header-content-length"):
        assert lane[1].get(name) == app[1].get(name), name


@pytest.mark.parametrize(("path", "body"), [
    (INFER.format("scale"), _scale_body(2, 1.5)),
    (INFER.format("scale") + "?x=1", _scale_body()),
    ("/v2/models/scale/versions/1/infer", _scale_body()),
    (INFER.format("scale"), b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}'),
    (INFER.format("scale"), b"{not json"),
    (INFER.format("nothing-here"), _scale_body()),
    ("/v2/models/scale/versions/7/infer", _scale_body()),
    (INFER.format("scale"), orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],
                                                      "data": [1, 2, 3]}],
                                          "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})),
])
def test_infer_requests_skip_the_app_and_get_its_answer(server: _Running, path: str, body: bytes) -> None:
    """The lane's answer, and the app's to the same request (``Expect: 100-continue`` sends it to the app): the
    same status, body and headers; only the second reached the app."""
    rid = "x-request-id: lane-1"
    before = server.app_calls
    (lane,) = _exchange(server, _request(path, body, rid))
    assert server.app_calls == before
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head, _, payload = _request(path, body, rid, "expect: 100-continue").partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n")
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        assert bytes(buffer).startswith(b"HTTP/1.1 100")
        del buffer[:bytes(buffer).index(b"\r\n\r\n") + 4]
        sock.sendall(payload)
        app = read_answer(sock, buffer)
    assert server.app_calls == before + 1
    _same(lane, app)


def test_answers_carry_the_results_and_a_date(server: _Running) -> None:
    ((status, headers, payload),) = _exchange(server, _request(INFER.format("scale"), _scale_body(2, 1.5)))
    assert status == 200 and headers["content-type"] == "application/json" and "date" in headers
    assert "connection" not in headers and "server" not in headers
    assert orjson.loads(payload)["outputs"][0]["data"] == [3.0] * 6


def test_pipelined_requests_are_answered_in_order(server: _Running) -> None:
    """Lane and app requests written at once are answered in the order they came, the slow one first."""
    slow = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0.3]}]})
    answers = _exchange(server,
                        _request(INFER.format("slow"), slow, "x-request-id: p-0"),
                        _request(INFER.format("scale"), _scale_body(1, 2.0), "x-request-id: p-1"),
                        _request("/v2/health/ready", None, "x-request-id: p-2"),
                        _request(INFER.format("scale"), b"{not json", "x-request-id: p-3"),
                        _request(INFER.format("scale"), _scale_body(1, 3.0), "x-request-id: p-4"))
    assert [a[0] for a in answers] == [200, 200, 200, 400, 200]
    assert answers[3][1]["x-request-id"] == "p-3"
    assert orjson.loads(answers[0][2])["outputs"][0]["data"] == pytest.approx([1.3])
    assert orjson.loads(answers[1][2])["outputs"][0]["data"] == [4.0] * 3
    assert orjson.loads(answers[4][2])["outputs"][0]["data"] == [6.0] * 3


@pytest.mark.parametrize(("extra", "version"), [("connection: close", "1.1"), ("x-any: 1", "1.0")])
def test_connection_close_and_http_1_0_end_the_connection_after_the_answer(
    server: _Running, extra: str, version: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request(INFER.format("scale"), _scale_body(), extra, version=version))
        status, headers, _ = read_answer(sock, bytearray())
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(1024) == b""  # closed by the server


def test_bodies_in_pieces_and_chunked_are_read_whole(server: _Running) -> None:
    body = _scale_body(40, 0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        request = _request(INFER.format("scale"), body)
        for i in range(0, len(request), 97):
            sock.sendall(request[i:i + 97])
        status, _, payload = read_answer(sock, bytearray())
        assert status == 200 and orjson.loads(payload)["outputs"][0]["data"] == [1.0] * 120
        chunked = [f"POST {INFER.format('scale')} HTTP/1.1", "host: x", "transfer-encoding: chunked", "", ""]
        sock.sendall("\r\n".join(chunked).encode() + b"".join(
            b"%x\r\n%s\r\n" % (len(body[i:i + 50]), body[i:i + 50]) for i in range(0, len(body), 50)) + b"0\r\n\r\n")
        status, _, payload = read_answer(sock, bytearray())
        assert status == 200 and orjson.loads(payload)["outputs"][0]["data"] == [1.0] * 120


def test_large_bodies_go_to_the_app_which_enforces_the_limit(server: _Running) -> None:
    rows = LANE_MAX_BYTES // 10  # a body over the lane's bound, under the server's limit
    body = _scale_body(rows, 1.0)
    assert LANE_MAX_BYTES < len(body) < server.state.limits.max_body_bytes
    before = server.app_calls
    r = httpx.post(server.url + INFER.format("scale"), content=body, timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 3 * rows
    too_big = b" " * (server.state.limits.max_body_bytes + 1)
    r = httpx.post(server.url + INFER.format("scale"), content=too_big, timeout=60)
    assert r.status_code == 413, r.text
    assert server.app_calls == before + 2


def test_a_request_in_the_lane_is_answered_when_the_server_stops(repo: Path) -> None:
    """Graceful shutdown: a prediction under way when the server is told to stop is answered (and the
    connection then closed); the server stops once it is."""
    running = _Running(repo)
    answers: list[httpx.Response] = []
    slow = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    client = threading.Thread(target=lambda: answers.append(
        httpx.post(running.url + INFER.format("slow"), json=slow, timeout=60)))
    client.start()
    try:
        def predicting() -> bool:
            lv = running.state.service.manager.peek("slow", None)
            return lv is not None and lv.inflight > 0

        wait_for(predicting, 30, "the slow prediction")
        running.stop()
    finally:
        client.join(60)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].headers["connection"] == "close"
    assert answers[0].json()["outputs"][0]["data"] == [2.0]


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (read at once, without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def _idle_connection(running: _Running) -> socket.socket:
    """A connection that had one answer and then stays idle."""
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=30)
    sock.sendall(_request(INFER.format("scale"), _scale_body()))
    assert read_answer(sock, bytearray())[0] == 200
    return sock


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not(repo: Path) -> None:
    running = _Running(repo, keep_alive_s=1)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as busy:
            buffer = bytearray()
            with _idle_connection(running) as idle:
                sent = 0
                # requests back to back on one connection until the server has closed the idle one
                while not _closed_by_server(idle):
                    busy.sendall(_request(INFER.format("scale"), _scale_body()))
                    assert read_answer(busy, buffer)[0] == 200
                    sent += 1
                    assert sent < 100_000, "the idle connection was never closed"
            busy.sendall(_request(INFER.format("scale"), _scale_body()))
            assert read_answer(busy, buffer)[0] == 200
            # a request whose head is half sent is not idle: it is answered once the rest comes, even after a
            # connection left idle at the same moment was closed for its idleness
            with _idle_connection(running) as idle:
                busy.sendall(_request(INFER.format("scale"), _scale_body())[:20])
                wait_for(lambda: _closed_by_server(idle), 30, "the idle connection to be closed")
            busy.sendall(_request(INFER.format("scale"), _scale_body())[20:])
            assert read_answer(busy, buffer)[0] == 200
    finally:
        running.stop()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_request_whose_body_is_still_coming_when_the_server_stops_is_answered(repo: Path) -> None:
    running = _Running(repo)
    request = _request(INFER.format("scale"), _scale_body(2, 4.0))
    stopper = threading.Thread(target=running.stop)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
            sock.sendall(request[:-10])  # the head and most of the body
            wait_for(lambda: read_server_connections(running) == 1, 30, "the server to have the request")
            stopper.start()
            wait_for(lambda: _refused(running.port), 30, "the server to stop taking connections")
            sock.sendall(request[-10:])
            status, headers, payload = read_answer(sock, bytearray())
            assert status == 200 and headers["connection"] == "close", payload
            assert orjson.loads(payload)["outputs"][0]["data"] == [8.0] * 6
            assert sock.recv(1024) == b""
    finally:
        if stopper.ident is not None:
            stopper.join(60)
        else:
            running.stop()


def read_server_connections(running: _Running) -> int:
    return len(running.server.server_state.connections)


def test_requests_in_the_lane_leave_no_reference_cycles(server: _Running) -> None:
    """Everything a lane request made is freed by reference counts: nothing waits for the garbage collector
    (a lane referring to itself once left its task, coroutine and context to it, one set per request)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(50):
                assert client.post(INFER.format("scale"), content=_scale_body(),
                                   headers={"content-type": "application/json"}).status_code == 200
        gc.collect()
        left = [type(o).__qualname__ for o in gc.garbage
                if type(o).__module__.startswith("mlport") or type(o).__qualname__ in ("Task", "coroutine")]
        assert not left, left[:20]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
