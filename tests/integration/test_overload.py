"""Overload against a real server: a full queue refuses at once with Retry-After (HTTP and gRPC), a request past
its deadline or whose client left is never handed to the model, high priority jumps the queue, and the metrics
count each case.

The model is a trusted Python model that writes each request's id to a file as it computes it, so what reached
the model is known exactly; a request with a negative id blocks it until the test creates its release file.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from mlport.protocols.grpc.proto import inference_pb2 as pb
from mlport.protocols.grpc.proto import inference_pb2_grpc
from tests.conftest import Server, start_server
from tests.waiting import wait_for

MODEL = '''
import os, time
from pathlib import Path

class Model:
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                 "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}

    def predict(self, inputs):
        time.sleep(0.002)  # slow enough never to run inline on the event loop (a blocker would block it)
        x = inputs["x"]
        calls = Path(os.environ["OVERLOAD_CALLS"])
        with calls.open("a") as f:
            f.write(" ".join(str(int(v)) for v in x.ravel()) + "\\n")
        if x[0, 0] < 0:  # a blocker: hold the model until the test releases it
            release = calls.parent / f"release{int(-x[0, 0])}"
            deadline = time.monotonic() + 60
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        return {"y": x * 2}
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("overload")
    proc = start_recording(root, {"slow": "max_concurrency: 1\nmax_queue: 3\n",
                                  "batched": "batching: {max_batch_size: 8, max_delay_ms: 10000}\n"})
    try:
        yield proc
    finally:
        proc.stop()


def start_recording(root: Path, models: dict[str, str], *args: str) -> Server:
    """A server of the recording model under each name, with the ``model.yaml`` lines given (trusted), and
    ``args`` for ``mlport serve``."""
    repo = root / "models"
    for name, extra in models.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.py").write_text(MODEL)
        (repo / name / "model.yaml").write_text("trusted: true\n" + extra)
    logs = root / "logs"
    logs.mkdir()
    return start_server(repo, "--poll-interval", "0", "--inference-threads", "1", *args, log_dir=logs,
                        env={"OVERLOAD_CALLS": str(root / "calls.log")})


def _calls_path(server: Server) -> Path:
    return server.log_path.parent.parent / "calls.log"


def calls(server: Server) -> list[int]:
    """The ids the model computed, in order."""
    path = _calls_path(server)
    return [int(v) for v in path.read_text().split()] if path.exists() else []


def body(i: int, **params: object) -> dict[str, object]:
    doc: dict[str, object] = {"id": str(i), "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [i]}]}
    if params:
        doc["parameters"] = params
    return doc


def metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Background:
    """Requests sent from threads; their answers kept by id."""

    def __init__(self) -> None:
        self.answers: dict[int, httpx.Response] = {}
        self._threads: list[threading.Thread] = []

    def post(self, server: Server, model: str, i: int, timeout: float = 60, **params: object) -> None:
        def run() -> None:
            with contextlib.suppress(httpx.TimeoutException):
                self.answers[i] = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body(i, **params),
                                             timeout=timeout)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)


def block(server: Server, bg: Background, model: str, n: int) -> Callable[[], None]:
    """Occupy ``model`` with a blocker (id -n) until the returned function releases it."""
    bg.post(server, model, -n)
    wait_for(lambda: -n in calls(server), 30, f"blocker {n} to reach the model")
    return lambda: (_calls_path(server).parent / f"release{n}").touch()


def queued(server: Server, model: str, depth: int) -> None:
    wait_for(lambda: metric(server, "mlport_queue_depth", model=model) == depth, 30, f"queue depth {depth}")


def grpc_infer(server: Server, model: str, i: int, timeout: float | None = None) -> pb.ModelInferResponse:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name=model, id=str(i))
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
        request.raw_input_contents.append(np.array([[i]], dtype=np.float32).tobytes())
        assert tensor.name == "x"
        return stub.ModelInfer(request, timeout=timeout)


def test_a_full_queue_refuses_at_once_with_retry_after(server: Server) -> None:
    bg = Background()
    release = block(server, bg, "slow", 1)
    try:
        formed = time.monotonic()  # the queue forms after this
        for i in (101, 102, 103):
            bg.post(server, "slow", i)
        queued(server, "slow", 3)
        started = time.monotonic()
        r = httpx.post(server.url + "/v2/models/slow/infer", json=body(104), timeout=10)
        assert time.monotonic() - started < 5
        assert r.status_code == 503, r.text
        # whole seconds, from the time the 3 waiting take to drain at the queue's pace (known so far: the one
        # slot held at least since the queue formed: this model's first queue) to twice that; at least 1
        most = max(1, math.ceil(2 * 3 * (time.monotonic() - formed)))
        assert 1 <= int(r.headers["retry-after"]) <= most
        assert "queue is full" in r.json()["error"]
        with pytest.raises(grpc.RpcError) as info:
            grpc_infer(server, "slow", 105)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "queue is full" in (info.value.details() or "")
        trailers = dict(info.value.trailing_metadata() or ())
        assert 1 <= int(trailers["retry-after"]) <= max(1, math.ceil(2 * 3 * (time.monotonic() - formed)))
        assert int(trailers["grpc-retry-pushback-ms"]) == 1000 * int(trailers["retry-after"])
        # a full queue is not "not ready", and live answers
        assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 200
        assert httpx.get(server.url + "/v2/health/live", timeout=5).status_code == 200
    finally:
        release()
    bg.join()
    assert [bg.answers[i].status_code for i in (101, 102, 103)] == [200, 200, 200]
    assert 104 not in calls(server) and 105 not in calls(server)
    assert metric(server, "mlport_refused_requests_total", model="slow", version="1", reason="queue_full") == 2
    assert metric(server, "mlport_refusal_duration_seconds_count", model="slow", version="1") == 2
    assert metric(server, "mlport_queue_depth", model="slow") == 0


def test_an_expired_deadline_never_reaches_the_model(server: Server) -> None:
    bg = Background()
    before = metric(server, "mlport_expired_requests_total", model="slow")
    release = block(server, bg, "slow", 2)
    try:
        r = httpx.post(server.url + "/v2/models/slow/infer", json=body(201, timeout=200_000), timeout=10)
        assert r.status_code == 504, r.text
        assert "deadline" in r.json()["error"]
        r = httpx.post(server.url + "/v2/models/slow/infer", json=body(202), timeout=10,
                       headers={"X-Request-Timeout": "0.2"})
        assert r.status_code == 504, r.text
        with pytest.raises(grpc.RpcError) as info:
            grpc_infer(server, "slow", 203, timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        bad = httpx.post(server.url + "/v2/models/slow/infer", json=body(204), headers={"X-Request-Timeout": "soon"})
        assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]
        # the describe/eval and TF Serving routes take the same header
        r = httpx.post(server.url + "/models/slow/eval", json={"x": [[206.0]]}, timeout=10,
                       headers={"X-Request-Timeout": "0.2"})
        assert r.status_code == 504, r.text
        r = httpx.post(server.url + "/v1/models/slow:predict", json={"instances": [[207.0]]}, timeout=10,
                       headers={"X-Request-Timeout": "0.2"})
        assert r.status_code == 504, r.text
    finally:
        release()
    bg.join()
    # one more request runs after the blocker: the expired ones would have run before it
    assert httpx.post(server.url + "/v2/models/slow/infer", json=body(205), timeout=30).status_code == 200
    seen = calls(server)
    assert 205 in seen and not {201, 202, 203, 204, 206, 207} & set(seen)
    expired = metric(server, "mlport_expired_requests_total", model="slow") - before
    cancelled = metric(server, "mlport_cancelled_requests_total", model="slow")
    assert expired >= 4 and expired + cancelled >= 5  # gRPC's own deadline may end the call first: cancelled


def test_a_batched_request_past_its_deadline_is_left_out_of_its_batch(server: Server) -> None:
    bg = Background()
    release = block(server, bg, "batched", 3)
    try:
        r = httpx.post(server.url + "/v2/models/batched/infer", json=body(301, timeout=200_000), timeout=10)
        assert r.status_code == 504, r.text
        bg.post(server, "batched", 302)
    finally:
        release()
    bg.join()
    assert bg.answers[302].status_code == 200
    assert 301 not in calls(server) and 302 in calls(server)


def test_a_client_gone_while_queued_is_never_computed(server: Server) -> None:
    bg = Background()
    before = metric(server, "mlport_cancelled_requests_total", model="slow")
    release = block(server, bg, "slow", 4)
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.url + "/v2/models/slow/infer", json=body(401), timeout=0.5)
        wait_for(lambda: metric(server, "mlport_cancelled_requests_total", model="slow") == before + 1, 30,
                 "the server to notice the client left")
        queued(server, "slow", 0)
    finally:
        release()
    bg.join()
    assert httpx.post(server.url + "/v2/models/slow/infer", json=body(402), timeout=30).status_code == 200
    assert 401 not in calls(server) and 402 in calls(server)


def test_high_priority_jumps_the_queue(server: Server) -> None:
    bg = Background()
    release = block(server, bg, "slow", 5)
    try:
        bg.post(server, "slow", 501)
        queued(server, "slow", 1)
        bg.post(server, "slow", 502, priority=2)
        queued(server, "slow", 2)
        bg.post(server, "slow", 503, priority=1)
        queued(server, "slow", 3)
        # at a full queue, a high-priority request takes the place of the newest normal one
        bg.post(server, "slow", 504, priority=1)
        wait_for(lambda: 502 in bg.answers, 30, "the newest normal request to be refused")
        assert bg.answers[502].status_code == 503
    finally:
        release()
    bg.join()
    seen = calls(server)
    order = seen[seen.index(-5) + 1:]
    assert order[:3] == [503, 504, 501], seen
    assert 502 not in seen
    bad = httpx.post(server.url + "/v2/models/slow/infer", json=body(505, priority=7), timeout=10)
    assert bad.status_code == 400 and "priority" in bad.json()["error"]


def test_server_wide_flags_429_and_queue_timeout(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    (repo / "slow" / "1").mkdir(parents=True)
    (repo / "slow" / "1" / "model.py").write_text(MODEL)
    (repo / "slow" / "model.yaml").write_text("trusted: true\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    server = start_server(repo, "--poll-interval", "0", "--max-concurrency", "1", "--max-queue", "1",
                          "--queue-timeout", "3", "--overload-status", "429", log_dir=logs,
                          env={"OVERLOAD_CALLS": str(tmp_path / "calls.log")})
    bg = Background()
    try:
        release = block(server, bg, "slow", 6)
        try:
            bg.post(server, "slow", 601)  # waits 3 s in the queue, then is refused unrun
            queued(server, "slow", 1)
            r = httpx.post(server.url + "/v2/models/slow/infer", json=body(602), timeout=10)
            assert r.status_code == 429 and r.headers["retry-after"] and "queue is full" in r.json()["error"]
            with pytest.raises(grpc.RpcError) as info:
                grpc_infer(server, "slow", 603)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            wait_for(lambda: 601 in bg.answers, 30, "the queued request to time out")
            assert bg.answers[601].status_code == 429 and "queue_timeout" in bg.answers[601].json()["error"]
        finally:
            release()
        bg.join()
        assert not {601, 602, 603} & set(calls(server))
        assert metric(server, "mlport_refused_requests_total", model="slow", reason="queue_full") == 2
        assert metric(server, "mlport_refused_requests_total", model="slow", reason="queue_timeout") == 1
    finally:
        server.stop()
