"""The gateway's per-deployment queue against a real hub: a full queue refuses with Retry-After, a request past
its deadline or whose client left is never sent, priority reorders, queued requests scale the deployment up to
max_replicas before it refuses, the hub's metrics count each case, and a deployment without limits is as before.

The model is a trusted Python model that writes each request's id to a file as it computes it, so what reached
a replica is known exactly; a request with a negative id holds its replica until the test creates its release
file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hubutil import ADMIN_PASSWORD, HubProc, cli, ready_versions, start_hub, wait_for
from tests.integration import test_overload as overload
from tests.integration.test_overload import MODEL, body  # the recording, blocking model and its request

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProc]:
    root = tmp_path_factory.mktemp("gate")
    proc = start_hub(root / "hub", env={"OVERLOAD_CALLS": str(root / "calls.log")})
    try:
        admin = proc.client(proc.login())
        assert admin.post("/api/v1/models", json={"name": "slow"}).status_code == 201
        r = admin.post("/api/v1/models/slow/versions", params={"filename": "model.py"}, content=MODEL.encode())
        assert r.status_code == 201, r.text
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def admin(hub: HubProc) -> Iterator[httpx.Client]:
    with hub.client(hub.login()) as client:
        yield client


def deploy(admin: httpx.Client, name: str, **policy: Any) -> None:
    r = admin.post("/api/v1/deployments", json={"name": name, "model": "slow", "trusted": True, **policy})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(admin, name).get(1), 120, f"deployment {name} to be ready")


def calls(hub: HubProc) -> list[int]:
    path = hub.data_dir.parent / "calls.log"
    return [int(v) for v in path.read_text().split()] if path.exists() else []


def release(hub: HubProc, n: int) -> None:
    (hub.data_dir.parent / f"release{n}").touch()


def metric(hub: HubProc, name: str, **labels: str) -> float:
    return overload.metric(hub, name, **labels)  # type: ignore[arg-type]  # it reads the url only


class Background(overload.Background):
    """Requests through the gateway sent from threads; their answers kept by id."""

    def __init__(self, hub: HubProc, token: str) -> None:
        super().__init__()
        self.hub = hub
        self.headers = {"authorization": f"Bearer {token}"}

    def send(self, deployment: str, i: int, wait: float = 60, headers: dict[str, str] | None = None,
             **params: object) -> None:
        def run() -> None:
            with contextlib.suppress(httpx.TimeoutException):
                self.answers[i] = httpx.post(f"{self.hub.url}/deployments/{deployment}/v2/models/{deployment}/infer",
                                             json=body(i, **params), timeout=wait,
                                             headers={**self.headers, **(headers or {})})

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)


def block(hub: HubProc, bg: Background, deployment: str, n: int) -> Callable[[], None]:
    """Occupy one replica of ``deployment`` with a blocker (id -n) until the returned function releases it."""
    bg.send(deployment, -n)
    wait_for(lambda: -n in calls(hub), 30, f"blocker {n} to reach a replica")
    return lambda: release(hub, n)


def depth(hub: HubProc, deployment: str) -> float:
    return metric(hub, "mlport_hub_queue_depth", deployment=deployment)


def after(hub: HubProc, n: int) -> list[int]:
    """The ids computed after blocker -n."""
    seen = calls(hub)
    return seen[seen.index(-n) + 1:]


def test_a_full_queue_refuses_and_priority_goes_first(hub: HubProc, admin: httpx.Client) -> None:
    deploy(admin, "gated", max_concurrency=1, max_queue=2)
    d = admin.get("/api/v1/deployments/gated").json()
    assert d["policy"]["max_concurrency"] == 1 and d["policy"]["max_queue"] == 2
    bg = Background(hub, hub.login())
    go = block(hub, bg, "gated", 1)
    try:
        bg.send("gated", 10)
        wait_for(lambda: depth(hub, "gated") == 1, 30, "request 10 queued")
        bg.send("gated", 11)
        wait_for(lambda: depth(hub, "gated") == 2, 30, "two requests queued")
        started = time.monotonic()
        r = httpx.post(f"{hub.url}/deployments/gated/v2/models/gated/infer", json=body(12), headers=bg.headers,
                       timeout=30)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "deployment 'gated' is overloaded: its queue is full" in r.json()["error"]
        assert time.monotonic() - started < 10  # refused at once, not after waiting
        # a high-priority request at the full queue takes the place of the newest normal one (11)
        bg.send("gated", 13, headers={"x-request-priority": "1"})
        wait_for(lambda: 11 in bg.answers, 30, "the newest normal request to be refused")
        assert bg.answers[11].status_code == 503 and "higher priority" in bg.answers[11].json()["error"]
    finally:
        go()
    bg.join()
    assert bg.answers[13].status_code == 200 and bg.answers[10].status_code == 200
    assert after(hub, 1)[:2] == [13, 10]
    assert 11 not in calls(hub) and 12 not in calls(hub)
    assert metric(hub, "mlport_hub_refused_requests_total", deployment="gated", reason="queue_full") == 2
    assert depth(hub, "gated") == 0


def test_a_request_past_its_deadline_is_never_sent(hub: HubProc, admin: httpx.Client) -> None:
    deploy(admin, "deadline", max_concurrency=1, max_queue=8)
    bg = Background(hub, hub.login())
    go = block(hub, bg, "deadline", 2)
    try:
        bg.send("deadline", 20, headers={"x-request-timeout": "0.3"})
        bg.send("deadline", 21, timeout=300_000)  # the OIP parameter, microseconds
        bg.send("deadline", 22, headers={"x-request-timeout": "60"})  # in time: sent with what is left
        wait_for(lambda: 20 in bg.answers and 21 in bg.answers, 30, "the deadlines to pass")
        for i in (20, 21):
            assert bg.answers[i].status_code == 504, bg.answers[i].text
            assert "deadline" in bg.answers[i].json()["error"]
        # the queue timeout: refused unsent, 503 (or 429 when so configured)
        r = admin.post("/api/v1/deployments/deadline/scale", json={"queue_timeout_s": 0.3, "overload_status": 429})
        assert r.status_code == 200, r.text
        bg.send("deadline", 23)
        wait_for(lambda: 23 in bg.answers, 30, "the queue timeout")
        assert bg.answers[23].status_code == 429 and "queue_timeout" in bg.answers[23].json()["error"]
        assert "retry-after" in bg.answers[23].headers
    finally:
        go()
    bg.join()
    assert bg.answers[22].status_code == 200
    seen = calls(hub)
    assert 22 in seen and not {20, 21, 23} & set(seen)
    assert metric(hub, "mlport_hub_expired_requests_total", deployment="deadline") == 2
    assert metric(hub, "mlport_hub_refused_requests_total", deployment="deadline", reason="queue_timeout") == 1


def test_a_client_that_leaves_the_queue_is_never_sent(hub: HubProc, admin: httpx.Client) -> None:
    deploy(admin, "leaving", max_concurrency=1, max_queue=8)
    bg = Background(hub, hub.login())
    go = block(hub, bg, "leaving", 3)
    try:
        bg.send("leaving", 30, wait=0.5)  # the client gives up and closes its connection
        wait_for(lambda: metric(hub, "mlport_hub_cancelled_requests_total", deployment="leaving") == 1, 30,
                 "the hub to see the client leave")
        bg.send("leaving", 31)
        wait_for(lambda: depth(hub, "leaving") == 1, 30, "request 31 queued")
    finally:
        go()
    bg.join()
    assert bg.answers[31].status_code == 200
    assert 30 not in calls(hub) and 31 in calls(hub)
    assert metric(hub, "mlport_hub_queue_duration_seconds_count", deployment="leaving") >= 3


def test_queued_requests_scale_up_then_refuse_at_max_replicas(hub: HubProc, admin: httpx.Client) -> None:
    deploy(admin, "scaling", max_concurrency=1, max_queue=3, min_replicas=1, max_replicas=2, target_inflight=1,
           scale_up_after_s=0.5, scale_down_after_s=600)
    bg = Background(hub, hub.login())
    block(hub, bg, "scaling", 5)
    try:
        bg.send("scaling", 40)
        wait_for(lambda: depth(hub, "scaling") == 1, 30, "request 40 queued")
        # the queued request is load: a second replica starts and takes it while the first is still held
        wait_for(lambda: ready_versions(admin, "scaling").get(1) == 2, 120, "a second replica")
        wait_for(lambda: 40 in bg.answers, 30, "request 40 answered by the new replica")
        assert bg.answers[40].status_code == 200 and -5 not in bg.answers  # the first replica is still held
        # at max_replicas with both replicas held and the queue full, the next one is refused
        block(hub, bg, "scaling", 6)
        for i in (41, 42, 43):
            bg.send("scaling", i)
        wait_for(lambda: depth(hub, "scaling") == 3, 30, "three requests queued")
        r = httpx.post(f"{hub.url}/deployments/scaling/v2/models/scaling/infer", json=body(44), headers=bg.headers,
                       timeout=30)
        assert r.status_code == 503 and "retry-after" in r.headers, r.text
        assert ready_versions(admin, "scaling").get(1) == 2
    finally:
        release(hub, 5)
        release(hub, 6)
    bg.join()
    assert all(bg.answers[i].status_code == 200 for i in (40, 41, 42, 43))
    assert 44 not in calls(hub)
    assert metric(hub, "mlport_hub_refused_requests_total", deployment="scaling", reason="queue_full") == 1


def test_a_deployment_without_limits_has_no_queue(hub: HubProc, admin: httpx.Client) -> None:
    deploy(admin, "free")
    assert admin.get("/api/v1/deployments/free").json()["policy"]["max_concurrency"] is None
    bg = Background(hub, hub.login())
    go = block(hub, bg, "free", 7)
    try:
        for i in range(50, 56):
            bg.send("free", i)
        # nothing waits at the hub: every request reaches the replica (which runs them beside the blocker)
        wait_for(lambda: set(range(50, 56)) <= set(calls(hub)), 30, "every request computed")
    finally:
        go()
    bg.join()
    assert all(bg.answers[i].status_code == 200 for i in range(50, 56))
    assert 'deployment="free"' not in httpx.get(hub.url + "/metrics", timeout=10).text.split(
        "mlport_hub_queue_depth")[-1]
    # limits set and removed again with the scale call
    r = admin.post("/api/v1/deployments/free/scale", json={"max_queue": 4})
    assert r.status_code == 400 and "max_concurrency" in r.json()["error"]


def test_the_cli_sets_shows_and_removes_the_limits(hub: HubProc, admin: httpx.Client, tmp_path: Path) -> None:
    r = cli(tmp_path, "login", "--hub", hub.url, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    r = cli(tmp_path, "deploy", "by-cli", "--model", "slow", "--trusted", "--max-concurrency", "2", "--max-queue", "4",
            "--queue-timeout", "3", "--overload-status", "429")
    assert r.returncode == 0, r.stderr
    assert "limits: 2 at once per replica, queue 4, queue timeout 3 s, refusals 429" in r.stdout
    policy = admin.get("/api/v1/deployments/by-cli").json()["policy"]
    assert (policy["max_concurrency"], policy["max_queue"], policy["queue_timeout_s"]) == (2, 4, 3.0)
    r = cli(tmp_path, "scale", "by-cli", "--max-queue", "8")
    assert r.returncode == 0 and "queue 8" in r.stdout, r.stderr
    r = cli(tmp_path, "scale", "by-cli", "--no-limits")
    assert r.returncode == 0 and "limits:" not in r.stdout, r.stderr
    assert admin.get("/api/v1/deployments/by-cli").json()["policy"]["max_concurrency"] is None
    r = cli(tmp_path, "scale", "by-cli", "--max-queue", "8")  # a queue needs a concurrency limit
    assert r.returncode == 1 and "max_concurrency" in r.stderr
    assert admin.delete("/api/v1/deployments/by-cli").status_code in (200, 204)
