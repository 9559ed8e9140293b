"""Replica sets and the controller with real ``mlport serve`` processes on 127.0.0.1 (the iris ONNX model)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.controller import SHADOW_NICE, Controller
from mlport.deploy.deployments import DeploymentSpec
from mlport.deploy.replicas import Endpoint, ReplicaSet
from mlport.deploy.target import Target
from mlport.errors import ModelNotReady
from tests import hubutil
from tests.builders import iris_onnx

pytestmark = pytest.mark.slow

READY_S = 120.0
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("models")
    return {1: iris_onnx(root / "v1" / "iris.onnx"), 2: iris_onnx(root / "v2" / "iris.onnx", c=0.5)}


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def until(check: Callable[[], bool], step: Callable[[], Awaitable[None]] | None = None,
                timeout: float = READY_S, what: str = "condition") -> None:
    await hubutil.until(check, step, timeout, what, every=0.05)


async def infer(ep: Endpoint, name: str) -> dict[str, object]:
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        with ep.track():
            resp = await client.post(f"{ep.url}/v2/models/{name}/infer", json=body)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["model_name"] == name
    assert {o["name"] for o in doc["outputs"]} == {"label", "probabilities"}
    return doc  # type: ignore[no-any-return]


def test_replica_set_scales_up_and_down(tmp_path: Path, models: dict[int, Path]) -> None:
    seen: set[int] = set()

    async def scenario() -> None:
        rs = ReplicaSet("iris/v1", models[1], name="iris", log_dir=tmp_path / "logs")
        try:
            await rs.scale(1)
            assert rs.desired == 1
            assert await rs.wait_ready(READY_S), rs.status()
            first = rs.endpoints()[0]
            await rs.scale(2)
            await until(lambda: rs.ready_count == 2, rs.supervise, what="two ready replicas")
            endpoints = rs.endpoints()
            seen.update(e.pid for e in endpoints)
            assert len({e.pid for e in endpoints}) == 2 and len({e.port for e in endpoints}) == 2
            for ep in endpoints:
                await infer(ep, "iris")
            assert sorted(rs.pids()) == sorted(seen)
            status = rs.status()
            assert (status["desired"], status["ready"], sorted(status["pids"])) == (2, 2, sorted(seen))

            # scale down: the newest goes, after its request in flight finished
            newest = next(e for e in endpoints if e is not first)
            newest.acquire()
            down = asyncio.create_task(rs.scale(1))
            await until(lambda: newest.draining, what="the newest replica to drain")
            assert rs.desired == 1
            assert rs.endpoints() == [first]  # no new requests for the draining replica
            assert alive(newest.pid) and not down.done()
            newest.release()
            await asyncio.wait_for(down, 30)
            assert not alive(newest.pid)
            assert rs.pids() == [first.pid]
            await rs.supervise()
            assert rs.endpoints() == [first]
            await infer(first, "iris")
        finally:
            await rs.close()
        assert rs.pids() == []

    asyncio.run(scenario())
    assert seen and not any(alive(p) for p in seen)
    logs = list((tmp_path / "logs").glob("iris_v1-r*.log"))
    assert len(logs) == 2


def test_a_killed_replica_is_restarted(tmp_path: Path, models: dict[int, Path]) -> None:
    pids: list[int] = []

    async def scenario() -> None:
        rs = ReplicaSet("iris/v1", models[1], name="iris", log_dir=tmp_path / "logs")
        try:
            await rs.scale(1)
            assert await rs.wait_ready(READY_S), rs.status()
            old = rs.endpoints()[0]
            pids.append(old.pid)
            os.kill(old.pid, signal.SIGKILL)
            # out of rotation as soon as the process is gone, without waiting for a supervise step
            await until(lambda: rs.endpoints() == [], timeout=10, what="the dead replica to leave the endpoints")
            assert not old.healthy
            await until(lambda: rs.ready_count == 1, rs.supervise, what="the restarted replica")
            new = rs.endpoints()[0]
            pids.append(new.pid)
            assert new.pid != old.pid
            assert rs.restarts == 1
            assert "SIGKILL" in (rs.last_error or "")
            await infer(new, "iris")
        finally:
            await rs.close()
        assert rs.pids() == []

    asyncio.run(scenario())
    assert not any(alive(p) for p in pids)


class State:
    def __init__(self, *records: DeploymentSpec) -> None:
        self.records = list(records)

    def deployments(self) -> list[DeploymentSpec]:
        return list(self.records)


def test_controller_canary_drop_and_autoscale(tmp_path: Path, models: dict[int, Path]) -> None:
    policy = ScalePolicy(min_replicas=1, max_replicas=2, target_inflight=1.0, scale_up_after_s=0.5,
                         scale_down_after_s=1.5)
    state = State(DeploymentSpec("iris-prod", Target("iris", 1, "canary", candidate=2, percent=20), policy))
    fetched: list[tuple[str, int]] = []

    def fetch(model: str, version: int) -> Path:
        fetched.append((model, version))
        return models[version]

    ctl = Controller(state=state, fetch=fetch, run_dir=tmp_path / "run", interval_s=0.2)
    every: set[int] = set()

    def ready(version: int, n: int = 1) -> bool:
        rs = ctl.replicas("iris-prod", version)
        if rs is not None:
            every.update(rs.pids())
        return rs is not None and rs.ready_count == n

    async def scenario() -> None:
        await ctl.start()
        try:
            await until(lambda: ready(1) and ready(2), what="both versions ready")
            assert sorted(fetched) == [("iris", 1), ("iris", 2)]
            status = ctl.status("iris-prod")
            assert [(v["version"], v["role"], v["ready"]) for v in status["versions"]] == \
                [(1, "primary", 1), (2, "candidate", 1)]
            for version in (1, 2):
                rs = ctl.replicas("iris-prod", version)
                assert rs is not None
                await infer(rs.endpoints()[0], "iris-prod")  # served under the deployment's name

            # the target drops the candidate: its replicas are stopped
            candidate = ctl.replicas("iris-prod", 2)
            assert candidate is not None
            candidate_pids = candidate.pids()
            state.records = [DeploymentSpec("iris-prod", Target("iris", 1), policy)]
            await until(lambda: ctl.replicas("iris-prod", 2) is None, what="the candidate to be dropped")
            await until(lambda: not any(alive(p) for p in candidate_pids), timeout=30, what="candidate pids gone")
            assert [v["version"] for v in ctl.status("iris-prod")["versions"]] == [1]

            # load above target for longer than scale_up_after_s: a second replica
            rs = ctl.replicas("iris-prod", 1)
            assert rs is not None
            ep = rs.endpoints()[0]
            for _ in range(3):
                ep.acquire()
            await until(lambda: rs.desired == 2, timeout=30, what="scale up")
            await until(lambda: ready(1, 2), what="the second replica ready")
            assert ctl.status("iris-prod")["versions"][0]["inflight"] == 3
            for other in rs.endpoints():
                if other is not ep:
                    await infer(other, "iris-prod")
            for _ in range(3):
                ep.release()
            # quiet for scale_down_after_s: back to one
            await until(lambda: rs.desired == 1, timeout=30, what="scale down")
            await until(lambda: len(rs.pids()) == 1, timeout=40, what="the extra replica to stop")
            assert rs.pids() == [ep.pid]
        finally:
            await ctl.stop()
        assert ctl.replicas("iris-prod", 1) is None

    asyncio.run(scenario())
    assert len(every) >= 3
    assert not any(alive(p) for p in every)


def test_controller_scale_to_zero_and_errors(tmp_path: Path, models: dict[int, Path]) -> None:
    broken = tmp_path / "broken" / "iris.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not an ONNX model")
    policy = ScalePolicy(min_replicas=0, max_replicas=1, scale_to_zero=True, scale_up_after_s=0.5,
                         scale_down_after_s=1.5)
    state = State(
        DeploymentSpec("lazy", Target("iris", 1), policy),
        DeploymentSpec("broken", Target("bad", 1), ScalePolicy()),
    )
    ctl = Controller(state=state, fetch=lambda m, v: broken if m == "bad" else models[v], run_dir=tmp_path / "run",
                     interval_s=0.2, ready_timeout_s=60)
    every: set[int] = set()

    async def scenario() -> None:
        await ctl.start()
        try:
            await until(lambda: ctl.replicas("lazy", 1) is not None, what="the lazy set")
            rs = ctl.replicas("lazy", 1)
            assert rs is not None
            for _ in range(3):  # a few passes: nothing starts without a request
                await ctl.reconcile()
            assert (rs.desired, rs.pids()) == (0, [])

            ready = await ctl.ensure_ready("lazy", 1, READY_S)
            assert ready is rs and rs.ready_count == 1
            every.update(rs.pids())
            await infer(rs.endpoints()[0], "lazy")
            # idle for the quiet period: back to zero, process gone
            await until(lambda: rs.desired == 0 and rs.pids() == [], timeout=40, what="scale to zero")
            # and back again
            await ctl.ensure_ready("lazy", 1, READY_S)
            every.update(rs.pids())
            await infer(rs.endpoints()[0], "lazy")

            # the broken model: its error is recorded, the others keep working
            def broken_error() -> str | None:
                versions = ctl.status("broken")["versions"]
                return versions[0]["last_error"] if versions else None

            await until(lambda: broken_error() is not None, timeout=READY_S, what="the broken model's error")
            assert "broken/v1" in (broken_error() or "")
            bad = ctl.replicas("broken", 1)
            assert bad is not None and bad.endpoints() == []
            every.update(bad.pids())
            with pytest.raises(ModelNotReady):
                await ctl.ensure_ready("broken", 1, 0.5)
            assert rs.endpoints()
        finally:
            await ctl.stop()

    asyncio.run(scenario())
    assert not any(alive(p) for p in every)


def test_a_replica_not_ready_in_time_is_stopped_and_retried(tmp_path: Path, models: dict[int, Path]) -> None:
    async def scenario() -> None:
        # a zero readiness timeout: the replica is given up at the first check, before it could have loaded
        rs = ReplicaSet("iris/v1", models[1], name="iris", log_dir=tmp_path / "logs", ready_timeout_s=0.0)
        try:
            await rs.scale(1)
            pid = rs.pids()[0]
            await rs.supervise()
            assert "not ready after 0 s" in (rs.last_error or "")
            assert rs.endpoints() == []
            assert rs.status()["replicas"][0]["state"] == "restarting"
            await until(lambda: not alive(pid), timeout=30, what="the slow replica to be stopped")
            # restarted after the back-off, and given up again
            await until(lambda: rs.restarts >= 1, rs.supervise, timeout=30, what="a restart")
        finally:
            await rs.close()
        assert rs.pids() == []

    asyncio.run(scenario())


def test_a_replica_that_stops_answering_leaves_the_rotation(tmp_path: Path, models: dict[int, Path]) -> None:
    async def scenario() -> None:
        rs = ReplicaSet("iris/v1", models[1], name="iris", log_dir=tmp_path / "logs")
        frozen = 0
        try:
            await rs.scale(1)
            assert await rs.wait_ready(READY_S), rs.status()
            ep = rs.endpoints()[0]
            frozen = ep.pid
            os.kill(frozen, signal.SIGSTOP)  # alive, but its health checks time out
            await until(lambda: rs.endpoints() == [], rs.supervise, timeout=60, what="out of rotation")
            assert "health checks" in (rs.last_error or "")
            assert rs.status()["replicas"][0]["state"] == "unhealthy"
            os.kill(frozen, signal.SIGCONT)
            frozen = 0
            await until(lambda: rs.endpoints() == [ep], rs.supervise, timeout=60, what="back in rotation")
            assert rs.restarts == 0
            await infer(ep, "iris")
        finally:
            if frozen:
                os.kill(frozen, signal.SIGCONT)
            await rs.close()
        assert rs.pids() == []

    asyncio.run(scenario())


def niceness(pid: int) -> set[int]:
    """The niceness of every thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            found.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads niceness from /proc")
