"""The back-off schedule, and its use for a replica slot's restarts: 1 s doubling to 30 s, back to 1 s after 60 s up."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlport.core.backoff import Backoff
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


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    b = Backoff(2.0, 60.0)
    now = 100.0
    delays = []
    for _ in range(7):
        due = b.failed(now)
        delays.append(due - now)
        now = due
    assert delays == [2, 4, 8, 16, 32, 60, 60]
    b.reset()
    assert b.failed(now) == now + 2.0


def test_backoff_resets_after_a_long_enough_run() -> None:
    b = Backoff(1.0, 30.0, reset_after_s=60.0)
    assert b.failed(10.0, up_since=9.0) == 11.0
    assert b.failed(12.0, up_since=11.0) == 14.0
    assert b.failed(100.0, up_since=39.0) == 101.0  # up 61 s: from the start again
    assert b.failed(102.0, up_since=0.0) == 104.0  # never started (0): no reset


@pytest.mark.parametrize(("start", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_refuses_a_bad_schedule(start: float, cap: float) -> None:
    with pytest.raises(ValueError, match="back-off needs"):
        Backoff(start, cap)
