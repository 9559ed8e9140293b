"""The manager's loads on demand, without a server: one load for many waiting requests, hot reload of a
lazy model once it is loaded, and what the metrics hook hears."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlport.errors import ModelNotReady
from mlport.formats.registry import default_registry
from mlport.runtime.manager import ColdModel, ModelManager, VersionState
from mlport.runtime.repository import Repository
from tests.builders import scale_onnx


class Recorder:
    """Keeps what the manager reports (a real observer: the metrics one keeps the same in Prometheus)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.hits = 0
        self.in_use = (0, 0)

    def hit(self) -> None:
        self.hits += 1

    def miss(self, model: str) -> None:
        self.events.append(("miss", model))

    def loaded(self, model: str) -> None:
        self.events.append(("loaded", model))

    def cold_loaded(self, model: str, seconds: float) -> None:
        self.events.append(("cold", model))

    def evicted(self, model: str, versions: tuple[int, ...]) -> None:
        self.events.append(("evicted", model))

    def usage(self, models: int, memory_bytes: int) -> None:
        self.in_use = (models, memory_bytes)


def test_lazy_models_load_once_for_many_requests_and_follow_new_versions(tmp_path: Path) -> None:
    root = tmp_path / "m"
    scale_onnx(root / "s" / "1" / "model.onnx", 2.0)
    scale_onnx(root / "t" / "1" / "model.onnx", 3.0)

    async def scenario() -> None:
        fmts = default_registry()
        seen = Recorder()
        manager = ModelManager(Repository(root, fmts), fmts, lazy=True, observer=seen)
        await manager.sync()
        assert manager.ready(strict=True)
        assert [v.state for v in manager.status("s").versions] == [VersionState.NOT_LOADED]
        with pytest.raises(ColdModel):
            manager.acquire("s")
        held = await asyncio.gather(*(manager.acquire_cold("s") for _ in range(20)))
        assert {lv.version for lv in held} == {1} and len({id(lv) for lv in held}) == 1
        assert seen.events.count(("loaded", "s")) == 1 and seen.events.count(("cold", "s")) == 1
        assert seen.events.count(("miss", "s")) == 20 and seen.hits == 0
        for lv in held:
            manager.release(lv)
        assert manager.acquire("s").memory_bytes > 0 and seen.hits == 1
        assert seen.in_use[0] == 1
        # a loaded lazy model follows its files like any other; the model not asked for stays unloaded
        scale_onnx(root / "s" / "2" / "model.onnx", 4.0)
        scale_onnx(root / "t" / "2" / "model.onnx", 5.0)
        await manager.sync()
        assert manager.acquire("s").version == 2
        assert [v.state for v in manager.status("t").versions] == [VersionState.NOT_LOADED]
        assert (await manager.acquire_cold("t")).version == 2
        await manager.close()

    asyncio.run(scenario())


def test_a_lazy_model_that_fails_to_load_says_why_and_is_not_retried_by_every_request(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "bad" / "1").mkdir(parents=True)
    (root / "bad" / "1" / "model.onnx").write_bytes(b"not a model")

    async def scenario() -> None:
        fmts = default_registry()
        seen = Recorder()
        manager = ModelManager(Repository(root, fmts), fmts, lazy=True, observer=seen)
        await manager.sync()
        with pytest.raises(ModelNotReady, match="failed to load"):
            await manager.acquire_cold("bad")
        status = manager.status("bad").versions[0]
        assert status.state is VersionState.UNAVAILABLE and "could not load" in status.reason
        with pytest.raises(ModelNotReady) as caught:  # the next request is told, no second load
            manager.acquire("bad")
        assert not isinstance(caught.value, ColdModel)
        assert ("loaded", "bad") not in seen.events
        await manager.close()

    asyncio.run(scenario())
