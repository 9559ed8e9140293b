"""Batch jobs run by the hub: ``mlport score`` processes for a model version, an input and an output URI.

Jobs are stored in the hub's database and run as local processes (each in its own process group, its log in
``<data>/jobs/<id>/log``), at most ``limit`` at a time. Each job checkpoints into ``<data>/jobs/<id>/work``:
when the hub stops, running jobs are stopped and stay "running" in the store; the next hub start runs them
again with ``--resume``, so they continue where they were and are never left "running" forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlport.core.sqlitedb import Database
from mlport.errors import ErrorCode, InvalidInput, MlportError

__all__ = ["JobRunner", "JobStore", "job_options"]

log = logging.getLogger("mlport.jobs")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploy_jobs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    pid INTEGER,
    error TEXT,
    cancel INTEGER NOT NULL DEFAULT 0
);
"""

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
#: Most jobs listed; most log bytes returned.
MAX_JOBS_LISTED = 1000
MAX_LOG_BYTES = 1024 * 1024
_MAX_URI = 4096
_PROGRESS = re.compile(rb"scored (\d+)(?:/(\d+))? rows \((\d+) failed\)")
_SUMMARY = re.compile(rb"read (\d+) rows, scored (\d+), failed (\d+)")


def job_options(raw: Any) -> dict[str, Any]:
    """The scoring options a job may set, checked: batch_size, workers, keep, maps, fail_fast."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput("options must be an object")
    unknown = sorted(set(raw) - {"batch_size", "workers", "keep", "maps", "fail_fast"})
    if unknown:
        raise InvalidInput(f"unknown option {', '.join(unknown)}; a job takes batch_size, workers, keep, maps, "
                           "fail_fast")
    for key in ("batch_size", "workers"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1):
            raise InvalidInput(f"option {key} must be a positive integer")
    for key in ("keep", "maps"):
        value = raw.get(key, [])
        if not isinstance(value, list) or len(value) > 256 or not all(isinstance(v, str) and v for v in value):
            raise InvalidInput(f"option {key} must be a list of names (at most 256)")
    if not isinstance(raw.get("fail_fast", False), bool):
        raise InvalidInput("option fail_fast must be true or false")
    return dict(raw)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(_SCHEMA)

    def create(self, model: str, version: int, input_uri: str, output_uri: str, options: dict[str, Any],
               by: str) -> dict[str, Any]:
        for what, uri in (("input", input_uri), ("output", output_uri)):
            if not isinstance(uri, str) or not uri or len(uri) > _MAX_URI or "\0" in uri:
                raise InvalidInput(f"{what} must be a path or s3:// URI of at most {_MAX_URI} characters")
        job_id = uuid.uuid4().hex[:16]
        self.db.execute("INSERT INTO deploy_jobs (id, model, version, input, output, options, state, created_at, "
                        "created_by) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                        (job_id, model, version, input_uri, output_uri, json.dumps(options), time.time(), by))
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM deploy_jobs WHERE id = ?", (job_id,))
        if row is None:
            raise MlportError(f"job {job_id!r} not found", ErrorCode.NOT_FOUND)
        row["options"] = json.loads(row["options"])
        row["cancel"] = bool(row["cancel"])
        return row

    def all_jobs(self) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT id FROM deploy_jobs ORDER BY created_at DESC LIMIT ?", (MAX_JOBS_LISTED,))
        return [self.get(r["id"]) for r in rows]

    def in_state(self, state: str) -> list[dict[str, Any]]:
        return [self.get(r["id"]) for r in
                self.db.all("SELECT id FROM deploy_jobs WHERE state = ? ORDER BY created_at", (state,))]

    def update(self, job_id: str, **fields: Any) -> None:
        names = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE deploy_jobs SET {names} WHERE id = ?", (*fields.values(), job_id))


class JobRunner:
    """Starts queued jobs (at most ``limit`` at once), watches them, and records how they end."""

    def __init__(self, store: JobStore, fetch: Callable[[str, int], Path], folder: Path, *, limit: int = 2,
                 interval_s: float = 0.5) -> None:
        self.store = store
        self.fetch = fetch
        self.folder = folder
        self.limit = max(1, limit)
        self.interval_s = interval_s
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    def folder_of(self, job_id: str) -> Path:
        return self.folder / job_id

    # -- life ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        for job in self.store.in_state("running"):  # left running by a hub that stopped: resume it
            self._stop_group(job)
            self.store.update(job["id"], state="queued", pid=None)
            log.info("job %s was running when the hub stopped: it resumes from its checkpoint", job["id"])
        self._task = asyncio.create_task(self._loop(), name="mlport-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job_id, proc in list(self._procs.items()):  # stays "running": the next start resumes it
            self._kill(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                self._kill(proc, signal.SIGKILL)
            del self._procs[job_id]

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("the job runner failed a pass")
            await asyncio.sleep(self.interval_s)

    # -- one pass ------------------------------------------------------------------------------------
    def tick(self) -> None:
        for job_id, proc in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[job_id]
                self._finished(self.store.get(job_id), proc.returncode)
        for job in self.store.in_state("queued"):
            if len(self._procs) >= self.limit:
                break
            self._launch(job)

    def _launch(self, job: dict[str, Any]) -> None:
        folder = self.folder_of(job["id"])
        folder.mkdir(parents=True, exist_ok=True)
        try:
            model = self.fetch(job["model"], int(job["version"]))
        except MlportError as exc:
            self.store.update(job["id"], state="failed", error=f"cannot fetch the model: {exc}",
                              finished_at=time.time())
            return
        opts = job["options"]
        cmd = [sys.executable, "-m", "mlport.cli.main", "score", str(model), job["input"], "-o", job["output"],
               "--work-dir", str(folder / "work"), "--resume", "--progress", "lines", "--progress-interval", "1",
               "--workers", str(opts.get("workers", 1)), "--batch-size", str(opts.get("batch_size", 10_000))]
        cmd += [f"--map={m}" for m in opts.get("maps", [])]
        if opts.get("keep"):
            cmd += ["--keep", *opts["keep"]]
        if opts.get("fail_fast"):
            cmd.append("--fail-fast")
        with (folder / "log").open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self._procs[job["id"]] = proc
        self.store.update(job["id"], state="running", pid=proc.pid, started_at=job["started_at"] or time.time())
        log.info("job %s started (pid %d)", job["id"], proc.pid)

    def _finished(self, job: dict[str, Any], code: int) -> None:
        if job["cancel"]:
            state, error = "cancelled", None
        elif code == 0:
            state, error = "succeeded", None
        else:
            state, error = "failed", self._last_line(job["id"]) or f"exit code {code}"
        self.store.update(job["id"], state=state, error=error, pid=None, finished_at=time.time())
        log.info("job %s %s", job["id"], state)

    # -- requests ------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.store.get(job_id)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            raise MlportError(f"job {job_id} has ended ({job['state']})", ErrorCode.CONFLICT)
        if job["state"] == "queued":
            self.store.update(job_id, state="cancelled", cancel=1, finished_at=time.time())
        else:
            self.store.update(job_id, cancel=1)
            proc = self._procs.get(job_id)
            if proc is not None:
                self._kill(proc, signal.SIGTERM)
        return self.describe(job_id)

    def describe(self, job_id: str) -> dict[str, Any]:
        job = self.store.get(job_id)
        job.pop("pid", None)
        job["progress"] = self._progress(job_id)
        return job

    def logs(self, job_id: str) -> str:
        self.store.get(job_id)
        path = self.folder_of(job_id) / "log"
        if not path.is_file():
            return ""
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - MAX_LOG_BYTES))
            return f.read().decode(errors="replace")

    # -- helpers -------------------------------------------------------------------------------------
    def _progress(self, job_id: str) -> dict[str, Any]:
        text = self.logs(job_id).encode()
        done = _SUMMARY.findall(text)
        if done:
            read, scored, failed = (int(v) for v in done[-1])
            return {"rows_scored": scored, "rows_failed": failed, "rows_total": read}
        seen = _PROGRESS.findall(text)
        if not seen:
            return {"rows_scored": 0, "rows_failed": 0, "rows_total": None}
        scored, total, failed = seen[-1]
        return {"rows_scored": int(scored), "rows_failed": int(failed), "rows_total": int(total) if total else None}

    def _last_line(self, job_id: str) -> str:
        lines = [ln for ln in self.logs(job_id).splitlines() if ln.strip()]
        return lines[-1][:1000] if lines else ""

    def _stop_group(self, job: dict[str, Any]) -> None:
        """Stop a job's process group left by an earlier hub, if that process is still this job's."""
        pid = job.get("pid")
        if not pid:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if str(self.folder_of(job["id"])).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
