"""Jobs: long work the hub runs as local processes (image builds; batch scoring), one runner for all kinds.

A job is a row in SQLite (its kind, its argv, who asked, its state) and a log file.  The runner starts queued jobs
up to a concurrency limit, records each one's state, the last line of its log as progress, and on success the
last line of its standard output parsed as JSON (its result), which a per-kind finisher may act on (e.g. record
the pushed image on the model version; register a built preset).  A finisher runs in a worker thread, so slow
work there (storing an artifact) never holds up the event loop.  Jobs survive a hub restart: a queued job starts
when the hub is back; a job that was running when the hub stopped is marked failed, never left "running".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlport.core.sqlitedb import Database
from mlport.deploy.procs import log_tail, spawn, terminate
from mlport.errors import Conflict, InvalidInput, MlportError, ModelNotFound

__all__ = ["JOB_STATES", "Job", "JobRunner", "JobStore"]

log = logging.getLogger("mlport.jobs")

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
_DONE = frozenset({"succeeded", "failed", "cancelled"})
#: Most jobs listed at once, and the longest a job may run.
MAX_LISTED = 500
MAX_JOB_S = 6 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploy_jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    argv TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    message TEXT NOT NULL DEFAULT '',
    result TEXT
);
CREATE INDEX IF NOT EXISTS deploy_jobs_created ON deploy_jobs (created_at);
"""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    state: str
    spec: dict[str, Any]
    argv: list[str]
    created_at: float
    created_by: str
    started_at: float | None
    finished_at: float | None
    message: str
    result: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "spec": self.spec,
                "created_at": self.created_at, "created_by": self.created_by, "started_at": self.started_at,
                "finished_at": self.finished_at, "message": self.message, "result": self.result}


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(_SCHEMA)

    def add(self, kind: str, spec: dict[str, Any], argv: Sequence[str], by: str) -> Job:
        job_id = uuid.uuid4().hex[:16]
        self.db.execute("INSERT INTO deploy_jobs (id, kind, state, spec, argv, created_at, created_by) "
                        "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                        (job_id, kind, json.dumps(spec), json.dumps(list(argv)), time.time(), by))
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        row = self.db.one("SELECT * FROM deploy_jobs WHERE id = ?", (job_id,))
        if row is None:
            raise ModelNotFound(f"job {job_id!r} not found")
        return _job(row)

    def list(self, state: str | None = None) -> list[Job]:
        if state is not None and state not in JOB_STATES:
            raise InvalidInput(f"unknown job state {state!r}: use one of {', '.join(JOB_STATES)}")
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self.db.all(f"SELECT * FROM deploy_jobs {where} ORDER BY created_at DESC LIMIT {MAX_LISTED}", params)
        return [_job(r) for r in rows]

    def update(self, job_id: str, **fields: Any) -> None:
        if "result" in fields and fields["result"] is not None:
            fields["result"] = json.dumps(fields["result"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE deploy_jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))


def _job(row: dict[str, Any]) -> Job:
    return Job(row["id"], row["kind"], row["state"], json.loads(row["spec"]), json.loads(row["argv"]),
               row["created_at"], row["created_by"], row["started_at"], row["finished_at"], row["message"],
               json.loads(row["result"]) if row["result"] else None)


#: What to do with a job's result when it succeeded (per kind), e.g. record a pushed image.
Finisher = Callable[[Job, dict[str, Any]], None]


class JobRunner:
    """Runs queued jobs as child processes, at most ``max_running`` at once."""

    def __init__(self, store: JobStore, log_dir: Path, *, max_running: int = 2, interval_s: float = 0.5,
                 finishers: dict[str, Finisher] | None = None) -> None:
        self.store = store
        self.log_dir = log_dir
        self.max_running = max_running
        self.interval_s = interval_s
        self.finishers = dict(finishers or {})
        self._procs: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    def log_path(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.log"

    def submit(self, kind: str, spec: dict[str, Any], argv: Sequence[str], *, by: str) -> Job:
        return self.store.add(kind, spec, argv, by)

    def cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job.state in _DONE:
            raise Conflict(f"job {job_id} has already ended ({job.state})")
        proc = self._procs.get(job_id)
        if proc is not None and proc.poll() is None:
            # the job's own process group (set at spawn): its children (a builder, workers) stop with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        self.store.update(job_id, state="cancelled", finished_at=time.time(), message="cancelled")
        return self.store.get(job_id)

    def log_text(self, job_id: str, max_bytes: int = 1024 * 1024) -> str:
        self.store.get(job_id)
        path = self.log_path(job_id)
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - max_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def start(self) -> None:
        for job in self.store.list("running"):
            self.store.update(job.id, state="failed", finished_at=time.time(),
                              message="the hub stopped while this job ran: submit it again")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job_id, proc in list(self._procs.items()):
            await terminate(proc, grace_s=5)
            self.store.update(job_id, state="failed", finished_at=time.time(),
                              message="the hub stopped while this job ran: submit it again")
        self._procs.clear()

    async def _loop(self) -> None:
        while True:
            try:
                for job, code in self._reap():
                    await asyncio.to_thread(self._finish, job, code)
                self._launch()
            except Exception:  # one bad pass must not end the runner
                log.exception("job runner pass failed")
            await asyncio.sleep(self.interval_s)

    def _launch(self) -> None:
        free = self.max_running - len(self._procs)
        for job in reversed(self.store.list("queued")):
            if free <= 0:
                return
            self.log_dir.mkdir(parents=True, exist_ok=True)
            try:
                proc = spawn(job.argv, self.log_path(job.id))
            except OSError as exc:
                self.store.update(job.id, state="failed", finished_at=time.time(), message=f"cannot start: {exc}")
                continue
            self._procs[job.id] = proc
            self.store.update(job.id, state="running", started_at=time.time(), message="started")
            free -= 1

    def _reap(self) -> list[tuple[Job, int]]:
        """Record the progress of running jobs; the jobs that ended, with their exit codes, to finish."""
        ended = []
        for job_id, proc in list(self._procs.items()):
            job = self.store.get(job_id)
            code = proc.poll()
            if code is None:
                if job.started_at is not None and time.time() - job.started_at > MAX_JOB_S:
                    proc.kill()
                    self.store.update(job_id, state="failed", finished_at=time.time(),
                                      message=f"ran longer than {MAX_JOB_S:.0f} s")
                elif job.state == "running":
                    self.store.update(job_id, message=log_tail(self.log_path(job_id), lines=1, max_chars=500))
                continue
            del self._procs[job_id]
            if job.state != "running":
                continue  # cancelled meanwhile
            ended.append((job, code))
        return ended

    def _finish(self, job: Job, code: int) -> None:
        tail = log_tail(self.log_path(job.id), lines=1, max_chars=64 * 1024)
        if code != 0:
            self.store.update(job.id, state="failed", finished_at=time.time(),
                              message=f"exit {code}: {log_tail(self.log_path(job.id), lines=4)}")
            return
        try:
            result = json.loads(tail)
            if not isinstance(result, dict):
                raise ValueError("not an object")
            finisher = self.finishers.get(job.kind)
            if finisher is not None:
                finisher(job, result)
        except (ValueError, MlportError) as exc:
            self.store.update(job.id, state="failed", finished_at=time.time(), message=f"bad result: {exc}")
            return
        self.store.update(job.id, state="succeeded", finished_at=time.time(), message="done", result=result)
