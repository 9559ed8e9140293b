from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlport.errors import InvalidInput, ModelNotFound, ModelNotReady
from mlport.formats.registry import default_registry
from mlport.runtime.manager import ModelManager, VersionState
from mlport.runtime.repository import Repository
from mlport.settings import load_settings
from tests.builders import scale_onnx


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http_port: 9000\nhost: 0.0.0.0\npoll-interval-s: 2\n")
    monkeypatch.setenv("MLPORT_HTTP_PORT", "9100")
    s = load_settings({"host": None, "name": "m"}, cfg)
    assert (s.http_port, s.host, s.poll_interval_s, s.name) == (9100, "0.0.0.0", 2.0, "m")
    assert load_settings({"http_port": 9200}, cfg).http_port == 9200
    cfg.write_text("nonsense_key: 1\n")
    with pytest.raises(InvalidInput, match="nonsense_key"):
        load_settings({}, cfg)


def test_manager_swaps_and_keeps_serving(tmp_path: Path) -> None:
    root = tmp_path / "m"
    scale_onnx(root / "s" / "1" / "model.onnx", 1.0)

    async def scenario() -> None:
        fmts = default_registry()
        manager = ModelManager(Repository(root, fmts), fmts)
        with pytest.raises(ModelNotFound):
            manager.acquire("s")
        await manager.sync()
        held = manager.acquire("s")
        assert held.version == 1
        scale_onnx(root / "s" / "2" / "model.onnx", 2.0)
        await manager.sync()
        assert manager.acquire("s").version == 2
        # version 1 left service but stays open until its request is released
        assert held.retired and not held.closed
        manager.release(held)
        assert held.closed
        (root / "s" / "3").mkdir()
        (root / "s" / "3" / "model.onnx").write_bytes(b"broken")
        await manager.sync()
        status = {v.version: v for v in manager.status("s").versions}
        assert status[2].state is VersionState.READY and status[3].state is VersionState.UNAVAILABLE
        assert manager.acquire("s").version == 2
        with pytest.raises(ModelNotReady):
            manager.acquire("s", 3)
        with pytest.raises(ModelNotFound):
            manager.acquire("s", "x")
        await manager.unload_model("s")
        with pytest.raises(ModelNotReady):
            manager.acquire("s")
        await manager.close()

    asyncio.run(scenario())


def test_memory_budget_reads_sizes_and_refuses_nonsense() -> None:
    assert load_settings({"memory_budget": "2GiB"}).memory_budget == 2 * 1024**3
    assert load_settings({"memory_budget": "512MiB", "lazy": True}).memory_budget == 512 * 1024**2
    assert load_settings({}).memory_budget is None
    with pytest.raises(InvalidInput, match="memory_budget"):
        load_settings({"memory_budget": "lots"})
    with pytest.raises(InvalidInput, match="max_concurrent_loads"):
        load_settings({"max_concurrent_loads": 0})
