"""The restart back-off of a replica slot: 1 s doubling to 30 s, back to 1 s after 60 s up."""

from __future__ import annotations

from pathlib import Path

from mlport.deploy.replicas import ReplicaSet, _Replica


def test_restart_backoff_doubles_caps_and_resets(tmp_path: Path) -> None:
    rs = ReplicaSet("d/v1", tmp_path / "m.onnx", name="d", log_dir=tmp_path)
    slot = _Replica(0, tmp_path / "r0.log")
    delays = []
    now = 1000.0
    for _ in range(8):
        slot.started_at = now  # crashed right after each start
        now += 1.0
        rs._schedule_restart(slot, now)
        assert slot.next_start is not None
        delays.append(slot.next_start - now)
        now = slot.next_start
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    # up for a minute before the next crash: the first delay again
    slot.started_at = now
    now += 61.0
    rs._schedule_restart(slot, now)
    assert slot.next_start == now + 1.0
    slot.started_at = now + 1.0  # restarted, crashed again half a second later
    rs._schedule_restart(slot, now + 1.5)
    assert slot.next_start == now + 1.5 + 2.0
