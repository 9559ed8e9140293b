"""Controller bookkeeping without model processes: failing fetches, bad records, scale to zero at rest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.controller import Controller
from mlport.deploy.deployments import DeploymentSpec
from mlport.deploy.target import Target
from mlport.errors import MlportError, ModelNotReady
from tests.hubutil import until

TO_ZERO = ScalePolicy(min_replicas=0, max_replicas=2, scale_to_zero=True)


class State:
    """A deployment store in memory."""

    def __init__(self, *records: DeploymentSpec) -> None:
        self.records = list(records)
        self.fail: Exception | None = None
        self.reads = 0

    def deployments(self) -> list[DeploymentSpec]:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return list(self.records)




def test_errors_stay_with_their_deployment(tmp_path: Path) -> None:
    artifact = tmp_path / "idle.onnx"
    artifact.write_bytes(b"not loaded while scaled to zero")
    calls: list[tuple[str, int]] = []

    def fetch(model: str, version: int) -> Path:
        calls.append((model, version))
        if model == "missing":
            raise MlportError("model 'missing' has no version 3")
        if model == "gone":
            return tmp_path / "nowhere.onnx"
        return artifact

    state = State(
        DeploymentSpec("broken", Target("missing", 3), ScalePolicy()),
        DeploymentSpec("vanished", Target("gone", 1), ScalePolicy()),
        DeploymentSpec("bad", Target("iris", 1, "canary", percent=5), ScalePolicy()),
        DeploymentSpec("idle", Target("iris", 1), TO_ZERO),
        DeploymentSpec("badpolicy", Target("iris", 1), ScalePolicy(min_replicas=0)),
    )
    ctl = Controller(state=state, fetch=fetch, run_dir=tmp_path / "run", interval_s=0.05)

    async def scenario() -> None:
        try:
            await until(lambda: ctl.replicas("idle", 1) is not None
                        and ctl.status("broken")["versions"][0]["last_error"] is not None
                        and ctl.status("vanished")["versions"][0]["last_error"] is not None, ctl.reconcile)
            broken = ctl.status("broken")
            assert broken["error"] is None
            assert broken["versions"][0]["state"] == "fetching"
            assert "has no version 3" in broken["versions"][0]["last_error"]
            assert ctl.replicas("broken", 3) is None
            assert "does not exist" in ctl.status("vanished")["versions"][0]["last_error"]
            assert "needs a candidate" in ctl.status("bad")["error"]
            assert ctl.status("bad")["versions"] == []
            assert "scale_to_zero" in ctl.status("badpolicy")["error"]
            idle = ctl.status("idle")
            assert idle["error"] is None
            assert idle["versions"][0]["replicas"] == []
            assert (idle["versions"][0]["state"], idle["versions"][0]["desired"], idle["versions"][0]["pids"]) == \
                ("running", 0, [])
            rs = ctl.replicas("idle", 1)
            assert rs is not None and rs.desired == 0 and rs.pids() == []
            # a failed fetch is retried with back-off, not on every pass
            assert calls.count(("missing", 3)) <= 2
            # asking for a version nobody deploys: 503 after the wait
            with pytest.raises(ModelNotReady, match="not running"):
                await ctl.ensure_ready("nobody", 1, timeout_s=0.1)
        finally:
            await ctl.stop()

    asyncio.run(scenario())


def test_the_loop_survives_a_failing_state_read(tmp_path: Path) -> None:
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"x")
    state = State(DeploymentSpec("idle", Target("iris", 2), TO_ZERO))
    state.fail = RuntimeError("database is locked")
    ctl = Controller(state=state, fetch=lambda m, v: artifact, run_dir=tmp_path / "run", interval_s=0.05)

    async def scenario() -> None:
        await ctl.start()
        try:
            await until(lambda: state.reads >= 2 and ctl.loop_error is not None)
            assert "database is locked" in (ctl.loop_error or "")
            state.fail = None
            await until(lambda: ctl.replicas("idle", 2) is not None and ctl.loop_error is None)
            # the deployment goes away: its entries go too
            state.records = []
            await until(lambda: ctl.replicas("idle", 2) is None)
            assert ctl.status("idle") == {"deployment": "idle", "error": None, "versions": []}
        finally:
            await ctl.stop()
        assert ctl.replicas("idle", 2) is None

    asyncio.run(scenario())


def test_a_new_model_under_the_same_key_starts_over(tmp_path: Path) -> None:
    paths = {"a": tmp_path / "a.onnx", "b": tmp_path / "b.onnx"}
    for p in paths.values():
        p.write_bytes(b"x")
    state = State(DeploymentSpec("d", Target("a", 1), TO_ZERO))
    ctl = Controller(state=state, fetch=lambda m, v: paths[m], run_dir=tmp_path / "run", interval_s=0.05)

    async def scenario() -> None:
        try:
            await until(lambda: ctl.replicas("d", 1) is not None, ctl.reconcile)
            first = ctl.replicas("d", 1)
            assert first is not None and (first.path / "1" / "a.onnx").read_bytes() == b"x"
            state.records = [DeploymentSpec("d", Target("b", 1), TO_ZERO)]
            await until(lambda: (rs := ctl.replicas("d", 1)) is not None and rs is not first
                        and (rs.path / "1" / "b.onnx").exists(), ctl.reconcile)
            await until(lambda: first.closed)
            assert ctl.status("d")["versions"][0]["model"] == "b"
        finally:
            await ctl.stop()

    asyncio.run(scenario())
