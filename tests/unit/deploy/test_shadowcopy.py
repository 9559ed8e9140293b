"""The gateway's shadow copies: queued behind the live path, bounded in count and bytes, drops counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mlport.core.sqlitedb import Database
from mlport.deploy.shadow import Reply, ShadowRecorder
from mlport.deploy.shadowcopy import BUSY_CPU, CONCURRENCY, LIVE_BUSY, SAMPLE_S, Pair, ShadowCopies
from mlport.errors import ModelNotReady
from tests.hubutil import until

LIVE = Reply(200, b'{"outputs": []}', "application/json", 0.001)


def test_copies_wait_for_the_live_path_and_drops_are_counted(tmp_path: Path) -> None:
    recorder = ShadowRecorder(Database(tmp_path / "hub.db"))
    sent: list[bytes] = []
    recorded: list[Pair] = []
    gate = asyncio.Event()

    async def send(deployment: str, version: int, out: bytes) -> Reply:
        sent.append(out)
        await gate.wait()
        if out == b"fail":
            raise ModelNotReady("no replica of version 2 is ready")
        return Reply(200, b'{"outputs": []}', "application/json", 0.002)

    async def scenario() -> None:
        copies: ShadowCopies[bytes] = ShadowCopies(send, recorded.extend, recorder, max_pending=8,
                                                   max_pending_bytes=100, max_cpu=None)
        for _ in range(LIVE_BUSY + 1):  # the live path is busy: copies wait in the queue
            copies.live_started()
        for i in range(10):
            copies.offer("d", 1, 2, b"fail" if i == 0 else b"x", 1, LIVE)
        await asyncio.sleep(0.05)
        assert (sent, copies.pending) == ([], 8)
        copies.offer("d", 1, 2, b"big", 200, LIVE)  # beyond the byte bound while others are pending: dropped
        copies.live_ended()  # few enough live requests now: CONCURRENCY copies go out
        await until(lambda: len(sent) == CONCURRENCY, what="copies sent")
        await asyncio.sleep(0.05)
        assert len(sent) == CONCURRENCY and copies.pending == 8
        gate.set()
        await until(lambda: len(recorded) == 8, what="the pairs recorded")
        assert copies.pending == 0
        assert sorted(pair[4].status for pair in recorded) == [200] * 7 + [503]
        await copies.aclose()

    asyncio.run(scenario())
    assert recorder.summary("d")["dropped"] == 3  # two beyond the count, one beyond the bytes


def test_a_copy_larger_than_the_byte_bound_goes_when_alone_and_close_counts_the_queued(tmp_path: Path) -> None:
    recorder = ShadowRecorder(Database(tmp_path / "hub.db"))
    recorded: list[Pair] = []

    async def send(deployment: str, version: int, out: bytes) -> Reply:
        return Reply(200, out, "application/json", 0.001)

    async def scenario() -> None:
        copies: ShadowCopies[bytes] = ShadowCopies(send, recorded.extend, recorder, max_pending=4,
                                                   max_pending_bytes=10, max_cpu=None)
        copies.offer("d", 1, 2, b"{}", 50, LIVE)
        await until(lambda: len(recorded) == 1, what="the large copy recorded")
        for _ in range(LIVE_BUSY + 1):
            copies.live_started()
        copies.offer("d", 1, 2, b"{}", 1, LIVE)
        copies.offer("d", 1, 2, b"{}", 1, LIVE)
        await copies.aclose()  # the two queued are dropped, counted
        copies.offer("d", 1, 2, b"{}", 1, LIVE)  # after closing: dropped

    asyncio.run(scenario())
    assert len(recorded) == 1
    assert recorder.summary("d")["dropped"] == 3


def test_copies_wait_while_the_hub_is_busy_and_beyond_the_queue_are_dropped(tmp_path: Path) -> None:
    recorder = ShadowRecorder(Database(tmp_path / "hub.db"))
    recorded: list[Pair] = []
    clock = {"wall": 100.0, "cpu": 5.0}

    async def send(deployment: str, version: int, out: bytes) -> Reply:
        return Reply(200, out, "application/json", 0.001)

    def tick(wall: float, cpu: float) -> None:
        clock["wall"] += wall
        clock["cpu"] += cpu

    async def scenario() -> None:
        copies: ShadowCopies[bytes] = ShadowCopies(
            send, recorded.extend, recorder, max_pending=4, max_pending_bytes=1000, max_cpu=BUSY_CPU,
            cpu_clock=lambda: clock["cpu"], clock=lambda: clock["wall"])
        # (each sample a little over SAMPLE_S long: a sum of tenths is not exact in binary)
        tick(SAMPLE_S * 1.01, SAMPLE_S * BUSY_CPU * 0.8)  # under the bound: copies go out
        for _ in range(3):
            copies.offer("d", 1, 2, b"{}", 2, LIVE)
        assert not copies.busy()
        await until(lambda: len(recorded) == 3, what="3 copies recorded")
        tick(SAMPLE_S * 1.01, SAMPLE_S * BUSY_CPU * 1.2)  # the hub used more than its share: copies wait ...
        for _ in range(6):  # ... in the queue, the 2 beyond its 4 are dropped
            copies.offer("d", 1, 2, b"{}", 2, LIVE)
        assert copies.busy() and copies.pending == 4
        for _ in range(3):  # the workers look again while the hub stays busy: nothing goes out
            await asyncio.sleep(0)
        tick(SAMPLE_S / 2, 0.0)  # measured at most every SAMPLE_S: still busy
        assert copies.busy() and copies.pending == 4 and len(recorded) == 3
        tick(SAMPLE_S * 1.01, 0.0)  # a quiet sample: the copies held back go out
        await until(lambda: len(recorded) == 7, timeout=5, what="the copies held through the busy spell")
        assert copies.pending == 0
        await copies.aclose()

    asyncio.run(scenario())
    assert recorder.summary("d")["dropped"] == 2
