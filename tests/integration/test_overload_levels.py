"""More priority levels against a real server: ``priority_levels`` in ``model.yaml`` orders the queue by level, a
level's own ``priority_queue_policy`` bounds its requests, and a Triton ``config.pbtxt`` queue policy reaches the
model's gate (its levels and its bounded queue)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.builders import scale_onnx
from tests.conftest import Server
from tests.integration.test_overload import Background, block, body, calls, start_recording
from tests.waiting import wait_for

TRITON = """
name: "triton"
platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: [3] }
output { name: "y" data_type: TYPE_FP32 dims: [3] }
dynamic_batching {
  priority_levels: 4
  default_priority_level: 4
  default_queue_policy { max_queue_size: 16 default_timeout_microseconds: 5000000 }
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("levels")
    scale_onnx(root / "models" / "triton" / "1" / "model.onnx", 2.0)
    (root / "models" / "triton" / "config.pbtxt").write_text(TRITON)
    proc = start_recording(root, {"levels": "max_concurrency: 1\nmax_queue: 8\npriority_levels: 3\n"
                                            "default_priority_level: 2\n"
                                            "priority_queue_policy: {1: {max_queue: 1}}\n"})
    try:
        yield proc
    finally:
        proc.stop()


def test_three_levels_run_in_order(server: Server) -> None:
    bg = Background()
    go = block(server, bg, "levels", 1)
    try:
        for i, level in ((1, 3), (2, 0), (3, 1), (4, 2)):  # 0: the default level (2)
            bg.post(server, "levels", i, priority=level)
            wait_for(lambda i=i: server_depth(server) == i, 30, f"request {i} queued")
        r = httpx.post(f"{server.url}/v2/models/levels/infer", json=body(9, priority=4), timeout=30)
        assert r.status_code == 400 and "1 (the highest) to 3" in r.json()["error"]
    finally:
        go()
    bg.join()
    seen = calls(server)
    assert seen[seen.index(-1) + 1:] == [3, 2, 4, 1]
    assert all(bg.answers[i].status_code == 200 for i in (1, 2, 3, 4))


def test_a_level_with_a_bound_of_its_own_refuses_while_the_others_wait(server: Server) -> None:
    bg = Background()
    go = block(server, bg, "levels", 2)
    try:
        bg.post(server, "levels", 11, priority=1)
        wait_for(lambda: server_depth(server) == 1, 30, "the first top-level request queued")
        r = httpx.post(f"{server.url}/v2/models/levels/infer", json=body(12, priority=1), timeout=30)
        assert r.status_code == 503, r.text
        assert "queue for priority level 1 is full (1 requests of that level waiting)" in r.json()["error"]
        assert int(r.headers["retry-after"]) >= 1
        bg.post(server, "levels", 13)  # the default level has room: the queue as a whole is not full
        wait_for(lambda: server_depth(server) == 2, 30, "a default-level request queued")
    finally:
        go()
    bg.join()
    seen = calls(server)
    assert seen[seen.index(-2) + 1:] == [11, 13]
    assert bg.answers[11].status_code == bg.answers[13].status_code == 200


def server_depth(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("mlport_queue_depth{") and 'model="levels"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_triton_queue_policy_reaches_the_gate(server: Server) -> None:
    x = np.ones((1, 3), np.float32).tolist()
    doc = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": x}]}
    r = httpx.post(f"{server.url}/v2/models/triton/infer", json={**doc, "parameters": {"priority": 4}}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{server.url}/v2/models/triton/infer", json={**doc, "parameters": {"priority": 5}}, timeout=30)
    assert r.status_code == 400 and "1 (the highest) to 4" in r.json()["error"]