def test_shadow_replicas_run_at_a_lower_cpu_priority(tmp_path: Path, models: dict[int, Path]) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    state = State(DeploymentSpec("iris-prod", Target("iris", 1, "shadow", candidate=2), ScalePolicy()))
    ctl = Controller(state=state, fetch=lambda m, v: models[v], run_dir=tmp_path / "run", interval_s=0.2)

    def ready(version: int) -> bool:
        rs = ctl.replicas("iris-prod", version)
        return rs is not None and rs.ready_count == 1

    async def scenario() -> None:
        await ctl.start()
        try:
            await until(lambda: ready(1) and ready(2), what="both versions ready")
            live, shadow = ctl.replicas("iris-prod", 1), ctl.replicas("iris-prod", 2)
            assert live is not None and shadow is not None
            [shadow_pid], [live_pid] = shadow.pids(), live.pids()
            assert niceness(shadow_pid) == {SHADOW_NICE}  # every thread, onnxruntime's and the server's
            assert niceness(live_pid) == {own}
            assert ctl.status("iris-prod")["versions"][1]["nice"] == SHADOW_NICE
            # promoted to live: the same processes get the hub's priority back (when it may raise it)
            state.records = [DeploymentSpec("iris-prod", Target("iris", 2), ScalePolicy())]
            await until(lambda: ctl.replicas("iris-prod", 1) is None, what="version 1 to be dropped")
            if os.geteuid() == 0:
                await until(lambda: niceness(shadow_pid) == {own}, timeout=10, what="the priority raised back")
            # a version that becomes a shadow is lowered at once
            state.records = [DeploymentSpec("iris-prod", Target("iris", 1, "shadow", candidate=2), ScalePolicy())]
            await until(lambda: niceness(shadow_pid) == {SHADOW_NICE}, timeout=10, what="the priority lowered")
        finally:
            await ctl.stop()

    asyncio.run(scenario())
