"""The job runner with real child processes: results, failures, cancel, limits and a restart."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlport.core.sqlitedb import Database
from mlport.deploy.jobs import Job, JobRunner, JobStore
from mlport.errors import Conflict, MlportError, ModelNotFound

PY = sys.executable


async def until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def runner(tmp_path: Path, **kw: Any) -> JobRunner:
    return JobRunner(JobStore(Database(tmp_path / "hub.db")), tmp_path / "jobs", interval_s=0.05, **kw)


def ended(r: JobRunner, job_id: str) -> Job | None:
    job = r.store.get(job_id)
    return job if job.state in ("succeeded", "failed", "cancelled") else None


def test_results_failures_and_finishers(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def finish(job: Job, result: dict[str, Any]) -> None:
        if result.get("bad"):
            raise MlportError("refused by the finisher")
        seen.append(result)

    async def main() -> None:
        r = runner(tmp_path, finishers={"echo": finish})
        await r.start()
        try:
            ok = r.submit("echo", {"n": 1}, [PY, "-c", "print('working'); print('{\"digest\": \"d\"}')"], by="ann")
            bad_exit = r.submit("echo", {}, [PY, "-c", "import sys; print('boom'); sys.exit(3)"], by="ann")
            not_json = r.submit("echo", {}, [PY, "-c", "print('no result')"], by="ann")
            refused = r.submit("echo", {}, [PY, "-c", "print('{\"bad\": true}')"], by="ann")
            done = {j.id: await until(lambda j=j: ended(r, j.id)) for j in (ok, bad_exit, not_json, refused)}
            ok, bad_exit, not_json, refused = ok.id, bad_exit.id, not_json.id, refused.id
            assert done[ok].state == "succeeded" and done[ok].result == {"digest": "d"}
            assert done[ok].created_by == "ann" and done[ok].spec == {"n": 1}
            assert seen == [{"digest": "d"}]
            assert done[bad_exit].state == "failed" and "exit 3" in done[bad_exit].message
            assert "boom" in done[bad_exit].message
            assert done[not_json].state == "failed" and "bad result" in done[not_json].message
            assert done[refused].state == "failed" and "refused by the finisher" in done[refused].message
            assert "working" in r.log_text(ok)
        finally:
            await r.stop()

    asyncio.run(main())


def test_cancel_limit_and_restart(tmp_path: Path) -> None:
    async def main() -> None:
        r = runner(tmp_path, max_running=1)
        await r.start()
        slow = [PY, "-c", "import time; time.sleep(60)"]
        first = r.submit("sleep", {}, slow, by="ann")
        second = r.submit("sleep", {}, slow, by="ann")
        await until(lambda: r.store.get(first.id).state == "running")
        await asyncio.sleep(0.3)
        assert r.store.get(second.id).state == "queued"  # the limit holds the second one back
        proc = r._procs[first.id]
        assert r.cancel(first.id).state == "cancelled"
        await until(lambda: proc.poll() is not None)
        with pytest.raises(Conflict):
            r.cancel(first.id)
        await until(lambda: r.store.get(second.id).state == "running")
        # the hub stops while the second job runs: it is stopped and marked failed, never left running
        await r.stop()
        job = r.store.get(second.id)
        assert job.state == "failed" and "hub stopped" in job.message
        with pytest.raises(ModelNotFound):
            r.store.get("nope")

    asyncio.run(main())


def test_a_job_left_running_by_a_killed_hub_is_failed_at_start(tmp_path: Path) -> None:
    store = JobStore(Database(tmp_path / "hub.db"))
    job = store.add("sleep", {}, [PY, "-c", "pass"], "ann")
    store.update(job.id, state="running", started_at=time.time())

    async def main() -> None:
        r = runner(tmp_path)
        await r.start()
        await r.stop()
        assert r.store.get(job.id).state == "failed"

    asyncio.run(main())
